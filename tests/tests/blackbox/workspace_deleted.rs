//! A deleted workspace closes its findings (issue 14): when the workspace's own read answers
//! 404 — on its delete event, in the sweep (which no longer finds it listed), or in an
//! `Evaluate` with `apply` — every finding still open about it is resolved with observed
//! `workspace deleted`, and one `resolved` card closes what people were told. A workspace that
//! still exists keeps its findings.

use std::collections::BTreeSet;

use azure_sim::{KeySpec, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{self, SUB};
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::{Value, json};

const RG: &str = "rg-deleted";
const VAULT: &str = "kv-deleted";
const KEY: &str = "cmk";
const GONE: &str = "ws-gone";
const STAYS: &str = "ws-stays";
const DELETED: &str = "workspace deleted";

/// Two CMK workspaces sharing a vault without purge protection: each has that finding open.
fn tenant() -> Tenant {
    Tenant::builder()
        .subscription(SUB)
        .vault(
            VaultSpec::new(SUB, RG, VAULT)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 3072)),
        )
        .workspace(WorkspaceSpec::new(SUB, RG, GONE).cmk(VAULT, KEY))
        .workspace(WorkspaceSpec::new(SUB, RG, STAYS).cmk(VAULT, KEY))
        .build()
        .expect("tenant")
}

fn workspace_id(name: &str) -> String {
    story::workspace_id_of(SUB, RG, name)
}

/// What Azure emits when a person writes the workspace.
fn workspace_write(name: &str) -> Value {
    story::workspace_write_of(SUB, RG, name)
}

async fn start(mode: &str) -> (Handler, Sink) {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let env = [
        ("CMKGUARD_MODE", mode),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    (Handler::start_with(tenant(), &env).await, sink)
}

/// Two instances sharing one SQLite state and one Teams channel, each reading its own
/// simulator of the same tenant: the second has read nothing yet, so what it reads is Azure as
/// it is now (an instance's reads are cached for a few seconds). The state file lives in
/// `scratch`, which must outlive both.
async fn start_two(mode: &str, scratch: &Scratch) -> (Handler, Handler, Sink) {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let state = scratch.sqlite_state("state.db");
    let env = [
        ("CMKGUARD_MODE", mode),
        ("CMKGUARD_STATE", state.as_str()),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    let first = Handler::start_with(tenant(), &env).await;
    let second = Handler::start_with(tenant(), &env).await;
    (first, second, sink)
}

/// (rule, workspace name, state, observed) of an Outcome's findings.
fn findings(outcome: &Value) -> BTreeSet<(String, String, String, String)> {
    outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let text = |field: &str| f[field].as_str().unwrap_or_default().to_owned();
            let workspace = text("workspace");
            let name = workspace.rsplit('/').next().unwrap_or_default().to_owned();
            (text("rule"), name, text("state"), text("observed"))
        })
        .collect()
}

/// The open findings of `name` in an Outcome, as (rule, …) closed by a deletion.
fn closed_by_deletion(outcome: &Value, name: &str) -> BTreeSet<(String, String, String, String)> {
    findings(outcome)
        .into_iter()
        .filter(|(_, workspace, state, _)| workspace == name && state == "open")
        .map(|(rule, workspace, _, _)| (rule, workspace, "resolved".into(), DELETED.into()))
        .collect()
}

/// The Teams cards that close findings of a deleted workspace.
fn deletion_cards(sink: &Sink) -> Vec<String> {
    sink.received("teams")
        .iter()
        .map(|card| card.body.to_string())
        .filter(|card| card.contains("Resolved: ") && card.contains(DELETED))
        .collect()
}

/// Opens the findings of both workspaces with a person's write event each; answers the
/// findings of `ws-gone` as a deletion closes them.
async fn open_findings(handler: &Handler) -> BTreeSet<(String, String, String, String)> {
    let replies = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(GONE), workspace_write(STAYS)],
        )
        .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let closed = closed_by_deletion(replies[0].outcome(), GONE);
    assert!(
        closed
            .iter()
            .any(|(rule, ..)| rule == "vault.purge-protection"),
        "{:?}",
        replies[0].body
    );
    closed
}

#[tokio::test]
async fn the_delete_event_resolves_the_workspaces_open_findings_with_one_card() {
    let (handler, sink) = start("alert").await;
    let closed = open_findings(&handler).await;
    let cards_before = sink.received("teams").len();
    handler.sim.clear_events();
    handler.sim.admin().delete_workspace(GONE).expect("delete");
    let deleted = handler.sim.events();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(
        deleted[0]["data"]["operationName"],
        "Microsoft.MachineLearningServices/workspaces/delete"
    );

    // The deletion reaches two invocations at once under two event ids: both see the findings
    // open, exactly one wins each transition, and only the winner alerts.
    let mut twin = deleted[0].clone();
    twin["id"] = json!(uuid::Uuid::new_v4().to_string());
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[deleted[0].clone(), twin])
        .await;
    let mut reported = BTreeSet::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.outcome()["disposition"], "evaluated");
        assert_eq!(reply.outcome()["workspaces"], json!([workspace_id(GONE)]));
        reported.extend(findings(reply.outcome()));
    }
    assert_eq!(
        reported, closed,
        "every open finding, resolved: {replies:?}"
    );
    let cards = deletion_cards(&sink);
    assert_eq!(cards.len(), 1, "one resolved card: {cards:?}");
    assert_eq!(sink.received("teams").len(), cards_before + 1);

    // A redelivery is a duplicate; the sweep finds nothing left to close about the deleted
    // workspace, and the other workspace's finding stays open without another card.
    let again = handler
        .deliver("OnSubscriptionEvent", "event", &deleted)
        .await;
    assert_eq!(again[0].outcome()["disposition"], "duplicate");
    let sweep = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(sweep.status, 200, "{:?}", sweep.body);
    let swept = findings(sweep.outcome());
    assert!(swept.iter().all(|(_, ws, ..)| ws == STAYS), "{swept:?}");
    assert!(
        swept
            .iter()
            .any(|(rule, _, state, _)| rule == "vault.purge-protection" && state == "open")
    );
    assert_eq!(deletion_cards(&sink).len(), 1);
}

#[tokio::test]
async fn the_sweep_notices_a_deleted_workspace_without_its_event() {
    let scratch = Scratch::new("deleted");
    let (alerted, handler, sink) = start_two("alert", &scratch).await;
    let closed = open_findings(&alerted).await;
    // The delete event is lost; the next sweep runs on the other instance.
    handler.sim.admin().delete_workspace(GONE).expect("delete");
    handler.sim.clear_events();

    let sweep = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(sweep.status, 200, "{:?}", sweep.body);
    let outcome = sweep.outcome();
    let workspaces: Vec<&str> = outcome["workspaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        workspaces.contains(&workspace_id(GONE).as_str()),
        "read although no longer listed: {workspaces:?}"
    );
    let resolved: BTreeSet<_> = findings(outcome)
        .into_iter()
        .filter(|(_, ws, ..)| ws == GONE)
        .collect();
    assert_eq!(resolved, closed);
    assert_eq!(deletion_cards(&sink).len(), 1);

    let next = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    assert!(
        findings(next.outcome())
            .iter()
            .all(|(_, ws, ..)| ws == STAYS),
        "{:?}",
        next.body
    );
    assert_eq!(deletion_cards(&sink).len(), 1, "closed once");
}

#[tokio::test]
async fn evaluate_with_apply_resolves_a_deleted_workspaces_findings() {
    let scratch = Scratch::new("deleted");
    let (alerted, handler, sink) = start_two("remediate", &scratch).await;
    let closed = open_findings(&alerted).await;
    handler.sim.admin().delete_workspace(GONE).expect("delete");
    handler.sim.clear_events();
    let body = |apply: bool| {
        json!({"resource": workspace_id(GONE), "apply": apply})
            .to_string()
            .into_bytes()
    };

    let read_only = handler.post_chunked("/api/evaluate", body(false)).await;
    assert_eq!(read_only.status, 200, "{:?}", read_only.body);
    assert_eq!(
        findings(&read_only.body),
        BTreeSet::new(),
        "nothing recorded"
    );
    assert!(deletion_cards(&sink).is_empty());

    let applied = handler.post_chunked("/api/evaluate", body(true)).await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    assert_eq!(findings(&applied.body), closed);
    assert_eq!(deletion_cards(&sink).len(), 1);
}

#[tokio::test]
async fn observe_mode_resolves_a_deleted_workspaces_findings_silently() {
    let (handler, sink) = start("observe").await;
    let closed = open_findings(&handler).await;
    handler.sim.clear_events();
    handler.sim.admin().delete_workspace(GONE).expect("delete");
    let deleted = handler.sim.events();
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &deleted)
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    assert_eq!(findings(replies[0].outcome()), closed);
    assert!(sink.received("teams").is_empty(), "observe sends nothing");
}
