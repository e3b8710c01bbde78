//! Event Grid system topics, their event subscriptions, and diagnostic settings, as the
//! self-wiring remediation writes and reads them.

use crate::helpers::spawn;
use azure_sim::scenario::{DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT};
use azure_sim::{Tenant, VaultSpec, ids};
use reqwest::Method;
use serde_json::json;

const EG: &str = "api-version=2022-06-15";
const INSIGHTS: &str = "api-version=2021-05-01-preview";
const FUNCTION: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ops/providers/Microsoft.Web/sites/app/functions/OnKeyVaultEvent";
const RULE: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ops/providers/Microsoft.EventHub/namespaces/ns/authorizationRules/send";

fn topic(group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.EventGrid/systemTopics/{name}"
    )
}

#[tokio::test]
async fn one_system_topic_per_source_with_subscriptions_listed_under_it() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let vault = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT);
    let body = json!({"location": "westeurope", "properties": {"source": vault, "topicType": "Microsoft.KeyVault.vaults"}});
    let first = topic(DEFAULT_RESOURCE_GROUP, "kv-topic");
    let created = t
        .arm(Method::PUT, &format!("{first}?{EG}"), Some(body.clone()))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["properties"]["source"], vault.as_str());
    assert_eq!(created.body["type"], "Microsoft.EventGrid/systemTopics");
    let again = t
        .arm(Method::PUT, &format!("{first}?{EG}"), Some(body.clone()))
        .await;
    assert_eq!(again.status, 200, "the same topic again is an update");
    let second = t
        .arm(
            Method::PUT,
            &format!("{}?{EG}", topic("other-rg", "another")),
            Some(body),
        )
        .await;
    assert_eq!(second.status, 400, "{:?}", second.body);
    let missing_source = t
        .arm(
            Method::PUT,
            &format!("{}?{EG}", topic(DEFAULT_RESOURCE_GROUP, "nothing")),
            Some(json!({"location": "westeurope", "properties": {"source": format!("{vault}-gone"), "topicType": "Microsoft.KeyVault.vaults"}})),
        )
        .await;
    assert_eq!(missing_source.status, 400);

    let listed = t
        .arm_get(&format!(
            "/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.EventGrid/systemTopics?{EG}"
        ))
        .await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 1);
    let by_other_group = t
        .arm_get(&format!(
            "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/other-rg/providers/Microsoft.EventGrid/systemTopics?{EG}"
        ))
        .await;
    assert_eq!(by_other_group.body["value"], json!([]));

    let subscription = format!("{}/eventSubscriptions/cmk-guard", first.to_uppercase());
    let put = t
        .arm(
            Method::PUT,
            &format!("{subscription}?{EG}"),
            Some(json!({"properties": {
                "destination": {"endpointType": "AzureFunction", "properties": {"resourceId": FUNCTION, "maxEventsPerBatch": 1}},
                "filter": {"includedEventTypes": ["Microsoft.KeyVault.KeyExpired"]}
            }})),
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    assert_eq!(
        put.body["properties"]["destination"]["properties"]["resourceId"],
        FUNCTION
    );
    let listed = t.arm_get(&format!("{first}/eventSubscriptions?{EG}")).await;
    assert_eq!(listed.body["value"][0]["name"], "cmk-guard");
    assert_eq!(
        listed.body["value"][0]["properties"]["provisioningState"],
        "Succeeded"
    );
    assert_eq!(
        listed.body["value"][0]["properties"].get("expirationTimeUtc"),
        None
    );

    // What narrows a subscription is kept as given, so a story can seed one that delivers
    // nothing.
    let narrowed = json!({
        "subjectBeginsWith": "/nothing",
        "subjectEndsWith": ".none",
        "advancedFilters": [{"operatorType": "StringIn", "key": "data.VaultName", "values": ["other"]}],
        "includedEventTypes": ["Microsoft.KeyVault.KeyExpired"]
    });
    let put = t
        .arm(
            Method::PUT,
            &format!("{first}/eventSubscriptions/narrow?{EG}"),
            Some(json!({"properties": {
                "destination": {"endpointType": "AzureFunction", "properties": {"resourceId": FUNCTION}},
                "filter": narrowed,
                "expirationTimeUtc": "2026-01-01T00:00:00Z",
                "provisioningState": "Failed"
            }})),
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    let got = t
        .arm_get(&format!("{first}/eventSubscriptions/narrow?{EG}"))
        .await;
    assert_eq!(got.body["properties"]["filter"], narrowed);
    assert_eq!(
        got.body["properties"]["expirationTimeUtc"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(got.body["properties"]["provisioningState"], "Failed");
    let no_destination = t
        .arm(
            Method::PUT,
            &format!("{first}/eventSubscriptions/bad?{EG}"),
            Some(json!({"properties": {}})),
        )
        .await;
    assert_eq!(no_destination.status, 400);

    let deleted = t.arm(Method::DELETE, &format!("{first}?{EG}"), None).await;
    assert_eq!(deleted.status, 200);
    let gone = t.arm_get(&format!("{first}/eventSubscriptions?{EG}")).await;
    assert_eq!(gone.status, 404);
    t.stop().await;
}

#[tokio::test]
async fn diagnostic_settings_live_on_their_resource() {
    let tenant = Tenant::compliant_builder()
        .vault(
            VaultSpec::new(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "kv-wired")
                .wired(FUNCTION, RULE, "hub"),
        )
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let wired = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "kv-wired");
    let settings = t
        .arm_get(&format!(
            "{wired}/providers/Microsoft.Insights/diagnosticSettings?{INSIGHTS}"
        ))
        .await;
    assert_eq!(settings.status, 200);
    let setting = &settings.body["value"][0];
    assert_eq!(setting["name"], "cmk-guard-audit");
    assert_eq!(setting["properties"]["eventHubAuthorizationRuleId"], RULE);
    assert_eq!(setting["properties"]["logs"][0]["category"], "AuditEvent");

    let vault = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT);
    let path = format!("{vault}/providers/Microsoft.Insights/diagnosticSettings");
    assert_eq!(
        t.arm_get(&format!("{path}?{INSIGHTS}")).await.body["value"],
        json!([])
    );
    let no_destination = t
        .arm(
            Method::PUT,
            &format!("{path}/s?{INSIGHTS}"),
            Some(json!({"properties": {"logs": [{"category": "AuditEvent", "enabled": true}]}})),
        )
        .await;
    assert_eq!(no_destination.status, 400);
    let put = t
        .arm(
            Method::PUT,
            &format!("{path}/s?{INSIGHTS}"),
            Some(json!({"properties": {"eventHubAuthorizationRuleId": RULE, "eventHubName": "hub", "logs": [{"category": "AuditEvent", "enabled": true}]}})),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(
        t.arm_get(&format!("{path}/S?{INSIGHTS}")).await.body["properties"]["eventHubName"],
        "hub"
    );
    let gone_vault = format!(
        "{}-gone/providers/Microsoft.Insights/diagnosticSettings",
        vault
    );
    assert_eq!(
        t.arm_get(&format!("{gone_vault}?{INSIGHTS}")).await.status,
        404
    );
    assert_eq!(
        t.arm(Method::DELETE, &format!("{path}/s?{INSIGHTS}"), None)
            .await
            .status,
        200
    );
    t.stop().await;
}
