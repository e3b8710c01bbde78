//! The sweep fanned out over a Storage queue (`CMKGUARD_SWEEP_QUEUE`), through the real binary
//! and Azurite's queue service, driven like the Functions host's queue trigger: the Sweep
//! function enqueues one message per subscription, two instances sharing one state store sweep
//! them, every workspace once, and exactly one digest goes out, built from the store; a
//! message the host gave up on (the poison queue) is a `guard.visibility` finding at the next
//! sweep; a subscription whose budget runs out continues in a new message; a hostile message
//! is refused; without a queue the Sweep function does it all.

use std::collections::BTreeMap;
use std::time::Duration;

use azure_sim::{Fault, KeySpec, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::azurite_queue::{AzuriteQueue, Delivery, QueueHost};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::{Handler, timer_envelope};
use serde_json::{Value, json};

const SUBS: [&str; 3] = [
    "5a1e0f9b-0000-4000-8000-00000000f001",
    "5a1e0f9b-0000-4000-8000-00000000f002",
    "5a1e0f9b-0000-4000-8000-00000000f003",
];
/// In the tenant, outside the allowlist.
const OUTSIDE: &str = "5a1e0f9b-0000-4000-8000-00000000f0ff";
const WORKSPACES_PER_SUB: usize = 3;
/// Everything to Teams; reminders every two days, so that a day later only the digest is due.
const POLICY: &str = "[notify]\nteams = [\"critical\", \"high\", \"medium\", \"low\"]\nemail = []\nreminder_hours = 48\n";

/// Three workspaces per subscription; the first of each uses a vault without purge protection.
fn tenant() -> Tenant {
    tenant_with(WORKSPACES_PER_SUB)
}

/// As [`tenant`], with `first` workspaces in the first subscription.
fn tenant_with(first: usize) -> Tenant {
    let mut builder = Tenant::builder();
    for (n, sub) in SUBS.iter().chain([&OUTSIDE]).enumerate() {
        // Vault names are global in Azure, so each subscription has its own.
        let (ok, drift) = (format!("kv-ok-{n}"), format!("kv-drift-{n}"));
        builder = builder
            .subscription(sub)
            .vault(VaultSpec::new(sub, "rg", &ok).key(KeySpec::rsa("key", 3072)))
            .vault(
                VaultSpec::new(sub, "rg", &drift)
                    .purge_protection(None)
                    .key(KeySpec::rsa("key", 3072)),
            );
        let count = if n == 0 { first } else { WORKSPACES_PER_SUB };
        for i in 0..count {
            let vault = if i == 0 { &drift } else { &ok };
            builder = builder
                .workspace(WorkspaceSpec::new(sub, "rg", &format!("ws-{i}")).cmk(vault, "key"));
        }
    }
    builder.build().expect("tenant")
}

/// Azurite's queue service with the queue created, one SQLite state file that every instance
/// shares, and the variables every instance gets.
struct Deployment {
    queue: AzuriteQueue,
    name: String,
    sink: Sink,
    scratch: Scratch,
    env: Vec<(String, String)>,
}

impl Deployment {
    async fn start(with_queue: bool) -> Self {
        let queue = AzuriteQueue::start().await;
        let name = format!("sweep-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        queue.create_queue(&name).await;
        queue.create_queue(&format!("{name}-poison")).await;
        let sink = Sink::start().await;
        let scratch = Scratch::new("fanout");
        let policy = scratch.write("policy.toml", POLICY).display().to_string();
        let mut env = vec![
            ("CMKGUARD_MODE".to_owned(), "alert".to_owned()),
            (
                "CMKGUARD_STATE".to_owned(),
                scratch.sqlite_state("state.db"),
            ),
            ("CMKGUARD_POLICY_FILE".to_owned(), policy),
            ("CMKGUARD_TEAMS_WEBHOOK_URL".to_owned(), sink.url("teams")),
            ("CMKGUARD_SUBSCRIPTIONS".to_owned(), SUBS.join(",")),
        ];
        if with_queue {
            env.push(("CMKGUARD_SWEEP_QUEUE".to_owned(), name.clone()));
            env.push((
                "AzureWebJobsStorage__queueServiceUri".to_owned(),
                queue.service_sas_url(),
            ));
        }
        Deployment {
            queue,
            name,
            sink,
            scratch,
            env,
        }
    }

    /// Moves every stored finding's last notification `hours` back, as if told that long ago.
    fn told_hours_ago(&self, hours: i64) {
        let python = cmk_guard_blackbox::repo_root().join(".tools/venv/bin/python");
        assert!(python.is_file(), "run scripts/test-tools");
        let script = "import sqlite3, sys\n\
            db = sqlite3.connect(sys.argv[1], timeout=10)\n\
            db.execute('UPDATE findings SET last_notified = last_notified - ?', (int(sys.argv[2]),))\n\
            db.commit()\n";
        let status = std::process::Command::new(python)
            .args(["-c", script])
            .arg(self.scratch.join("state.db"))
            .arg((hours * 3600 * 1_000_000_000).to_string())
            .status()
            .expect("python");
        assert!(status.success(), "aging the stored findings failed");
    }

    async fn instance(&self) -> Handler {
        self.instance_with(tenant(), &[]).await
    }

    async fn instance_with(&self, tenant: Tenant, extra: &[(&str, &str)]) -> Handler {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied())
            .collect();
        Handler::start_with(tenant, &env).await
    }

    fn host(&self) -> QueueHost<'_> {
        QueueHost {
            queue: &self.queue,
            name: self.name.clone(),
            function: "SweepSubscription",
            binding: "message",
            max_dequeue_count: 5,
            visibility: 1,
        }
    }
}

async fn sweep(handler: &Handler) -> Value {
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.outcome().clone()
}

fn digests(outcome: &Value) -> usize {
    outcome["actions"]
        .as_array()
        .map(|actions| actions.iter().filter(|a| a["rule"] == "digest").count())
        .unwrap_or_default()
}

/// One fanned-out run over `handlers`: the Sweep on the first, then the queue host.
async fn run(deployment: &Deployment, handlers: &[&Handler]) -> Vec<Delivery> {
    let fanned = sweep(handlers[0]).await;
    assert!(
        fanned["reason"]
            .as_str()
            .is_some_and(|r| r.contains("3 subscriptions enqueued")),
        "{fanned}"
    );
    assert_eq!(
        fanned["workspaces"],
        json!([]),
        "the Sweep itself reads no workspace"
    );
    assert_eq!(deployment.queue.peek(&deployment.name).await.len(), 3);
    let deliveries = deployment.host().run(handlers).await;
    assert_eq!(
        deliveries.len(),
        3,
        "one delivery per subscription, none retried"
    );
    for delivery in &deliveries {
        assert_eq!(delivery.reply.status, 200, "{:?}", delivery.reply.body);
        assert_eq!(delivery.reply.outcome()["disposition"], "evaluated");
    }
    deliveries
}

#[tokio::test]
async fn three_subscriptions_over_two_instances_sweep_each_workspace_once_with_one_digest() {
    let deployment = Deployment::start(true).await;
    let a = deployment.instance().await;
    let b = deployment.instance().await;

    let first = run(&deployment, &[&a, &b]).await;
    assert!(
        first.iter().any(|d| d.instance == 0) && first.iter().any(|d| d.instance == 1),
        "both instances worked"
    );
    let mut swept: BTreeMap<String, usize> = BTreeMap::new();
    for delivery in &first {
        let outcome = delivery.reply.outcome();
        for workspace in outcome["workspaces"].as_array().into_iter().flatten() {
            let workspace = workspace.as_str().unwrap_or_default().to_ascii_lowercase();
            *swept.entry(workspace).or_default() += 1;
        }
    }
    assert_eq!(swept.len(), SUBS.len() * WORKSPACES_PER_SUB, "{swept:?}");
    assert!(
        swept.values().all(|n| *n == 1),
        "each workspace once: {swept:?}"
    );
    assert!(
        swept.keys().all(|w| !w.contains(OUTSIDE)),
        "nothing outside the allowlist: {swept:?}"
    );
    let digest_count: usize = first.iter().map(|d| digests(d.reply.outcome())).sum();
    assert_eq!(digest_count, 0, "the run's own alerts told everything");
    let cards = deployment.sink.received("teams").len();
    assert!(cards >= 1, "the new findings were told");

    // A day later the findings are still open and untold for a day: the next run sends one
    // digest, from whichever invocation finished last, counting every subscription's finding
    // although that invocation saw only its own.
    deployment.told_hours_ago(25);
    let second = run(&deployment, &[&a, &b]).await;
    let digest_count: usize = second.iter().map(|d| digests(d.reply.outcome())).sum();
    assert_eq!(digest_count, 1, "one digest for the run");
    let received = deployment.sink.received("teams");
    assert_eq!(received.len(), cards + 1, "only the digest reached Teams");
    let digest = received[cards].body.to_string();
    for n in 0..SUBS.len() {
        assert!(digest.contains(&format!("kv-drift-{n}")), "{digest}");
    }
}

#[tokio::test]
async fn a_subscription_whose_budget_runs_out_continues_in_a_new_message() {
    const BIG: usize = 40;
    let deployment = Deployment::start(true).await;
    let handler = deployment
        .instance_with(tenant_with(BIG), &[("CMKGUARD_SWEEP_BUDGET_SECONDS", "1")])
        .await;
    // Every request to Azure takes longer than the budget, and a chunk of workspaces (32
    // read at once) needs at least one, so a subscription of more than one chunk cannot be
    // done in one invocation, however fast the machine.
    handler
        .sim
        .add_fault(Fault::on_everything().latency(Duration::from_millis(1100)));
    sweep(&handler).await;
    let deliveries = deployment.host().run(&[&handler]).await;
    let big: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.message.contains(SUBS[0]))
        .collect();
    assert!(big.len() >= 2, "continued: {big:?}");
    let first = big[0].reply.outcome();
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("budget ran out")),
        "{first}"
    );
    assert!(!big[0].message.contains("\"after\""), "{}", big[0].message);
    assert!(
        big[1..].iter().all(|d| d.message.contains("\"after\"")),
        "the continuations resume after a workspace"
    );
    let mut swept: BTreeMap<String, usize> = BTreeMap::new();
    for delivery in &deliveries {
        assert_eq!(delivery.reply.status, 200, "{:?}", delivery.reply.body);
        let outcome = delivery.reply.outcome();
        for workspace in outcome["workspaces"].as_array().into_iter().flatten() {
            let workspace = workspace.as_str().unwrap_or_default().to_ascii_lowercase();
            *swept.entry(workspace).or_default() += 1;
        }
    }
    assert_eq!(swept.len(), BIG + 2 * WORKSPACES_PER_SUB, "{swept:?}");
    assert!(
        swept.values().all(|n| *n == 1),
        "each workspace once: {swept:?}"
    );
}

#[tokio::test]
async fn a_subscription_the_host_gave_up_on_is_reported_at_the_next_sweep() {
    let deployment = Deployment::start(true).await;
    let handler = deployment.instance().await;
    // What the host leaves after maxDequeueCount failed deliveries: the message, unchanged,
    // on `<queue>-poison`.
    let message = json!({"run": "run-1", "subscription": SUBS[1], "index": 1, "of": 3}).to_string();
    let poison = format!("{}-poison", deployment.name);
    deployment.queue.send_base64(&poison, &message).await;

    let outcome = sweep(&handler).await;
    let findings: Vec<&Value> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility")
        .collect();
    assert_eq!(findings.len(), 1, "{outcome}");
    assert_eq!(
        findings[0]["resource"],
        format!("/subscriptions/{}", SUBS[1])
    );
    assert!(
        findings[0]["expected"]
            .as_str()
            .is_some_and(|e| e.contains("SweepSubscription")),
        "says what to do: {}",
        findings[0]
    );
    assert!(
        deployment.queue.peek(&poison).await.is_empty(),
        "reported once, then removed"
    );
    // The subscription is enqueued again with the others.
    assert_eq!(deployment.queue.peek(&deployment.name).await.len(), 3);
    let again = sweep(&handler).await;
    assert!(
        again["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|f| f["rule"] != "guard.visibility"),
        "{again}"
    );
}

#[tokio::test]
async fn subscriptions_that_keep_failing_go_to_the_poison_queue_and_are_reported() {
    let deployment = Deployment::start(true).await;
    let handler = deployment.instance().await;
    // Listing a subscription's workspaces is refused: every delivery fails (503).
    let fault = handler
        .sim
        .add_fault(Fault::on_operation("ResourceGraph_Resources").status(403));
    sweep(&handler).await;
    let host = QueueHost {
        max_dequeue_count: 2,
        ..deployment.host()
    };
    let deliveries = host.run(&[&handler]).await;
    assert_eq!(deliveries.len(), SUBS.len() * 2, "each delivered twice");
    assert!(
        deliveries.iter().all(|d| d.reply.status == 503),
        "{deliveries:?}"
    );
    let poison = host.poison();
    assert_eq!(deployment.queue.peek(&poison).await.len(), SUBS.len());

    handler.sim.remove_fault(fault);
    let outcome = sweep(&handler).await;
    let mut reported: Vec<String> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility")
        .filter_map(|f| f["resource"].as_str().map(str::to_owned))
        .collect();
    reported.sort();
    let expected: Vec<String> = SUBS.iter().map(|s| format!("/subscriptions/{s}")).collect();
    assert_eq!(reported, expected, "{outcome}");
    assert!(deployment.queue.peek(&poison).await.is_empty());
}

#[tokio::test]
async fn hostile_messages_are_refused_and_not_retried() {
    let deployment = Deployment::start(true).await;
    let handler = deployment.instance().await;
    let queue = &deployment.queue;
    let name = &deployment.name;
    let outside = json!({"run": "r", "subscription": OUTSIDE, "index": 0, "of": 1}).to_string();
    queue.send_base64(name, &outside).await;
    queue
        .send_base64(name, "{\"run\": \"r\", \"subscription\": \"../../x\"}")
        .await;
    queue.send_base64(name, &"A".repeat(20_000)).await;
    queue.send_text(name, "not base64 !").await;

    let deliveries = deployment.host().run(&[&handler]).await;
    assert_eq!(deliveries.len(), 4, "each delivered once");
    let mut reasons = Vec::new();
    for delivery in &deliveries {
        assert_eq!(delivery.reply.status, 200, "answered, so not retried");
        let outcome = delivery.reply.outcome();
        assert_eq!(outcome["disposition"], "rejected", "{outcome}");
        assert_eq!(outcome["workspaces"], json!([]));
        let reason = outcome["reason"].as_str().unwrap_or_default().to_owned();
        assert!(!reason.is_empty() && reason.len() < 300, "{reason}");
        reasons.push(reason);
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(OUTSIDE) && r.contains("not in scope")),
        "{reasons:?}"
    );
    let read = handler.sim.counters().by_resource;
    assert!(
        read.keys().all(|resource| !resource.contains(OUTSIDE)),
        "nothing read in the subscription out of scope: {read:?}"
    );
    assert!(queue.peek(name).await.is_empty());
    assert!(queue.peek(&format!("{name}-poison")).await.is_empty());
}

#[tokio::test]
async fn without_a_queue_the_sweep_function_does_the_whole_sweep() {
    let deployment = Deployment::start(false).await;
    let handler = deployment.instance().await;
    let outcome = sweep(&handler).await;
    let swept = outcome["workspaces"].as_array().map(Vec::len);
    assert_eq!(swept, Some(SUBS.len() * WORKSPACES_PER_SUB), "{outcome}");
    assert_eq!(
        digests(&outcome),
        0,
        "its own alerts told everything: {outcome}"
    );
    assert!(outcome["reason"].is_null(), "{outcome}");
    assert!(deployment.queue.peek(&deployment.name).await.is_empty());
}
