//! The event path's snapshot memo through the real binary and azure-sim: an event with a warm
//! cache reads nothing from Azure, and an event about a change made after the last reads is
//! checked against Azure again, not answered with the remembered snapshot.

use azure_sim::RecordFilter;
use azure_sim::scenario::DEFAULT_VAULT;
use cmk_guard_blackbox::{Handler, fixtures_dir, read_json};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Before any read of this test (the fixture's time).
const BEFORE_THE_READS: &str = "2026-11-28T09:20:13.0487719Z";

fn key_near_expiry(id: &str, event_time: &str) -> Value {
    let mut event = read_json(
        &fixtures_dir().join("events/eventgrid-schema/Microsoft.KeyVault.KeyNearExpiry.json"),
    );
    event["id"] = json!(id);
    event["eventTime"] = json!(event_time);
    event
}

fn arm_reads(handler: &Handler) -> usize {
    handler
        .sim
        .requests(&RecordFilter {
            host: Some("management.azure.com".to_owned()),
            ..RecordFilter::default()
        })
        .len()
}

/// The outcome of one event and the rules of its findings.
async fn deliver(handler: &Handler, event: Value) -> (Value, Vec<String>) {
    let reply = handler
        .deliver("OnKeyVaultEvent", "event", &[event])
        .await
        .remove(0);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome().clone();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    let mut rules: Vec<String> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect();
    rules.sort();
    (outcome, rules)
}

#[tokio::test]
async fn a_warm_event_reads_nothing_and_an_event_after_a_change_sees_the_change() {
    let handler = Handler::start(&[]).await;
    let (_, first) = deliver(&handler, key_near_expiry("memo-1", BEFORE_THE_READS)).await;
    assert!(
        !first.iter().any(|r| r == "vault.purge-protection"),
        "{first:?}"
    );
    let reads = arm_reads(&handler);
    assert!(reads > 0);

    let (_, second) = deliver(&handler, key_near_expiry("memo-2", BEFORE_THE_READS)).await;
    assert_eq!(second, first, "the same chain, the same findings");
    assert_eq!(arm_reads(&handler), reads, "answered without reading Azure");

    handler.sim.tenant_mut(|tenant| {
        tenant
            .vault_mut(DEFAULT_VAULT)
            .expect("the default vault")
            .enable_purge_protection = Some(false);
    });
    let changed_at = OffsetDateTime::now_utc().format(&Rfc3339).expect("a time");
    let (outcome, third) = deliver(&handler, key_near_expiry("memo-3", &changed_at)).await;
    assert!(
        third.iter().any(|r| r == "vault.purge-protection"),
        "the change after the last reads is seen: {outcome}"
    );
    assert!(arm_reads(&handler) > reads, "read again");
}
