//! Management-group scope (issue 17): with `CMKGUARD_MANAGEMENT_GROUPS`, the subscriptions under
//! the groups — nested groups included, listed page by page — join `CMKGUARD_SUBSCRIPTIONS`.
//! The sweep evaluates every workspace in them; an event from a subscription outside stays
//! refused; while the groups have never been listed, an event from an unlisted subscription is
//! asked for again (503) rather than dropped; a failed listing is a `guard.visibility` finding.

use std::collections::BTreeSet;

use azure_sim::{Fault, KeySpec, RecordFilter, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::story;
use cmk_guard_blackbox::{Handler, event_hub_envelope, timer_envelope};
use serde_json::{Value, json};

const LISTED: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const IN_GROUP: &str = "b2b2b2b2-0000-4000-8000-000000000002";
const IN_CHILD: &str = "c3c3c3c3-0000-4000-8000-000000000003";
const OUTSIDE: &str = "d4d4d4d4-0000-4000-8000-000000000004";
const GROUP: &str = "mg-ml-platform";
const RG: &str = "rg-ml";
const DESCENDANTS: &str = "ManagementGroups_GetDescendants";

/// `mg-ml-platform` holds two subscriptions and a child group holding a third; a fourth is in
/// no group. Each holds a CMK workspace whose vault lacks purge protection.
fn tenant() -> Tenant {
    let mut builder = Tenant::builder()
        .management_group(GROUP, None, &[LISTED, IN_GROUP])
        .management_group("mg-ml-teams", Some(GROUP), &[IN_CHILD])
        .subscription(OUTSIDE);
    for (i, subscription) in [LISTED, IN_GROUP, IN_CHILD, OUTSIDE].iter().enumerate() {
        let vault = format!("kv-mg-{i}");
        builder = builder
            .vault(
                VaultSpec::new(subscription, RG, &vault)
                    .purge_protection(None)
                    .key(KeySpec::rsa("cmk", 3072)),
            )
            .workspace(WorkspaceSpec::new(subscription, RG, &format!("ws-{i}")).cmk(&vault, "cmk"));
    }
    builder.build().expect("tenant")
}

fn workspace_id(index: usize, subscription: &str) -> String {
    story::workspace_id_of(subscription, RG, &format!("ws-{index}")).to_ascii_lowercase()
}

fn lower_strings(values: &Value) -> BTreeSet<String> {
    values
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `(workspace, rule)` of every finding in an outcome, lower-case.
fn findings(outcome: &Value) -> BTreeSet<(String, String)> {
    outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["workspace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                f["rule"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_management_group_of_three_subscriptions_is_swept_completely() {
    let handler = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", "observe"),
            ("CMKGUARD_SUBSCRIPTIONS", LISTED),
            ("CMKGUARD_MANAGEMENT_GROUPS", GROUP),
        ],
    )
    .await;

    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    let expected: BTreeSet<String> = [(0, LISTED), (1, IN_GROUP), (2, IN_CHILD)]
        .iter()
        .map(|(i, s)| workspace_id(*i, s))
        .collect();
    assert_eq!(lower_strings(&outcome["workspaces"]), expected, "{outcome}");
    let found = findings(outcome);
    for workspace in &expected {
        assert!(
            found.contains(&(workspace.clone(), "vault.purge-protection".to_owned())),
            "{workspace}: {found:?}"
        );
    }
    assert!(
        found.iter().all(|(_, rule)| rule != "guard.visibility"),
        "{found:?}"
    );
    // The group's four descendants (two subscriptions, the child group, its subscription)
    // came in pages of two: the nextLink was followed.
    let pages = handler.sim.requests(&RecordFilter {
        operation: Some(DESCENDANTS.to_owned()),
        ..RecordFilter::default()
    });
    assert!(pages.iter().all(|r| r.status == 200), "{pages:?}");
    assert!(pages.len() >= 2, "{pages:?}");

    // An event from the subscription in no group is still refused, without a read.
    let before = handler.sim.counters().total;
    let event = story::workspace_write_of(OUTSIDE, RG, "ws-3");
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let refused = replies[0].outcome();
    assert_eq!(refused["disposition"], "rejected", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("CMKGUARD_MANAGEMENT_GROUPS"),
        "{refused}"
    );
    assert_eq!(handler.sim.counters().total, before, "no request for it");

    // One from the child group's subscription is evaluated.
    let event = story::workspace_write_of(IN_CHILD, RG, "ws-2");
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    assert_eq!(replies[0].outcome()["disposition"], "evaluated");
}

#[tokio::test]
async fn until_the_group_is_listed_its_events_are_redelivered_and_the_sweep_reports_it() {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("start azure-sim");
    let forbidden = sim.add_fault(Fault::on_operation(DESCENDANTS).status(403));
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "observe"),
            ("CMKGUARD_SUBSCRIPTIONS", LISTED),
            ("CMKGUARD_MANAGEMENT_GROUPS", GROUP),
        ],
    )
    .await;

    // Not listed, and the group could not be listed: asked for again, not refused.
    let event = story::workspace_write_of(IN_GROUP, RG, "ws-1");
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", std::slice::from_ref(&event))
        .await;
    assert_eq!(replies[0].status, 503, "{:?}", replies[0].body);
    // So is an audit-log batch of a vault there: its records are not refused for good.
    let audit = audit_batch(IN_GROUP, "kv-mg-1");
    let reply = handler.invoke("OnKeyVaultAudit", audit.clone()).await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);

    // The sweep goes on with what it knows, and says which group it could not list.
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(
        lower_strings(&outcome["workspaces"]),
        BTreeSet::from([workspace_id(0, LISTED)]),
        "{outcome}"
    );
    let group_scope = format!("/providers/Microsoft.Management/managementGroups/{GROUP}");
    let visibility: Vec<&Value> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility" && f["resource"] == group_scope.as_str())
        .collect();
    assert_eq!(visibility.len(), 1, "{outcome}");

    // Once the group can be read, the redelivered event is evaluated.
    handler.sim.remove_fault(forbidden);
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    assert_eq!(replies[0].outcome()["disposition"], "evaluated");
    assert!(
        replies[0].outcome()["workspaces"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "{:?}",
        replies[0].body
    );
    let reply = handler.invoke("OnKeyVaultAudit", audit).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        lower_strings(&reply.outcome()["workspaces"]),
        BTreeSet::from([workspace_id(1, IN_GROUP)]),
        "{:?}",
        reply.body
    );
}

/// A Key Vault audit-log batch saying a person updated the key of `vault` in `subscription`.
fn audit_batch(subscription: &str, vault: &str) -> Vec<u8> {
    let record = json!({
        "time": "2026-11-28T10:00:00Z", "category": "AuditEvent", "operationName": "KeyUpdate",
        "resourceId": format!("/subscriptions/{subscription}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{vault}").to_uppercase(),
        "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": story::USER}},
        "properties": {"id": format!("https://{vault}.vault.azure.net/keys/cmk"), "httpStatusCode": 200}
    });
    event_hub_envelope(
        "messages",
        &[json!({"records": [record]})],
        1,
        "OnKeyVaultAudit",
    )
}

/// `cmk-guard scan` with `args`, configured for the simulator and `CMKGUARD_MANAGEMENT_GROUPS`.
async fn scan(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<&str> = std::iter::once("scan")
        .chain(args.iter().copied())
        .collect();
    let mut env = sim.handler_env();
    env.push(("CMKGUARD_MANAGEMENT_GROUPS".to_owned(), GROUP.to_owned()));
    cmk_guard_blackbox::run_cli_with(&args, env).await
}

#[tokio::test]
async fn the_scan_covers_the_groups_and_refuses_a_subscription_outside_them() {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("start azure-sim");
    let (code, json, err) = scan(&sim, &["--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let outcome: Value = serde_json::from_str(&json).expect("JSON");
    let expected: BTreeSet<String> = [(0, LISTED), (1, IN_GROUP), (2, IN_CHILD)]
        .iter()
        .map(|(i, s)| workspace_id(*i, s))
        .collect();
    assert_eq!(lower_strings(&outcome["workspaces"]), expected, "{outcome}");

    let (code, json, err) = scan(&sim, &["--subscription", IN_CHILD, "--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let outcome: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        lower_strings(&outcome["workspaces"]),
        BTreeSet::from([workspace_id(2, IN_CHILD)])
    );

    let (code, _, err) = scan(&sim, &["--subscription", OUTSIDE]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CMKGUARD_MANAGEMENT_GROUPS"), "{err}");
}
