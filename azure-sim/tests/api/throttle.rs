//! ARM's throttling over HTTP: remaining-count headers, the 429 an empty bucket answers, and
//! buckets kept per subscription and per principal; Resource Graph's per-user quota. Each test
//! counts answers until the first refusal (never times them): the buckets refill while the
//! requests go out, so at least the bucket's size passes first.

use crate::helpers::{ARM, spawn};
use azure_sim::scenario::{DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, OTHER_SUBSCRIPTION};
use azure_sim::{Tenant, VaultSpec};
use reqwest::Method;
use serde_json::json;

fn header(resp: &crate::helpers::Resp, name: &str) -> Option<String> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn reads_count_down_to_a_429_with_retry_after_per_subscription_and_principal() {
    let tenant = Tenant::compliant_builder()
        .vault(VaultSpec::new(OTHER_SUBSCRIPTION, "rg-other", "kv-other"))
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    t.sim.set_arm_throttling(true);
    let path = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}?api-version=2021-04-01"
    );
    let first = t.arm_get(&path).await;
    assert_eq!(
        header(&first, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
        Some("249")
    );
    assert_eq!(
        header(&first, "x-ms-ratelimit-remaining-subscription-global-reads").as_deref(),
        Some("3749")
    );
    let mut granted = 1;
    let refused = loop {
        let resp = t.arm_get(&path).await;
        if resp.status == 429 {
            break resp;
        }
        granted += 1;
        assert!(granted < 2_000, "never throttled");
    };
    assert!(granted >= 250, "refused after {granted}");
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        refused.body["error"]["code"],
        "SubscriptionRequestsThrottled"
    );
    assert_eq!(
        header(&refused, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
        Some("0")
    );
    let records = t.sim.requests(&azure_sim::RecordFilter::default());
    assert!(records.iter().any(|r| r.status == 429), "recorded as 429");

    // Another subscription, another principal, and writes have buckets of their own.
    let other = t
        .arm_get(&format!(
            "/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg-other?api-version=2021-04-01"
        ))
        .await;
    assert_ne!(other.status, 429);
    assert_eq!(
        header(&other, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
        Some("249")
    );
    let operator = t.sim.tenant(|t| t.operator_principal_id.clone());
    let token = t.sim.token_for(&operator, ARM);
    let by_operator = t
        .send(Method::GET, &t.arm_url(&path), Some(&token), None)
        .await;
    assert_ne!(by_operator.status, 429, "{}", by_operator.body);
    assert_eq!(
        header(&by_operator, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
        Some("249")
    );
    let tenant_level = t.arm_get(
            "/providers/Microsoft.Management/managementGroups/mg/descendants?api-version=2020-05-01",
        ).await;
    assert!(
        header(&tenant_level, "x-ms-ratelimit-remaining-tenant-reads").is_some(),
        "{:?}",
        tenant_level.headers
    );
}

#[tokio::test]
async fn resource_graph_refuses_a_user_past_the_quota_of_the_window() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    t.sim.set_arm_throttling(true);
    let path = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01";
    let body = json!({"subscriptions": [DEFAULT_SUBSCRIPTION], "query": "resources | project id"});
    let first = t.arm(Method::POST, path, Some(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        header(&first, "x-ms-user-quota-remaining").as_deref(),
        Some("14")
    );
    let mut granted = 1;
    let refused = loop {
        let resp = t.arm(Method::POST, path, Some(body.clone())).await;
        if resp.status == 429 {
            break resp;
        }
        granted += 1;
        assert!(granted < 1_000, "never throttled");
    };
    assert!(granted >= 15, "refused after {granted}");
    assert_eq!(refused.body["error"]["code"], "RateLimiting");
    assert_eq!(
        header(&refused, "x-ms-user-quota-remaining").as_deref(),
        Some("0")
    );
    assert!(header(&refused, "retry-after").is_some());
    let resets = header(&refused, "x-ms-user-quota-resets-after").unwrap();
    assert!(resets.starts_with("00:00:0"), "{resets}");
    // ARM reads are not charged for the queries.
    let read = t
        .arm_get(&format!(
            "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}?api-version=2021-04-01"
        ))
        .await;
    assert_eq!(
        header(&read, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
        Some("249")
    );
}

#[tokio::test]
async fn off_by_default_nothing_is_refused() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let path = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}?api-version=2021-04-01"
    );
    for _ in 0..300 {
        let resp = t.arm_get(&path).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            header(&resp, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
            Some("249")
        );
    }
}
