//! Said once, through the real binary: an event's alert and the sweep do not repeat each other.
//! A sweep right after an event's alert sends nothing about those findings — no reminder, no
//! digest that only repeats them — and neither does a second sweep; a sweep whose own alert
//! told everything adds no digest; with nothing open there is no digest; `observe` sends
//! nothing at all.
//!
//! The tenant: one CMK workspace whose vault lacks purge protection and whose key is RSA 2048,
//! so one event raises several findings, all routed to Teams (a local sink). A digest is due
//! only once a finding has stayed open and untold for a whole interval: that test moves the
//! stored "last told" time a day back in the handler's SQLite file (the binary has no clock to
//! set), then two sweeps within the interval send one digest. Interval edges are tested with a
//! controlled clock in `plan::digest_window`'s and `act`'s tests.

use azure_sim::Tenant;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{TEAMS_ONLY, several_problems_tenant, workspace_write};
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::Value;

/// The handler in `mode` with Teams configured; the scratch holds its policy file and its
/// state (`state.db`).
async fn start(tenant: Tenant, mode: &str) -> (Handler, Sink, Scratch) {
    start_with_policy(tenant, mode, TEAMS_ONLY).await
}

async fn start_with_policy(tenant: Tenant, mode: &str, policy: &str) -> (Handler, Sink, Scratch) {
    let scratch = Scratch::new("said-once");
    let policy = scratch.write("policy.toml", policy).display().to_string();
    let state = scratch.sqlite_state("state.db");
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        tenant,
        &[
            ("CMKGUARD_MODE", mode),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
        ],
    )
    .await;
    (handler, sink, scratch)
}

/// Moves every stored finding's "last told" time `hours` back, as if that long had passed
/// since people were told (Python's sqlite3, from the tools `scripts/test-tools` installs).
fn told_hours_ago(state: &std::path::Path, hours: i64) {
    let python = cmk_guard_blackbox::repo_root().join(".tools/venv/bin/python");
    assert!(python.is_file(), "run scripts/test-tools");
    let script = "import sqlite3, sys\n\
        db = sqlite3.connect(sys.argv[1], timeout=10)\n\
        db.execute('UPDATE findings SET last_notified = last_notified - ?', (int(sys.argv[2]),))\n\
        db.commit()\n";
    let nanos = hours * 3600 * 1_000_000_000;
    let status = std::process::Command::new(python)
        .args(["-c", script])
        .arg(state)
        .arg(nanos.to_string())
        .status()
        .expect("python");
    assert!(status.success(), "aging the stored findings failed");
}

/// The notify actions of an Outcome (one per message sent, or failed).
fn notifications(outcome: &Value) -> Vec<Value> {
    outcome["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "notify")
        .cloned()
        .collect()
}

fn open_findings(outcome: &Value) -> usize {
    outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["state"] == "open")
        .count()
}

async fn sweep(handler: &Handler) -> Value {
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.outcome().clone()
}

#[tokio::test]
async fn a_sweep_right_after_an_events_alert_sends_nothing_again() {
    let (handler, sink, _scratch) = start(several_problems_tenant(), "alert").await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let event = replies[0].outcome();
    assert!(open_findings(event) >= 2, "several findings: {event}");
    assert_eq!(notifications(event).len(), 1, "one card: {event}");
    assert_eq!(sink.received("teams").len(), 1);

    for sweep_number in 1..=2 {
        let swept = sweep(&handler).await;
        assert_eq!(
            open_findings(&swept),
            open_findings(event),
            "the sweep sees the same findings open: {swept}"
        );
        assert_eq!(
            notifications(&swept),
            Vec::<Value>::new(),
            "sweep {sweep_number}: no reminder, no digest: {swept}"
        );
    }
    assert_eq!(
        sink.received("teams").len(),
        1,
        "only the event's card: {:?}",
        sink.received("teams").last().map(|c| c.body.to_string())
    );
}

#[tokio::test]
async fn a_sweep_that_alerts_new_findings_adds_no_digest_repeating_them() {
    let (handler, sink, _scratch) = start(several_problems_tenant(), "alert").await;
    let first = sweep(&handler).await;
    assert!(open_findings(&first) >= 2, "{first}");
    assert_eq!(
        notifications(&first).len(),
        1,
        "the findings' card and no digest: {first}"
    );
    let second = sweep(&handler).await;
    assert_eq!(notifications(&second), Vec::<Value>::new(), "{second}");
    assert_eq!(sink.received("teams").len(), 1);
}

#[tokio::test]
async fn with_nothing_open_a_sweep_sends_no_digest() {
    let (handler, sink, _scratch) =
        start(Tenant::compliant().expect("compliant tenant"), "alert").await;
    let swept = sweep(&handler).await;
    assert_eq!(open_findings(&swept), 0, "{swept}");
    assert_eq!(notifications(&swept), Vec::<Value>::new(), "{swept}");
    assert_eq!(sink.received("teams").len(), 0);
}

#[tokio::test]
async fn observe_mode_sends_neither_alerts_nor_digests() {
    let (handler, sink, _scratch) = start(several_problems_tenant(), "observe").await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await;
    assert!(open_findings(replies[0].outcome()) >= 2);
    for _ in 0..2 {
        let swept = sweep(&handler).await;
        assert!(open_findings(&swept) >= 2, "{swept}");
        assert_eq!(notifications(&swept), Vec::<Value>::new(), "{swept}");
    }
    assert_eq!(sink.received("teams").len(), 0);
}

#[tokio::test]
async fn a_finding_untold_for_a_day_gets_one_digest_however_many_sweeps_that_day() {
    // Reminders every two days, so that a day later only the digest is due.
    let policy = format!("{TEAMS_ONLY}reminder_hours = 48\n");
    let (handler, sink, scratch) =
        start_with_policy(several_problems_tenant(), "alert", &policy).await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await;
    assert_eq!(notifications(replies[0].outcome()).len(), 1);
    told_hours_ago(&scratch.join("state.db"), 25);

    let digests = |outcome: &Value| {
        notifications(outcome)
            .iter()
            .filter(|a| a["rule"] == "digest")
            .count()
    };
    let first = sweep(&handler).await;
    assert_eq!(notifications(&first).len(), 1, "{first}");
    assert_eq!(digests(&first), 1, "the day's digest: {first}");
    let second = sweep(&handler).await;
    assert_eq!(
        notifications(&second),
        Vec::<Value>::new(),
        "the same day: {second}"
    );
    assert_eq!(
        sink.received("teams").len(),
        2,
        "the event's card, one digest"
    );
}
