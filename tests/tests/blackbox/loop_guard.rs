//! The loop guard through the real binary: the write event of cmk-guard's own remediation
//! leaves alone only the (resource, rule) it remediated, and everything else it sees is
//! handled as on any event — even when that event is delivered before a person's.
//!
//! The story's tenant and policy (`cmk_guard_blackbox::story`): one CMK workspace whose vault
//! lacks purge protection, which the policy consents to remediate.

use cmk_guard_blackbox::Handler;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{self, VAULT, WORKSPACE, policy_file, tenant, workspace_write};
use serde_json::{Value, json};

const PURGE: &str = story::FINDING;
const ENDPOINTS: &str = "workspace.unsupported-endpoints";

async fn start() -> (Handler, Sink) {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    // The handler reads its policy at start; the file goes when this returns.
    let scratch = Scratch::new("loop-guard");
    let policy = policy_file(&scratch);
    let env = [
        ("CMKGUARD_MODE", "remediate"),
        ("CMKGUARD_POLICY_FILE", policy.as_str()),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    (Handler::start_with(tenant(), &env).await, sink)
}

/// Writes (anything but reads, Resource Graph queries and tokens) sent to Azure.
fn writes(handler: &Handler) -> usize {
    story::writes(&handler.sim).len()
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
