//! Microsoft-managed resource groups by name (issue 17): a workspace may name its
//! service-provisioned resource group anything, not only `azureml-rg-…`. Once a sweep has read
//! the workspace, a delete in that group, or of the group itself, is relevant and raises
//! `managed-resources.tamper`; the name is kept in the state store, so that another instance
//! starting cold knows it too.

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::story::{self, KEY, RG, SUB, USER, VAULT, WORKSPACE};
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::{Value, json};

const MANAGED: &str = "Contoso-ML-Managed";

/// The story's compliant workspace, whose service-provisioned group has no `azureml-rg-` prefix.
fn tenant() -> azure_sim::Tenant {
    let mut tenant = azure_sim::Tenant::builder()
        .subscription(SUB)
        .vault(azure_sim::VaultSpec::new(SUB, RG, VAULT).key(azure_sim::KeySpec::rsa(KEY, 3072)))
        .workspace(azure_sim::WorkspaceSpec::new(SUB, RG, WORKSPACE).cmk(VAULT, KEY))
        .build()
        .expect("tenant");
    for workspace in &mut tenant.workspaces {
        workspace.service_provisioned_resource_group = Some(MANAGED.to_owned());
    }
    tenant
}

/// A person deletes the Cosmos DB account in the managed group (the group's name in another
/// case, as ARM events may spell it).
fn managed_delete() -> Value {
    let resource = format!(
        "/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-ws",
        MANAGED.to_ascii_lowercase()
    );
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "topic": format!("/subscriptions/{SUB}"), "subject": resource,
        "eventType": "Microsoft.Resources.ResourceDeleteSuccess", "eventTime": "2026-11-28T10:00:00Z",
        "data": {"operationName": "Microsoft.DocumentDB/databaseAccounts/delete", "resourceUri": resource,
                 "subscriptionId": SUB,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

/// A person deletes the managed group itself: the event names the group, not a resource in it.
fn group_delete() -> Value {
    let group = format!("/subscriptions/{SUB}/resourceGroups/{MANAGED}");
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "topic": format!("/subscriptions/{SUB}"), "subject": group,
        "eventType": "Microsoft.Resources.ResourceDeleteSuccess", "eventTime": "2026-11-28T10:05:00Z",
        "data": {"operationName": "Microsoft.Resources/subscriptions/resourceGroups/delete", "resourceUri": group,
                 "subscriptionId": SUB,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

fn tamper_findings(outcome: &Value) -> Vec<&Value> {
    outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "managed-resources.tamper")
        .collect()
}

#[tokio::test]
async fn a_managed_group_of_any_name_is_watched_once_a_sweep_has_read_the_workspace() {
    let scratch = Scratch::new("managed-groups");
    let state = scratch.sqlite_state("state.db");
    let env = [
        ("CMKGUARD_MODE", "observe"),
        ("CMKGUARD_STATE", state.as_str()),
    ];
    let handler = Handler::start_with(tenant(), &env).await;

    // Before anything read the workspace, the group is one like any other.
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[managed_delete()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    assert_eq!(
        replies[0].outcome()["disposition"],
        "ignored",
        "{:?}",
        replies[0].body
    );

    let sweep = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(sweep.status, 200, "{:?}", sweep.body);

    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[managed_delete()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let outcome = replies[0].outcome();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    let tamper = tamper_findings(outcome);
    assert_eq!(tamper.len(), 1, "{outcome}");
    assert_eq!(
        tamper[0]["workspace"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        story::workspace_id().to_ascii_lowercase()
    );

    // Deleting the group itself, the most destructive tamper, is seen as it happens too.
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[group_delete()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let outcome = replies[0].outcome();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    let tamper = tamper_findings(outcome);
    assert_eq!(tamper.len(), 1, "{outcome}");
    assert_eq!(tamper[0]["state"], "open", "{outcome}");
    assert!(
        tamper[0]["resource"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case(&format!("/subscriptions/{SUB}/resourceGroups/{MANAGED}")),
        "{outcome}"
    );

    // Another instance of the same deployment, starting cold, knows the name from the store.
    let cold = Handler::start_with(tenant(), &env).await;
    let replies = cold
        .deliver("OnSubscriptionEvent", "event", &[managed_delete()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let outcome = replies[0].outcome();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    assert_eq!(tamper_findings(outcome).len(), 1, "{outcome}");

    // The first instance said which group it learned, for the Event Grid filters.
    let started = std::time::Instant::now();
    while !handler.stdout.snapshot().iter().any(|line| {
        line.contains("Learned a service-provisioned resource group")
            && line
                .to_ascii_lowercase()
                .contains(&MANAGED.to_ascii_lowercase())
    }) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the learned name is logged: {:?}",
            handler.stdout.snapshot()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
