//! Acting on findings through the real binary: remediations applied in azure-sim and verified,
//! `alert` mode making no write, the loop guard, and two instances sharing Blob state (a real
//! Azurite) sending exactly one Teams card for an event delivered 20 times.

use azure_sim::{Grant, KeySpec, KeyVersionSpec, Tenant, VaultSpec, VersionPin, WorkspaceSpec};
use cmk_guard_blackbox::azurite::Azurite;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::smtp::{self, Smtp};
use cmk_guard_blackbox::story;
use cmk_guard_blackbox::{Handler, Reply};
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const PROVIDERS_SUB: &str = "9d2c7b1e-4a6f-4c3d-8e5b-1f0a2b3c4d5e";
const RG: &str = "rg-actions";

const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[remediation."workspace.key-access"]
enabled = true
[remediation."key.rotation-policy"]
enabled = true
[remediation."key.expiry"]
enabled = true
[remediation."subscription.providers"]
enabled = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// Writes the remediation policy into `scratch` and returns its path.
fn policy_file(scratch: &Scratch) -> String {
    scratch.write("policy.toml", POLICY).display().to_string()
}

fn tenant() -> Tenant {
    let chain = |name: &str, vault: VaultSpec, key: KeySpec, ws: WorkspaceSpec| {
        let vault = VaultSpec {
            subscription: ws.subscription.clone(),
            resource_group: RG.into(),
            name: format!("kv-{name}"),
            ..vault
        };
        (vault.key(key), ws.cmk(&format!("kv-{name}"), "key"))
    };
    let ws = |name: &str| WorkspaceSpec::new(SUB, RG, &format!("ws-{name}"));
    let rsa = || KeySpec::rsa("key", 3072);
    let parts = [
        chain(
            "purge",
            VaultSpec::default().purge_protection(None),
            rsa(),
            ws("purge"),
        ),
        chain(
            "apaccess",
            VaultSpec::default().access_policy_model(),
            rsa(),
            ws("apaccess"),
        ),
        chain("rbac", VaultSpec::default(), rsa(), ws("rbac")),
        chain(
            "norotation",
            VaultSpec::default(),
            rsa().no_rotation_policy(),
            ws("norotation"),
        ),
        chain(
            "pinned",
            VaultSpec::default(),
            rsa().older_version(KeyVersionSpec::expiring_in_days(3)),
            ws("pinned"),
        ),
        chain(
            "providers",
            VaultSpec::default(),
            rsa(),
            WorkspaceSpec::new(PROVIDERS_SUB, RG, "ws-providers"),
        ),
    ];
    let mut builder = Tenant::builder()
        .subscription(SUB)
        .unregistered_provider(PROVIDERS_SUB, "Microsoft.Search");
    for (vault, workspace) in parts {
        let workspace = match workspace.name.as_str() {
            "ws-apaccess" => workspace
                .with_cmk(|c| c.grant_key_permissions = Some(vec!["get".into(), "wrapKey".into()])),
            "ws-rbac" => workspace.with_cmk(|c| c.grant = Grant::None),
            "ws-pinned" => workspace.with_cmk(|c| c.version = VersionPin::Named("oldest".into())),
            _ => workspace,
        };
        builder = builder.vault(vault).workspace(workspace);
    }
    builder.build().expect("tenant")
}

fn workspace_id(subscription: &str, name: &str) -> String {
    story::workspace_id_of(subscription, RG, name)
}

/// The event Azure emits when a user writes the workspace.
fn workspace_write(subscription: &str, name: &str) -> Value {
    story::workspace_write_of(subscription, RG, name)
}

/// The handler in `mode` with the remediation policy and a Teams sink.
async fn start_acting(mode: &str) -> (Handler, Sink) {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    // The handler reads its policy at start; the file goes when this returns.
    let scratch = Scratch::new("actions");
    let policy = policy_file(&scratch);
    let env = [
        ("CMKGUARD_MODE", mode),
        ("CMKGUARD_POLICY_FILE", &policy),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
    ];
    (Handler::start_with(tenant(), &env).await, sink)
}

fn actions<'a>(reply: &'a Reply, kind: &str) -> Vec<&'a Value> {
    reply.outcome()["actions"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["kind"] == kind).collect())
        .unwrap_or_default()
}

/// Writes (anything but reads and Resource Graph queries) the handler sent to Azure.
fn writes(handler: &Handler) -> Vec<String> {
    story::writes(&handler.sim)
}

async fn read_only_findings(handler: &Handler, subscription: &str, name: &str) -> Vec<String> {
    let body = json!({"resource": workspace_id(subscription, name)})
        .to_string()
        .into_bytes();
    let reply = handler.post_chunked("/api/evaluate", body).await;
    reply.body["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn remediate_mode_applies_and_verifies_each_remediation() {
    let (handler, sink) = start_acting("remediate").await;
    for (subscription, name, rule) in [
        (SUB, "ws-purge", "vault.purge-protection"),
        (SUB, "ws-apaccess", "workspace.key-access"),
        (SUB, "ws-rbac", "workspace.key-access"),
        (SUB, "ws-norotation", "key.rotation-policy"),
        (SUB, "ws-pinned", "key.expiry"),
        (PROVIDERS_SUB, "ws-providers", "subscription.providers"),
    ] {
        let reply = handler
            .deliver(
                "OnSubscriptionEvent",
                "event",
                &[workspace_write(subscription, name)],
            )
            .await
            .remove(0);
        assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
        let remediations = actions(&reply, "remediate");
        assert!(
            remediations
                .iter()
                .any(|a| a["rule"] == rule && a["result"] == "applied"),
            "{name}: {remediations:?}"
        );
        let finding = reply.outcome()["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["rule"] == rule))
            .cloned();
        assert_eq!(
            finding.map(|f| f["state"].clone()),
            Some(json!("resolved")),
            "{name}"
        );
        assert!(
            !read_only_findings(&handler, subscription, name)
                .await
                .contains(&rule.to_owned()),
            "{name}: {rule} is still open after remediation"
        );
        assert!(
            actions(&reply, "notify")
                .iter()
                .any(|a| a["target"] == "teams" && a["result"] == "sent"),
            "{name}"
        );
    }
    let cards = sink.received("teams");
    assert_eq!(cards.len(), 6, "one card per workspace");
    let text = cards[0].body.to_string();
    assert!(
        text.contains("AdaptiveCard") && text.contains("vault.purge-protection"),
        "{text}"
    );
}

#[tokio::test]
async fn alert_mode_alerts_and_plans_but_writes_nothing() {
    let (handler, sink) = start_acting("alert").await;
    let reply = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(SUB, "ws-purge")],
        )
        .await
        .remove(0);
    let planned = actions(&reply, "remediate");
    assert!(
        planned.iter().any(|a| a["result"] == "planned"
            && a["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("enablePurgeProtection")),
        "{planned:?}"
    );
    assert_eq!(sink.received("teams").len(), 1);
    let card = sink.received("teams")[0].body.to_string();
    assert!(
        card.contains("would"),
        "the alert says what remediation would do: {card}"
    );
    // A second delivery of another event about the same state: no change, no alert.
    let again = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(SUB, "ws-purge")],
        )
        .await
        .remove(0);
    assert!(actions(&again, "notify").is_empty(), "{:?}", again.body);
    assert_eq!(
        sink.received("teams").len(),
        1,
        "alerts are sent once, on a change of state"
    );
    assert_eq!(
        writes(&handler),
        Vec::<String>::new(),
        "alert mode changes nothing in Azure"
    );
}

#[tokio::test]
async fn the_write_event_of_our_own_remediation_causes_nothing() {
    let (handler, sink) = start_acting("remediate").await;
    handler.sim.clear_events();
    let first = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(SUB, "ws-purge")],
        )
        .await
        .remove(0);
    assert!(
        actions(&first, "remediate")
            .iter()
            .any(|a| a["result"] == "applied")
    );
    let own_events = handler.sim.events();
    assert!(
        !own_events.is_empty(),
        "the vault PATCH emits ResourceWriteSuccess"
    );
    let writes_before = writes(&handler).len();
    let cards_before = sink.received("teams").len();
    for reply in handler
        .deliver("OnSubscriptionEvent", "event", &own_events)
        .await
    {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            reply.outcome()["actions"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{:?}",
            reply.outcome()
        );
    }
    assert_eq!(
        writes(&handler).len(),
        writes_before,
        "no second remediation"
    );
    assert_eq!(
        sink.received("teams").len(),
        cards_before,
        "no second alert"
    );
}

#[tokio::test]
async fn two_instances_sharing_blob_state_send_one_card_for_twenty_deliveries() {
    let azurite = Azurite::start().await;
    let container = format!("state-{}", uuid::Uuid::new_v4().simple());
    azurite.create_container(&container).await;
    let state = azurite.container_sas_url(&container);
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let env = [
        ("CMKGUARD_MODE", "alert"),
        ("CMKGUARD_STATE", state.as_str()),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    let a = Handler::start_with(tenant(), &env).await;
    let b = Handler::start_with(tenant(), &env).await;
    let event = workspace_write(SUB, "ws-purge");
    let mut pending: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
    // Like Event Grid: deliveries that failed (503) are delivered again until all succeed.
    for _round in 0..20 {
        if pending.is_empty() {
            break;
        }
        let deliveries = pending.iter().map(|to_a| {
            let handler = if *to_a { &a } else { &b };
            let event = event.clone();
            async move {
                (
                    *to_a,
                    handler
                        .deliver("OnSubscriptionEvent", "event", &[event])
                        .await
                        .remove(0),
                )
            }
        });
        let replies = futures_util::future::join_all(deliveries).await;
        pending = replies
            .iter()
            .filter(|(_, r)| r.status != 200)
            .map(|(to_a, _)| *to_a)
            .collect();
        for (_, reply) in replies.iter().filter(|(_, r)| r.status == 200) {
            let disposition = reply.outcome()["disposition"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                disposition == "evaluated" || disposition == "duplicate",
                "{:?}",
                reply.body
            );
        }
    }
    assert!(pending.is_empty(), "every delivery eventually succeeded");
    assert_eq!(sink.received("teams").len(), 1, "exactly one Teams card");
}

#[tokio::test]
async fn alerts_reach_email_over_starttls_through_the_binary() {
    let scratch = Scratch::new("email");
    let tls_dir = scratch.join("tls");
    let options = azure_sim::SimOptions {
        tls_out: Some(tls_dir.clone()),
        ..azure_sim::SimOptions::default()
    };
    let sim = azure_sim::Sim::start(tenant(), options).await.expect("sim");
    let smtp = Smtp::start(&tls_dir).await;
    let smtp_url = smtp.url();
    let policy = scratch
        .write(
            "policy.toml",
            "[notify]\nemail = [\"critical\", \"high\"]\n",
        )
        .display()
        .to_string();
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_SMTP_URL", &smtp_url),
            ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.example"),
            ("CMKGUARD_EMAIL_TO", "ml-platform@contoso.example"),
        ],
    )
    .await;
    let reply = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(SUB, "ws-purge")],
        )
        .await
        .remove(0);
    assert!(
        actions(&reply, "notify")
            .iter()
            .any(|a| a["target"] == "email" && a["result"] == "sent"),
        "{:?}",
        reply.body
    );
    let mail = smtp.received();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["tls"], true, "sent after STARTTLS");
    assert_eq!(mail[0]["authenticated"], true);
    assert_eq!(mail[0]["rcpt_tos"], json!(["ml-platform@contoso.example"]));
    let parts: Vec<&str> = mail[0]["parts"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["content_type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(parts, ["text/plain", "text/html"]);
    assert!(mail[0].to_string().contains("vault.purge-protection"));
    assert!(
        !handler
            .stdout
            .snapshot()
            .join("\n")
            .contains(smtp::PASSWORD),
        "the SMTP password is never logged"
    );
    drop(smtp);
}

#[tokio::test]
async fn evaluate_applies_only_when_asked_and_only_in_remediate_mode() {
    let scratch = Scratch::new("actions");
    let policy = policy_file(&scratch);
    let body = |apply: bool| {
        json!({"resource": workspace_id(SUB, "ws-purge"), "apply": apply})
            .to_string()
            .into_bytes()
    };
    let alerting = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
        ],
    )
    .await;
    let refused = alerting.post_chunked("/api/evaluate", body(true)).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CMKGUARD_MODE=remediate")
    );

    let remediating = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_POLICY_FILE", &policy),
        ],
    )
    .await;
    let read_only = remediating.post_chunked("/api/evaluate", body(false)).await;
    assert_eq!(read_only.status, 200);
    assert_eq!(
        read_only.body["actions"],
        json!([]),
        "without apply nothing is done"
    );
    assert!(writes(&remediating).is_empty());
    let applied = remediating.post_chunked("/api/evaluate", body(true)).await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    let remediations: Vec<&Value> = applied.body["actions"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["kind"] == "remediate").collect())
        .unwrap_or_default();
    assert!(
        remediations
            .iter()
            .any(|a| a["rule"] == "vault.purge-protection" && a["result"] == "applied"),
        "{remediations:?}"
    );
    assert_eq!(writes(&remediating).len(), 1, "{:?}", writes(&remediating));
}
