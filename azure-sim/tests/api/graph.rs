//! Resource Graph: the queries cmk-guard sends, paging, and errors.

use crate::helpers::spawn;
use azure_sim::scenario::{
    DEFAULT_KEY, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT, OTHER_SUBSCRIPTION,
};
use azure_sim::{Tenant, WorkspaceSpec, ids};
use reqwest::Method;
use serde_json::{Value, json};

const PATH: &str = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01";

#[tokio::test]
async fn finds_workspaces_by_vault_and_pages_with_skip_tokens() {
    let mut builder = Tenant::compliant_builder();
    for i in 0..5 {
        builder = builder.workspace(
            WorkspaceSpec::new(DEFAULT_SUBSCRIPTION, "rg-many", &format!("ws-{i}"))
                .cmk(DEFAULT_VAULT, DEFAULT_KEY),
        );
    }
    let t = spawn(
        builder
            .workspace(WorkspaceSpec::new(OTHER_SUBSCRIPTION, "rg-x", "ws-plain"))
            .build()
            .unwrap(),
    )
    .await;
    let vault_id =
        ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT).to_uppercase();
    let query = format!(
        "resources | where type =~ 'microsoft.machinelearningservices/workspaces' | where properties.encryption.keyVaultProperties.keyVaultArmId =~ '{vault_id}' | project id, name, subscriptionId, keyId = tostring(properties.encryption.keyVaultProperties.keyIdentifier) | order by id asc"
    );
    let mut body =
        json!({"subscriptions": [DEFAULT_SUBSCRIPTION], "query": query, "options": {"$top": 4}});
    let first = t.arm(Method::POST, PATH, Some(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["totalRecords"], 6);
    assert_eq!(first.body["count"], 4);
    assert_eq!(first.body["resultTruncated"], "false");
    assert!(first.headers.contains_key("x-ms-user-quota-remaining"));
    let token = first.body["$skipToken"].as_str().unwrap().to_owned();
    body["options"] = json!({"$skipToken": token});
    let second = t.arm(Method::POST, PATH, Some(body.clone())).await;
    assert_eq!(second.body["count"], 2);
    assert!(second.body.get("$skipToken").is_none());
    let names: Vec<Value> = first.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["data"].as_array().unwrap())
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names.len(), 6);

    body["query"] = json!("resources | project id");
    let replay = t.arm(Method::POST, PATH, Some(body)).await;
    assert_eq!(
        replay.status, 400,
        "a skip token only replays with the same query"
    );
    t.stop().await;
}

#[tokio::test]
async fn lists_vaults_and_reports_truncation_without_ids() {
    let t = spawn(
        Tenant::compliant_builder()
            .workspace(WorkspaceSpec::new(DEFAULT_SUBSCRIPTION, "rg-2", "ws-2"))
            .build()
            .unwrap(),
    )
    .await;
    let vaults = t.arm(Method::POST, PATH, Some(json!({"query": "Resources | where type =~ 'Microsoft.KeyVault/vaults' | project id, name, purgeProtection = properties.enablePurgeProtection, rbac = properties.enableRbacAuthorization"}))).await;
    assert_eq!(vaults.body["data"][0]["purgeProtection"], true);
    assert_eq!(vaults.body["data"][0]["rbac"], true);
    let no_ids = t
        .arm(
            Method::POST,
            PATH,
            Some(json!({"query": "resources | project name", "options": {"$top": 1}})),
        )
        .await;
    assert_eq!(no_ids.body["resultTruncated"], "true");
    let bad = t
        .arm(
            Method::POST,
            PATH,
            Some(json!({"query": "resources | summarize count() by type"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["details"][0]["code"], "InvalidQuery");
    t.stop().await;
}
