//! Reading Azure through the real binary and azure-sim: throttling, server errors, permanent
//! errors, the deadline, untrusted hosts and burst coalescing, checked with the simulator's
//! request counters.

use std::collections::BTreeMap;

use azure_sim::{Fault, RecordFilter};
use cmk_guard_blackbox::{Handler, fixtures_dir, read_json};
use serde_json::{Value, json};

const ARM: &str = "management.azure.com";

fn key_near_expiry(id: &str) -> Value {
    let mut event = read_json(
        &fixtures_dir().join("events/eventgrid-schema/Microsoft.KeyVault.KeyNearExpiry.json"),
    );
    event["id"] = json!(id);
    event
}

fn arm_reads(handler: &Handler, operation: &str) -> Vec<azure_sim::RequestRecord> {
    handler.sim.requests(&RecordFilter {
        operation: Some(operation.to_owned()),
        host: Some(ARM.to_owned()),
        ..RecordFilter::default()
    })
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let handler = Handler::start(&[]).await;
    handler
        .sim
        .add_fault(Fault::on_operation("Vaults_Get").throttle(1).times(1));
    let reply = handler
        .deliver(
            "OnKeyVaultEvent",
            "event",
            &[key_near_expiry("throttled-1")],
        )
        .await
        .remove(0);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.outcome()["disposition"], "evaluated");
    let reads = arm_reads(&handler, "Vaults_Get");
    assert_eq!(
        reads.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    // The simulator records a request before it answers, and the handler sleeps the
    // Retry-After only once the answer arrived: a lower bound the sleep guarantees, however
    // fast or slow the machine.
    let waited_ms = reads[1].at_ms - reads[0].at_ms;
    assert!(
        waited_ms >= 1000.0,
        "retried after {waited_ms} ms, before Retry-After: 1"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let handler = Handler::start(&[]).await;
    handler
        .sim
        .add_fault(Fault::on_operation("Workspaces_Get").status(503).times(1));
    handler
        .sim
        .add_fault(Fault::on_operation("Keys_GetVersion").status(500).times(2));
    let reply = handler
        .deliver("OnKeyVaultEvent", "event", &[key_near_expiry("flaky-1")])
        .await
        .remove(0);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let statuses = |op| {
        arm_reads(&handler, op)
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses("Workspaces_Get"), vec![503, 200]);
    assert_eq!(statuses("Keys_GetVersion"), vec![500, 500, 200]);
}

#[tokio::test]
async fn a_403_is_not_retried_and_the_event_is_acknowledged() {
    let handler = Handler::start(&[]).await;
    handler
        .sim
        .add_fault(Fault::on_operation("Vaults_Get").status(403));
    let reply = handler
        .deliver(
            "OnKeyVaultEvent",
            "event",
            &[key_near_expiry("forbidden-1")],
        )
        .await
        .remove(0);
    assert_eq!(
        reply.status, 200,
        "a permanent failure is recorded, not redelivered: {:?}",
        reply.body
    );
    assert_eq!(arm_reads(&handler, "Vaults_Get").len(), 1);
}

#[tokio::test]
async fn throttling_past_the_deadline_fails_the_invocation_without_waiting() {
    let handler = Handler::start(&[]).await;
    handler
        .sim
        .add_fault(Fault::on_operation("Workspaces_Get").throttle(120));
    let reply = handler
        .deliver("OnKeyVaultEvent", "event", &[key_near_expiry("deadline-1")])
        .await
        .remove(0);
    assert_eq!(
        reply.status, 503,
        "Event Grid must redeliver: {:?}",
        reply.body
    );
    assert!(
        reply.logs().iter().any(|l| l.contains("delivered again")),
        "{:?}",
        reply.logs()
    );
    // Retry-After (120 s) lies beyond the 25 s budget: no second request, no sleep.
    assert_eq!(arm_reads(&handler, "Workspaces_Get").len(), 1);
}

#[tokio::test]
async fn a_key_on_a_foreign_host_causes_no_request_at_all() {
    let handler = Handler::start(&[]).await;
    let mut event = key_near_expiry("foreign-1");
    event["data"]["Id"] = json!(
        "https://kv-mlw-cmk-prod.vault.azure.net.evil.example/keys/mlw-cmk-key/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9"
    );
    let reply = handler
        .deliver("OnKeyVaultEvent", "event", &[event])
        .await
        .remove(0);
    assert_eq!(reply.outcome()["disposition"], "rejected");
    assert!(
        reply.outcome()["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not under the Key Vault DNS suffix")
    );
    assert_eq!(
        handler.sim.counters().total,
        0,
        "{:?}",
        handler.sim.counters()
    );
}

#[tokio::test]
async fn a_hundred_concurrent_events_cost_one_read_per_resource() {
    let handler = Handler::start(&[]).await;
    let events: Vec<Value> = (0..100)
        .map(|i| key_near_expiry(&format!("burst-{i}")))
        .collect();
    let replies = handler.deliver("OnKeyVaultEvent", "event", &events).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.outcome()["disposition"] == "evaluated")
    );
    let mut reads: BTreeMap<String, usize> = BTreeMap::new();
    for record in handler.sim.requests(&RecordFilter {
        host: Some(ARM.to_owned()),
        ..RecordFilter::default()
    }) {
        *reads
            .entry(format!(
                "{} {} {}",
                record.operation,
                record.method,
                record.path.to_ascii_lowercase()
            ))
            .or_default() += 1;
    }
    assert!(
        reads.len() >= 6,
        "workspace, endpoints, providers, vault, keys, role assignments: {reads:?}"
    );
    let repeated: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "read more than once: {repeated:?}");
}
