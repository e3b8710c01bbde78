//! The subscription allowlist as an attacker tries it, through the real binary: ids that a URL
//! parser would resolve into another subscription, at every entry point (`POST /api/evaluate`
//! with `apply`, an Event Grid event's `subject` and `resourceUri`, a workspace's
//! `keyVaultArmId`); a workspace whose vault lives outside the allowlist; and a `Retry-After` no
//! one should honour. After each, the simulator's request log must hold nothing addressed to the
//! subscription outside the allowlist.

use azure_sim::scenario::{DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, OTHER_SUBSCRIPTION};
use azure_sim::{Fault, RecordFilter, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{Handler, Reply};
use serde_json::{Value, json};

/// In the allowlist.
const A: &str = DEFAULT_SUBSCRIPTION;
/// Outside it: holds a vault with purge protection off, the prize of a bypass.
const B: &str = OTHER_SUBSCRIPTION;
const RG_B: &str = "rg-outside";

const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[remediation."workspace.key-access"]
enabled = true
[remediation."key.rotation-policy"]
enabled = true
"#;

/// A scratch directory holding `policy.toml`, removed when the test ends, however it ends.
fn policy_file() -> Scratch {
    let scratch = Scratch::new("security-scope");
    scratch.write("policy.toml", POLICY);
    scratch
}

fn vault_b_id() -> String {
    format!("/subscriptions/{B}/resourceGroups/{RG_B}/providers/Microsoft.KeyVault/vaults/kv-b")
}

fn workspace_id(name: &str) -> String {
    format!(
        "/subscriptions/{A}/resourceGroups/{DEFAULT_RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    )
}

/// The compliant tenant in A, plus subscription B with a vault whose purge protection is off,
/// a workspace in A using that vault, and a workspace in A whose `keyVaultArmId` is `evil_vault`.
fn tenant(evil_vault: &str) -> Tenant {
    Tenant::compliant_builder()
        .subscription(B)
        .vault(VaultSpec::new(B, RG_B, "kv-b").purge_protection(None))
        .workspace(
            WorkspaceSpec::new(A, DEFAULT_RESOURCE_GROUP, "ws-cross").cmk(&vault_b_id(), "cmk"),
        )
        .workspace(WorkspaceSpec::new(A, DEFAULT_RESOURCE_GROUP, "ws-evil").cmk(evil_vault, "cmk"))
        .build()
        .expect("tenant")
}

async fn start(tenant: Tenant, policy: &Scratch) -> Handler {
    let policy = policy.join("policy.toml").display().to_string();
    Handler::start_with(
        tenant,
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_SUBSCRIPTIONS", A),
            ("CMKGUARD_POLICY_FILE", &policy),
        ],
    )
    .await
}

/// Requests the simulator saw that address subscription B in any spelling, and every write.
fn outside_or_written(handler: &Handler) -> Vec<String> {
    let b = B.to_ascii_lowercase();
    handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| {
            let addresses_b = r.path.to_ascii_lowercase().contains(&b)
                || r.resource
                    .as_deref()
                    .is_some_and(|res| res.to_ascii_lowercase().contains(&b));
            let write = r.method != "GET"
                && r.operation != "ResourceGraph_Resources"
                && r.operation != "Identity_GetToken";
            addresses_b || write
        })
        .map(|r| format!("{} {} {} -> {}", r.operation, r.method, r.path, r.status))
        .collect()
}

/// Ids that name subscription A when read as text but subscription B (the vault kv-b) once a
/// URL parser or a server resolves them: dot segments, their encodings, backslashes, and mixes.
fn bypasses() -> Vec<String> {
    let tail = format!("resourceGroups/{RG_B}/providers/Microsoft.KeyVault/vaults/kv-b");
    let upper_a = A.to_uppercase();
    vec![
        format!("/subscriptions/{A}/../{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/../../{B}/{tail}"),
        format!("/subscriptions/{A}/./../{B}/{tail}"),
        format!("/subscriptions/{A}/%2e%2e/{B}/{tail}"),
        format!("/subscriptions/{A}/%2E%2E/{B}/{tail}"),
        format!("/subscriptions/{A}/.%2e/{B}/{tail}"),
        format!("/subscriptions/{A}/%2e./{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/rg/..%2F..%2F{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/rg%2F..%2F..%2F{B}/{tail}"),
        format!("/subscriptions/{A}\\..\\{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/rg\\..\\..\\..\\{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/rg%5C..%5C..%5C{B}/{tail}"),
        format!("/SUBSCRIPTIONS/{upper_a}/..\\{B}/{tail}"),
        format!("/subscriptions/{A}/%2e%2e\\{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/\u{ff0e}\u{ff0e}/\u{ff0e}\u{ff0e}/{B}/{tail}"),
        format!("/subscriptions/{A}/resourceGroups/%252e%252e/%252e%252e/{B}/{tail}"),
        format!(
            "/subscriptions/{A}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/x/..%00/../../../../{B}/{tail}"
        ),
    ]
}

fn resource_write(resource: &str, operation: &str) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "topic": format!("/subscriptions/{A}"),
        "subject": resource, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-12-03T10:00:00Z", "dataVersion": "2", "metadataVersion": "1",
        "data": {"operationName": operation, "resourceUri": resource, "subscriptionId": A,
                 "status": "Succeeded"}
    })
}

/// The Outcome: `ReturnValue` of an invocation, the body itself of forwarded HTTP.
fn outcome(reply: &Reply) -> &Value {
    if reply.body.get("ReturnValue").is_some() {
        reply.outcome()
    } else {
        &reply.body
    }
}

fn findings(reply: &Reply) -> Vec<Value> {
    outcome(reply)["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn ids_that_resolve_into_another_subscription_are_refused_at_every_entry_point() {
    let policy = policy_file();
    let handler = start(tenant(&vault_b_id()), &policy).await;
    for id in bypasses() {
        let body = json!({"resource": id, "apply": true}).to_string();
        let reply = handler
            .post_chunked("/api/evaluate", body.into_bytes())
            .await;
        assert_eq!(reply.status, 400, "evaluate {id}: {:?}", reply.body);
        for operation in [
            "Microsoft.KeyVault/vaults/write",
            "Microsoft.KeyVault/vaults/accessPolicies/write",
        ] {
            let reply = handler
                .deliver(
                    "OnSubscriptionEvent",
                    "event",
                    &[resource_write(&id, operation)],
                )
                .await
                .remove(0);
            assert_eq!(reply.status, 200, "event {id}: {:?}", reply.body);
            assert_ne!(
                reply.outcome()["disposition"],
                "evaluated",
                "event {id}: {:?}",
                reply.body
            );
        }
    }
    let reached = outside_or_written(&handler);
    assert!(
        reached.is_empty(),
        "requests outside the allowlist: {reached:#?}"
    );
}

#[tokio::test]
async fn a_key_vault_arm_id_that_resolves_elsewhere_is_reported_and_never_followed() {
    let policy = policy_file();
    for evil in bypasses() {
        let handler = start(tenant(&evil), &policy).await;
        let reply = handler
            .deliver(
                "OnSubscriptionEvent",
                "event",
                &[resource_write(
                    &workspace_id("ws-evil"),
                    "Microsoft.MachineLearningServices/workspaces/write",
                )],
            )
            .await
            .remove(0);
        assert_eq!(reply.status, 200, "{evil}: {:?}", reply.body);
        let found = findings(&reply);
        assert!(
            found.iter().any(|f| f["rule"] == "guard.visibility"
                && f["workspace"]
                    .as_str()
                    .is_some_and(|w| w.ends_with("/ws-evil"))
                && f["observed"]
                    .as_str()
                    .is_some_and(|o| o.contains("is not an ARM resource id"))),
            "{evil}: {found:#?}"
        );
        let reached = outside_or_written(&handler);
        assert!(reached.is_empty(), "{evil}: {reached:#?}");
    }
}

#[tokio::test]
async fn a_vault_outside_the_allowlist_is_reported_but_never_read_or_written() {
    let policy = policy_file();
    let handler = start(tenant(&vault_b_id()), &policy).await;
    let event = resource_write(
        &workspace_id("ws-cross"),
        "Microsoft.MachineLearningServices/workspaces/write",
    );
    let via_event = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await
        .remove(0);
    let body = json!({"resource": workspace_id("ws-cross"), "apply": true}).to_string();
    let via_evaluate = handler
        .post_chunked("/api/evaluate", body.into_bytes())
        .await;
    for (entry, reply) in [("event", via_event), ("evaluate", via_evaluate)] {
        assert_eq!(reply.status, 200, "{entry}: {:?}", reply.body);
        let found = findings(&reply);
        let open = |rule: &str| {
            found
                .iter()
                .find(|f| f["rule"] == rule && f["state"] == "open")
                .cloned()
        };
        assert!(
            open("workspace.vault-same-subscription").is_some(),
            "{entry}: {:#?}",
            reply.body
        );
        let visibility = open("guard.visibility").unwrap_or_else(|| panic!("{entry}: {found:#?}"));
        assert!(
            visibility["observed"]
                .as_str()
                .is_some_and(|o| o.contains("outside CMKGUARD_SUBSCRIPTIONS") && o.contains(B)),
            "{entry}: {visibility}"
        );
        let applied: Vec<&Value> = outcome(&reply)["actions"]
            .as_array()
            .map(|a| a.iter().filter(|a| a["result"] == "applied").collect())
            .unwrap_or_default();
        assert!(applied.is_empty(), "{entry}: {applied:?}");
    }
    let reached = outside_or_written(&handler);
    assert!(
        reached.is_empty(),
        "requests outside the allowlist: {reached:#?}"
    );
}

#[tokio::test]
async fn an_absurd_retry_after_neither_panics_nor_stalls_the_instance() {
    let handler = Handler::start(&[]).await;
    handler.sim.add_fault(
        Fault::on_operation("Workspaces_Get")
            .throttle(u64::MAX)
            .times(1),
    );
    let event = |n: usize| {
        resource_write(
            &workspace_id("mlw-prod"),
            "Microsoft.MachineLearningServices/workspaces/write",
        )
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            o.insert("id".into(), json!(format!("retry-after-{n}")));
            Value::Object(o)
        })
        .expect("object")
    };
    let first = handler
        .deliver("OnSubscriptionEvent", "event", &[event(0)])
        .await
        .remove(0);
    // Answered (a transient failure, so that Event Grid delivers it again), not dropped.
    assert_eq!(first.status, 503, "{:?}", first.body);
    assert_eq!(handler.get("/").await.status, 200, "the process is alive");
    // While the shared pause lasts, invocations are answered at once without a request to
    // Azure; it ends within a minute, and then the same event is evaluated.
    let mut n = 1;
    let evaluated = loop {
        let before = handler.sim.requests(&RecordFilter::default()).len();
        let reply = handler
            .deliver("OnSubscriptionEvent", "event", &[event(n)])
            .await
            .remove(0);
        if reply.status == 200 {
            break reply;
        }
        assert_eq!(reply.status, 503, "{:?}", reply.body);
        assert_eq!(
            handler.sim.requests(&RecordFilter::default()).len(),
            before,
            "a paused instance sends nothing"
        );
        n += 1;
        assert!(n < 180, "the shared pause never ended");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!(evaluated.outcome()["disposition"], "evaluated");
}

#[tokio::test]
async fn a_next_link_that_leads_back_to_its_own_page_is_read_once() {
    let handler = Handler::start(&[]).await;
    let endpoints = format!("{}/onlineEndpoints", workspace_id("mlw-prod"));
    let version = "2026-09-01";
    let mut looping = Fault::on_operation("OnlineEndpoints_List").status(200);
    looping.body = Some(json!({
        "value": [],
        "nextLink": format!("https://management.azure.com{endpoints}?api-version={version}")
    }));
    handler.sim.add_fault(looping);
    let reply = evaluate(&handler, "mlw-prod").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_visibility_says(&reply, "nextLink leads back");
    let pages = handler.sim.requests(&RecordFilter {
        operation: Some("OnlineEndpoints_List".into()),
        ..RecordFilter::default()
    });
    assert_eq!(pages.len(), 1, "the page is read once");
}

#[tokio::test]
async fn a_principal_id_that_is_not_a_guid_never_reaches_the_role_assignment_filter() {
    let hostile = format!("x') or true or ('{}", "p".repeat(70_000));
    let tenant = Tenant::compliant_builder()
        .with_workspace("mlw-prod", |ws| ws.principal_id = Some(hostile.clone()))
        .build()
        .expect("tenant");
    let handler = Handler::start_with(tenant, &[]).await;
    let reply = evaluate(&handler, "mlw-prod").await;
    // Answered (not a transient failure redelivered forever), with the reason.
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_visibility_says(&reply, "is not a GUID");
    let filtered: Vec<String> = handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| r.path.to_ascii_lowercase().contains("roleassignments"))
        .map(|r| r.path)
        .collect();
    assert!(filtered.is_empty(), "{filtered:?}");
}

/// A read-only `POST /api/evaluate` of one workspace of the compliant tenant's resource group.
async fn evaluate(handler: &Handler, workspace: &str) -> Reply {
    let body = json!({"resource": workspace_id(workspace)}).to_string();
    handler
        .post_chunked("/api/evaluate", body.into_bytes())
        .await
}

/// The reply holds a `guard.visibility` finding whose observation says `text`.
fn assert_visibility_says(reply: &Reply, text: &str) {
    let found = findings(reply);
    assert!(
        found.iter().any(|f| f["rule"] == "guard.visibility"
            && f["observed"].as_str().is_some_and(|o| o.contains(text))),
        "{found:#?}"
    );
}
