//! Fault injection, counters and the request log, through the Rust API and the admin API.

use crate::helpers::spawn;
use azure_sim::scenario::{DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT};
use azure_sim::{Fault, RecordFilter, Tenant, ids};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

fn vault() -> String {
    format!(
        "{}?api-version=2026-02-01",
        ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT)
    )
}

#[tokio::test]
async fn throttles_a_counted_number_of_requests_with_retry_after() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    t.sim
        .add_fault(Fault::on_operation("Vaults_Get").throttle(7).times(2));
    let first = t.arm_get(&vault()).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.headers["retry-after"], "7");
    assert_eq!(first.body["error"]["code"], "TooManyRequests");
    assert_eq!(t.arm_get(&vault()).await.status, 429);
    assert_eq!(t.arm_get(&vault()).await.status, 200);
    let c = t.sim.counters();
    assert_eq!(c.operation("Vaults_Get"), 3);
    assert_eq!(c.operation_status("Vaults_Get", 429), 2);
    assert_eq!(
        c.resource(
            &ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT)
                .to_uppercase()
        ),
        3
    );
    assert_eq!(t.sim.faults()[0].hits, 2);
    let records = t.sim.requests(&RecordFilter {
        operation: Some("vaults_get".into()),
        ..Default::default()
    });
    assert_eq!(records.iter().filter(|r| r.fault.is_some()).count(), 2);
    t.stop().await;
}

#[tokio::test]
async fn path_faults_latency_and_peak_rate() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    t.sim.add_fault(
        Fault::on_path(
            "GET",
            "/subscriptions/*/resourceGroups/*/providers/Microsoft.KeyVault/vaults/*",
        )
        .latency(Duration::from_millis(150)),
    );
    let started = Instant::now();
    assert_eq!(t.arm_get(&vault()).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    t.sim.clear_faults();
    t.sim
        .add_fault(Fault::on_everything().host("*.vault.azure.net").status(503));
    let kv = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            "/keys/mlw-cmk-key?api-version=2025-07-01",
            None,
        )
        .await;
    assert_eq!(kv.status, 503);
    assert_eq!(kv.headers["retry-after"], "1");
    for _ in 0..3 {
        t.arm_get(&vault()).await;
    }
    // A window longer than any test run: all four reads fall in it, however slow the machine.
    let peak = t.sim.peak_rate(
        Duration::from_secs(24 * 3600),
        &RecordFilter {
            operation: Some("Vaults_Get".into()),
            ..Default::default()
        },
    );
    assert_eq!(peak.peak, 4);
    t.sim.reset_counters();
    assert_eq!(t.sim.counters().total, 0);
    t.stop().await;
}

#[tokio::test]
async fn admin_api_manages_faults_and_counters() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let added = t
        .admin(
            Method::POST,
            "/faults",
            Some(json!([{"operation": "Vaults_Get", "status": 500, "count": 1}])),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(t.arm_get(&vault()).await.status, 500);
    assert_eq!(t.arm_get(&vault()).await.status, 200);
    let counters = t.admin(Method::GET, "/counters", None).await.body;
    assert_eq!(counters["byOperation"]["Vaults_Get"]["byStatus"]["500"], 1);
    let requests = t
        .admin(Method::GET, "/requests?operation=Vaults_Get", None)
        .await
        .body;
    assert_eq!(requests.as_array().unwrap().len(), 2);
    let peak = t
        .admin(
            Method::GET,
            "/peak-rate?windowMs=60000&operation=Vaults_Get",
            None,
        )
        .await
        .body;
    assert_eq!(peak["peak"], 2);
    assert_eq!(t.admin(Method::DELETE, "/faults", None).await.status, 204);
    assert_eq!(
        t.admin(Method::POST, "/reset-counters", None).await.status,
        204
    );
    assert_eq!(
        t.admin(Method::GET, "/counters", None).await.body["total"],
        0
    );
    let plain = format!("{}/counters", t.sim.info().admin_http_url);
    assert_eq!(t.plain.get(&plain).send().await.unwrap().status(), 200);
    let bad = t
        .admin(Method::POST, "/faults", Some(json!({"operaton": "x"})))
        .await;
    assert_eq!(bad.status, 400);
    t.stop().await;
}
