//! The loop guard through the real binary: the write event of cmk-guard's own remediation
//! leaves alone only the (resource, rule) it remediated, and everything else it sees is
//! handled as on any event — even when that event is delivered before a person's.

use azure_sim::{KeySpec, RecordFilter, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::Handler;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const RG: &str = "rg-loop";
const VAULT: &str = "kv-loop";
const KEY: &str = "cmk";
const WORKSPACE: &str = "ws-loop";
const USER: &str = "5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a10";
const PURGE: &str = "vault.purge-protection";
const ENDPOINTS: &str = "workspace.unsupported-endpoints";

const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// One CMK workspace whose vault lacks purge protection; everything else complies.
fn tenant() -> Tenant {
    Tenant::builder()
        .subscription(SUB)
        .vault(
            VaultSpec::new(SUB, RG, VAULT)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 3072)),
        )
        .workspace(WorkspaceSpec::new(SUB, RG, WORKSPACE).cmk(VAULT, KEY))
        .build()
        .expect("tenant")
}

/// What Azure emits when a person writes the workspace.
fn workspace_write() -> Value {
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
    );
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "topic": format!("/subscriptions/{SUB}"), "subject": ws,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write", "resourceUri": ws,
                 "subscriptionId": SUB,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

async fn start() -> (Handler, Sink) {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    // The handler reads its policy at start; the file goes when this returns.
    let scratch = Scratch::new("loop-guard");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let env = [
        ("CMKGUARD_MODE", "remediate"),
        ("CMKGUARD_POLICY_FILE", policy.as_str()),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    (Handler::start_with(tenant(), &env).await, sink)
}

/// Writes (anything but reads, Resource Graph queries and tokens) sent to Azure.
fn writes(handler: &Handler) -> usize {
    handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| {
            r.method != "GET"
                && r.operation != "ResourceGraph_Resources"
                && r.operation != "Identity_GetToken"
        })
        .count()
}

/// The Teams cards that mention `rule`.
fn cards_about(sink: &Sink, rule: &str) -> usize {
    sink.received("teams")
        .iter()
        .filter(|card| card.body.to_string().contains(rule))
        .count()
}

fn results(outcome: &Value, rule: &str) -> Vec<String> {
    outcome["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["rule"] == rule)
        .map(|a| format!("{} {}", a["kind"], a["result"]).replace('"', ""))
        .collect()
}

/// Remediates the vault on a person's event; answers the events that remediation emitted
/// (cmk-guard's own write), not yet delivered.
async fn remediate_and_hold_own_events(handler: &Handler, sink: &Sink) -> Vec<Value> {
    handler.sim.clear_events();
    let first = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await
        .remove(0);
    assert_eq!(
        results(first.outcome(), PURGE),
        ["remediate applied", "notify sent"],
        "{:?}",
        first.body
    );
    assert_eq!(cards_about(sink, PURGE), 1);
    let own = handler.sim.events();
    assert!(
        !own.is_empty(),
        "the vault PATCH emits ResourceWriteSuccess"
    );
    handler.sim.clear_events();
    own
}

/// Issue 13, item 4: cmk-guard's own write event arrives before a person's event about another
/// change. The other finding is alerted then, once; the person's event adds nothing.
#[tokio::test]
async fn our_own_event_first_still_alerts_an_unrelated_finding_exactly_once() {
    let (handler, sink) = start().await;
    let own_events = remediate_and_hold_own_events(&handler, &sink).await;
    // Meanwhile a person adds a v2 online endpoint (medium); their event is still on its way.
    handler
        .sim
        .admin()
        .patch_workspace(WORKSPACE, &json!({"onlineEndpoints": ["ep-v2"]}))
        .expect("patch workspace");
    let person_events = handler.sim.events();
    assert!(!person_events.is_empty());
    let writes_after_remediation = writes(&handler);

    for reply in handler
        .deliver("OnSubscriptionEvent", "event", &own_events)
        .await
    {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            results(reply.outcome(), PURGE).is_empty(),
            "{:?}",
            reply.body
        );
    }
    assert_eq!(
        cards_about(&sink, ENDPOINTS),
        1,
        "the unrelated medium finding is alerted on our own event, as on any event"
    );

    for reply in handler
        .deliver("OnSubscriptionEvent", "event", &person_events)
        .await
    {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            results(reply.outcome(), ENDPOINTS).is_empty(),
            "{:?}",
            reply.body
        );
    }
    assert_eq!(cards_about(&sink, ENDPOINTS), 1, "no duplicate");
    assert_eq!(cards_about(&sink, PURGE), 1, "no second alert");
    assert_eq!(
        writes(&handler),
        writes_after_remediation,
        "no second remediation"
    );
}

/// A person reverts the fix before our own event arrives: our event leaves the remediated
/// (resource, rule) alone and records nothing for it, so the person's event still sees the
/// change and handles it.
#[tokio::test]
async fn a_revert_seen_on_our_own_event_is_left_to_the_persons_event() {
    let (handler, sink) = start().await;
    let own_events = remediate_and_hold_own_events(&handler, &sink).await;
    handler
        .sim
        .admin()
        .patch_vault(VAULT, &json!({"purgeProtection": null}))
        .expect("patch vault");
    let person_events = handler.sim.events();
    let writes_after_remediation = writes(&handler);

    for reply in handler
        .deliver("OnSubscriptionEvent", "event", &own_events)
        .await
    {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            results(reply.outcome(), PURGE),
            ["remediate suppressed"],
            "{:?}",
            reply.body
        );
    }
    assert_eq!(writes(&handler), writes_after_remediation);
    assert_eq!(cards_about(&sink, PURGE), 1);

    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &person_events)
        .await;
    assert_eq!(
        results(replies[0].outcome(), PURGE),
        ["remediate applied", "notify sent"],
        "{:?}",
        replies[0].body
    );
    assert_eq!(writes(&handler), writes_after_remediation + 1);
    assert_eq!(cards_about(&sink, PURGE), 2);
}
