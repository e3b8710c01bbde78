//! Reliability through the real binary (docs/architecture.md, *Quality bars*, Reliability):
//!
//! - a fault matrix on every kind of Azure call a relevant event makes (Resource Graph, the
//!   workspace, the vault, the key version, the role assignments): 429 with `Retry-After`, 500
//!   and 503 are retried within the budget; throttling, 5xx and timeouts past the budget fail
//!   the invocation (503, so Event Grid redelivers); 403 is acknowledged with a
//!   `guard.visibility` finding — and in every case the next sweep (`cmk-guard scan`, once the
//!   fault is gone) finds the real finding: nothing is lost;
//! - connection resets (a proxy in front of azure-sim resets new connections; the simulator
//!   itself cannot reset one) are retried;
//! - one event delivered twenty times, concurrently, to two instances sharing one SQLite file
//!   → one remediation and one alert;
//! - the process killed (SIGKILL) while its remediation write is in flight, restarted on the
//!   same state → exactly one write, the finding resolved, no second action;
//! - an unreachable state store → a transient failure (non-2xx), not a crash; the process keeps
//!   serving.
//!
//! The tenant, events and policy are the story's (`cmk_guard_blackbox::story`): one CMK
//! workspace whose vault lacks purge protection, the finding every delivery must report.

use std::io::Read;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_sim::{Fault, KeySpec, RecordFilter, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{
    FINDING, KEY, RG, SUB, VAULT, WORKSPACE, key_near_expiry, policy_file, tenant, workspace_id,
    workspace_write, writes,
};
use cmk_guard_blackbox::{Handler, binary, envelope, free_port, spawn};
use serde_json::{Value, json};

const VISIBILITY: &str = "guard.visibility";

/// The Azure calls a Key Vault event costs, by the simulator's operation name: resolve
/// (Resource Graph), then the workspace, then its vault, key version and role assignments.
const CALLS: [&str; 5] = [
    "ResourceGraph_Resources",
    "Workspaces_Get",
    "Vaults_Get",
    "Keys_GetVersion",
    "RoleAssignments_ListForScope",
];

/// A `CMKGUARD_STATE` for a SQLite file in `scratch`, for instances that share it.
fn state_file(scratch: &Scratch) -> String {
    scratch.sqlite_state("state.db")
}

/// The rule ids of an Outcome's findings.
fn rules(outcome: &Value) -> Vec<String> {
    outcome["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The statuses the simulator answered for `operation`, in order.
fn statuses(sim: &Sim, operation: &str) -> Vec<u16> {
    sim.requests(&RecordFilter {
        operation: Some(operation.to_owned()),
        ..RecordFilter::default()
    })
    .iter()
    .map(|r| r.status)
    .collect()
}

/// The next sweep: `cmk-guard scan` over the simulator, as JSON; it must finish.
async fn sweep(sim: &Sim) -> Value {
    let output = tokio::process::Command::new(binary())
        .args(["scan", "--format", "json"])
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run cmk-guard scan");
    assert_eq!(
        output.status.code(),
        Some(0),
        "scan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("scan prints JSON")
}

/// Asserts that the sweep, with every fault gone, reports the real finding and nothing unseen.
async fn nothing_lost(sim: &Sim, case: &str) {
    sim.clear_faults();
    let outcome = sweep(sim).await;
    let found = rules(&outcome);
    assert!(
        found.contains(&FINDING.to_owned()),
        "{case}: the sweep lost the finding: {outcome}"
    );
    assert!(
        !found.contains(&VISIBILITY.to_owned()),
        "{case}: the sweep could not read everything: {outcome}"
    );
}

/// Hits of the simulator's fault rules.
fn fault_hits(sim: &Sim) -> u32 {
    sim.faults().iter().map(|f| f.hits).sum()
}

/// Runs one fault case per kind of Azure call, concurrently, each on its own handler and
/// simulator: `faults(call)` are installed, one `KeyNearExpiry` is delivered, and `check`
/// judges the reply; then the next sweep must find everything.
async fn on_every_call(faults: fn(&str) -> Vec<Fault>, check: fn(&str, &Handler, u16, &Value)) {
    let cases = CALLS.iter().map(|call| async move {
        let handler = Handler::start_with(tenant(), &[]).await;
        for fault in faults(call) {
            handler.sim.add_fault(fault);
        }
        let reply = handler
            .deliver("OnKeyVaultEvent", "event", &[key_near_expiry()])
            .await
            .remove(0);
        assert!(
            fault_hits(&handler.sim) > 0,
            "{call}: the call was not made"
        );
        check(call, &handler, reply.status, reply.outcome());
        nothing_lost(&handler.sim, call).await;
    });
    futures_util::future::join_all(cases).await;
}

#[tokio::test]
async fn throttling_and_server_errors_on_every_kind_of_call_are_retried_within_the_budget() {
    on_every_call(
        |call| {
            vec![
                Fault::on_operation(call).throttle(1).times(1),
                Fault::on_operation(call).status(500).times(1),
                Fault::on_operation(call).status(503).times(1),
            ]
        },
        |call, handler, status, outcome| {
            assert_eq!(status, 200, "{call}: {outcome}");
            assert_eq!(outcome["disposition"], "evaluated", "{call}");
            let found = rules(outcome);
            assert!(found.contains(&FINDING.to_owned()), "{call}: {outcome}");
            assert!(!found.contains(&VISIBILITY.to_owned()), "{call}: {outcome}");
            let seen = statuses(&handler.sim, call);
            assert_eq!(seen[..3], [429, 500, 503], "{call}: {seen:?}");
            assert!(seen[3..].iter().all(|s| *s == 200), "{call}: {seen:?}");
        },
    )
    .await;
}

/// A transient failure that outlasts the budget: 503 to the host at once (Retry-After lies
/// past the budget, so waiting would be pointless), exactly one request.
fn fails_for_redelivery(call: &str, handler: &Handler, status: u16, outcome: &Value) {
    assert_eq!(status, 503, "{call}: Event Grid must redeliver: {outcome}");
    assert_eq!(
        statuses(&handler.sim, call).len(),
        1,
        "{call}: no retry that would end past the budget"
    );
}

#[tokio::test]
async fn throttling_past_the_budget_fails_the_invocation_and_the_next_sweep_finds_everything() {
    on_every_call(
        |call| vec![Fault::on_operation(call).throttle(120)],
        fails_for_redelivery,
    )
    .await;
}

#[tokio::test]
async fn unavailability_past_the_budget_fails_the_invocation_and_the_next_sweep_finds_everything() {
    on_every_call(
        |call| {
            let mut fault = Fault::on_operation(call).status(503);
            fault.retry_after = Some(120);
            vec![fault]
        },
        fails_for_redelivery,
    )
    .await;
}

#[tokio::test]
async fn persistent_server_errors_fail_the_invocation_after_the_retries_and_the_next_sweep_finds_everything()
 {
    on_every_call(
        |call| vec![Fault::on_operation(call).status(500)],
        |call, handler, status, outcome| {
            assert_eq!(status, 503, "{call}: Event Grid must redeliver: {outcome}");
            assert!(
                statuses(&handler.sim, call).len() > 1,
                "{call}: a 500 is retried"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_redelivery_after_a_failed_read_asks_azure_again() {
    // A failed read is not cached: the redelivery, as soon as Azure answers again, succeeds
    // instead of repeating the failure it remembers. (A 503 with a long Retry-After fails at
    // once, well inside the cache's lifetime.)
    let cases = CALLS.iter().map(|call| async move {
        let handler = Handler::start_with(tenant(), &[]).await;
        let mut fault = Fault::on_operation(call).status(503);
        fault.retry_after = Some(120);
        handler.sim.add_fault(fault);
        let event = key_near_expiry();
        let first = handler
            .deliver("OnKeyVaultEvent", "event", std::slice::from_ref(&event))
            .await
            .remove(0);
        assert_eq!(first.status, 503, "{call}: {}", first.outcome());
        handler.sim.clear_faults();
        let again = handler
            .deliver("OnKeyVaultEvent", "event", &[event])
            .await
            .remove(0);
        assert_eq!(again.status, 200, "{call}: {}", again.outcome());
        assert!(
            rules(again.outcome()).contains(&FINDING.to_owned()),
            "{call}: {}",
            again.outcome()
        );
        let mut seen = statuses(&handler.sim, call);
        if *call == "ResourceGraph_Resources" {
            // The alert's dependency counts (who-uses) query Resource Graph once more.
            seen.truncate(2);
        }
        assert_eq!(seen, vec![503, 200], "{call}: read again");
    });
    futures_util::future::join_all(cases).await;
}

#[tokio::test]
async fn a_stale_resource_graph_row_does_not_decide_which_key_is_checked() {
    // Resource Graph lags behind ARM. The workspace moved to another key, a disabled one, after
    // its row was indexed: the key chain the row names is read early, but the workspace read
    // through ARM names the new key, and that is the one checked (azure-notes Trap T19).
    const NEXT: &str = "cmk-next";
    let tenant = Tenant::builder()
        .subscription(SUB)
        .vault(
            VaultSpec::new(SUB, RG, VAULT)
                .key(KeySpec::rsa(KEY, 3072))
                .key(KeySpec::rsa(NEXT, 3072).disabled()),
        )
        .workspace(WorkspaceSpec::new(SUB, RG, WORKSPACE).cmk(VAULT, KEY))
        .build()
        .expect("tenant");
    let handler = Handler::start_with(tenant, &[]).await;
    handler.sim.freeze_resource_graph();
    handler.sim.tenant_mut(|t| {
        let ws = t
            .workspaces
            .iter_mut()
            .find(|w| w.name == WORKSPACE)
            .expect("the workspace");
        let encryption = ws.encryption.as_mut().expect("a CMK workspace");
        encryption.key_identifier = format!("https://{VAULT}.vault.azure.net/keys/{NEXT}");
    });
    let reply = handler
        .deliver("OnKeyVaultEvent", "event", &[key_near_expiry()])
        .await
        .remove(0);
    let outcome = reply.outcome();
    assert_eq!(reply.status, 200, "{outcome}");
    let disabled: Vec<&Value> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "key.enabled")
        .collect();
    assert_eq!(disabled.len(), 1, "the new key is checked: {outcome}");
    assert!(
        disabled[0]["resource"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("/keys/{NEXT}"))),
        "{outcome}"
    );
    let key_reads: Vec<String> = handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| r.operation == "Keys_Get")
        .map(|r| r.path)
        .collect();
    assert!(
        key_reads
            .iter()
            .any(|p| p.ends_with(&format!("/keys/{KEY}"))),
        "the row's key was read early: {key_reads:?}"
    );
    assert!(
        key_reads
            .iter()
            .any(|p| p.ends_with(&format!("/keys/{NEXT}"))),
        "then the workspace's own: {key_reads:?}"
    );
}

#[tokio::test]
async fn timeouts_on_every_kind_of_call_fail_the_invocation_and_the_next_sweep_finds_everything() {
    // The call hangs past the invocation's 25 s budget: the handler stops waiting and fails.
    on_every_call(
        |call| {
            vec![
                Fault::on_operation(call)
                    .latency(Duration::from_secs(40))
                    .times(1),
            ]
        },
        |call, _handler, status, outcome| {
            assert_eq!(status, 503, "{call}: Event Grid must redeliver: {outcome}");
        },
    )
    .await;
}

#[tokio::test]
async fn permanent_failures_on_every_kind_of_call_are_acknowledged_with_a_visibility_finding() {
    on_every_call(
        |call| vec![Fault::on_operation(call).status(403)],
        |call, handler, status, outcome| {
            assert_eq!(status, 200, "{call}: not redelivered: {outcome}");
            assert_eq!(outcome["disposition"], "evaluated", "{call}");
            assert!(
                rules(outcome).contains(&VISIBILITY.to_owned()),
                "{call}: what could not be read is reported: {outcome}"
            );
            assert_eq!(
                statuses(&handler.sim, call),
                vec![403],
                "{call}: not retried"
            );
        },
    )
    .await;
}

/// A cmk-guard process started by the test itself, so that it can be killed with SIGKILL and
/// started again against the same simulator and state.
struct Instance {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Instance {
    async fn start(env: &[(String, String)]) -> Instance {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let http = cmk_guard_blackbox::http_client()
            .build()
            .expect("http client");
        // A port found free can be taken by another process before the child binds it: then
        // the child exits, and the next attempt takes another port.
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(port, &pairs, &["serve"]);
            for out in [
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|e| Box::new(e) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                std::thread::spawn(move || {
                    let mut out = out;
                    let _ = std::io::copy(&mut out, &mut std::io::sink());
                });
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // Our child must be the listener: another process may hold the port.
                if http
                    .get(format!("http://127.0.0.1:{port}/"))
                    .send()
                    .await
                    .is_ok()
                    && cmk_guard_blackbox::listens_on(child.id(), port)
                {
                    return Instance { child, port, http };
                }
                assert!(Instant::now() < deadline, "cmk-guard did not become ready");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!("cmk-guard exited at start three times");
    }

    /// Delivers one event; `Err` when the process died before answering.
    async fn deliver(&self, event: &Value) -> Result<(u16, Value), reqwest::Error> {
        deliver_to(&self.http, self.port, event).await
    }

    async fn evaluate_read_only(&self) -> Value {
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/api/evaluate", self.port))
            .json(&json!({"resource": workspace_id()}))
            .send()
            .await
            .expect("evaluate");
        response.json().await.expect("evaluate answers JSON")
    }

    /// SIGKILL: no chance to clean up, like a host that loses the instance.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn deliver_to(
    http: &reqwest::Client,
    port: u16,
    event: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = http
        .post(format!("http://127.0.0.1:{port}/OnSubscriptionEvent"))
        .header("Content-Type", "application/json")
        .body(envelope("event", event, "OnSubscriptionEvent"))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    Ok((status, body["ReturnValue"].clone()))
}

/// A TCP proxy in front of the simulator that resets (RST) the first `resets` connections it
/// accepts and forwards the rest.
async fn resetting_proxy(target: u16, resets: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if counter.load(Ordering::SeqCst) < resets {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = inbound.set_zero_linger();
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, done)
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("start azure-sim");
    let resets = 3;
    let (proxy, reset) = resetting_proxy(sim.https_port(), resets).await;
    let mut env = sim.handler_env();
    env.retain(|(k, _)| k != "CMKGUARD_CONNECT_TO");
    env.push((
        "CMKGUARD_CONNECT_TO".into(),
        format!("management.azure.com=127.0.0.1:{proxy},vault.azure.net=127.0.0.1:{proxy}"),
    ));
    let scratch = Scratch::new("reliability");
    env.push(("CMKGUARD_STATE".into(), state_file(&scratch)));
    let instance = Instance::start(&env).await;
    let (status, outcome) = instance
        .deliver(&workspace_write())
        .await
        .expect("an answer");
    assert_eq!(reset.load(Ordering::SeqCst), resets, "the proxy reset");
    assert_eq!(status, 200, "{outcome}");
    let found = rules(&outcome);
    assert!(found.contains(&FINDING.to_owned()), "{outcome}");
    assert!(!found.contains(&VISIBILITY.to_owned()), "{outcome}");
}

/// Delivers `event` as `plan` says (true: to `a`), concurrently, like Event Grid: what failed
/// (503: another delivery holds the event) is delivered again after a pause until every
/// delivery succeeded. Returns how many deliveries were evaluated rather than found duplicate.
async fn deliver_until_acknowledged(
    a: &Handler,
    b: &Handler,
    event: &Value,
    plan: &[bool],
) -> usize {
    let mut pending = plan.to_vec();
    let mut evaluated = 0;
    for _round in 0..100 {
        if pending.is_empty() {
            break;
        }
        let deliveries = pending.iter().map(|to_a| {
            let handler = if *to_a { a } else { b };
            let event = event.clone();
            async move {
                let reply = handler
                    .deliver("OnSubscriptionEvent", "event", &[event])
                    .await
                    .remove(0);
                (*to_a, reply)
            }
        });
        let replies = futures_util::future::join_all(deliveries).await;
        pending = replies
            .iter()
            .filter(|(_, r)| r.status != 200)
            .map(|(to_a, _)| *to_a)
            .collect();
        for (_, reply) in replies.iter().filter(|(_, r)| r.status == 200) {
            match reply.outcome()["disposition"].as_str() {
                Some("evaluated") => evaluated += 1,
                Some("duplicate") => {}
                other => panic!("unexpected disposition {other:?}: {:?}", reply.body),
            }
        }
        if !pending.is_empty() {
            // Event Grid waits before it delivers again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(pending.is_empty(), "every delivery eventually succeeded");
    evaluated
}

/// Two instances in remediate mode sharing one SQLite file, each with its own simulator (so
/// the writes of both add up), and one Teams sink.
struct SharingSqlite {
    a: Handler,
    b: Handler,
    sink: Sink,
    /// The policy and the shared state: dropped last, once both processes are gone.
    _scratch: Scratch,
}

async fn two_instances_sharing_sqlite() -> SharingSqlite {
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let scratch = Scratch::new("reliability");
    let policy = policy_file(&scratch);
    let state = state_file(&scratch);
    let env = [
        ("CMKGUARD_MODE", "remediate"),
        ("CMKGUARD_POLICY_FILE", policy.as_str()),
        ("CMKGUARD_STATE", state.as_str()),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
    ];
    let a = Handler::start_with(tenant(), &env).await;
    let b = Handler::start_with(tenant(), &env).await;
    SharingSqlite {
        a,
        b,
        sink,
        _scratch: scratch,
    }
}

#[tokio::test]
async fn duplicates_racing_across_two_instances_sharing_a_sqlite_file_remediate_and_alert_once() {
    let shared = two_instances_sharing_sqlite().await;
    let event = workspace_write();
    // Ten rounds of one delivery to each instance at the same moment.
    for _round in 0..10 {
        deliver_until_acknowledged(&shared.a, &shared.b, &event, &[true, false]).await;
    }
    let mut all_writes = writes(&shared.a.sim);
    all_writes.extend(writes(&shared.b.sim));
    assert_eq!(all_writes.len(), 1, "one remediation: {all_writes:?}");
    assert_eq!(
        shared.sink.received("teams").len(),
        1,
        "exactly one Teams card"
    );
}

#[tokio::test]
async fn twenty_concurrent_deliveries_to_two_instances_sharing_a_sqlite_file_remediate_and_alert_once()
 {
    let shared = two_instances_sharing_sqlite().await;
    let plan: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
    let evaluated =
        deliver_until_acknowledged(&shared.a, &shared.b, &workspace_write(), &plan).await;
    let mut all_writes = writes(&shared.a.sim);
    all_writes.extend(writes(&shared.b.sim));
    assert_eq!(all_writes.len(), 1, "one remediation: {all_writes:?}");
    assert_eq!(
        shared.sink.received("teams").len(),
        1,
        "exactly one Teams card"
    );
    assert_eq!(evaluated, 1, "the event was handled once");
}

/// A simulator and the environment of a remediating instance with its own SQLite file, which
/// a restarted instance reuses; the file lives in the scratch directory returned with them,
/// which must outlive the instances.
async fn remediating_setup() -> (Sim, Vec<(String, String)>, Scratch) {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("start azure-sim");
    let scratch = Scratch::new("reliability");
    let mut env = sim.handler_env();
    env.extend([
        ("CMKGUARD_MODE".to_owned(), "remediate".to_owned()),
        ("CMKGUARD_POLICY_FILE".to_owned(), policy_file(&scratch)),
        ("CMKGUARD_STATE".to_owned(), state_file(&scratch)),
    ]);
    (sim, env, scratch)
}

/// Longer than any test runs: a request caught by a fault with this latency is still hanging
/// when the test kills the process that sent it, however slow the machine.
const HANG: Duration = Duration::from_secs(600);

/// Waits until the fault rule `id` has caught a request (which then hangs in the simulator).
async fn caught(sim: &Sim, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sim.faults().iter().any(|f| f.id == id && f.hits > 0) {
        assert!(Instant::now() < deadline, "the request never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Delivers in the background; the answer is an error when the process dies first.
fn deliver_in_background(
    instance: &Instance,
    event: &Value,
) -> tokio::task::JoinHandle<Result<(u16, Value), reqwest::Error>> {
    let (http, port, event) = (instance.http.clone(), instance.port, event.clone());
    tokio::spawn(async move { deliver_to(&http, port, &event).await })
}

/// True when an Outcome reports a remediation this invocation applied.
fn applied(outcome: &Value) -> bool {
    outcome["actions"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["kind"] == "remediate" && a["result"] == "applied")
    })
}

#[tokio::test]
async fn killed_after_its_remediation_write_landed_the_restarted_process_finds_it_done() {
    let (sim, env, _scratch) = remediating_setup().await;
    // Reads of the vault before the write (observe, the remediation's re-read) pass; the read
    // that verifies the write hangs: the write has landed, the process has not recorded it.
    sim.add_fault(Fault::on_operation("Vaults_Get").times(2));
    let verify = sim.add_fault(Fault::on_operation("Vaults_Get").latency(HANG).times(1));
    let mut first = Instance::start(&env).await;
    let event = workspace_write();
    let delivery = deliver_in_background(&first, &event);
    caught(&sim, verify).await;
    assert_eq!(
        statuses(&sim, "Vaults_Update"),
        vec![200],
        "the write landed"
    );
    first.kill();
    let answered = delivery.await.expect("delivery task");
    assert!(
        answered.is_err(),
        "the killed process answered: {answered:?}"
    );

    let second = Instance::start(&env).await;
    // Event Grid redelivers the event that got no answer: the dead instance's claim on it
    // still holds, so the redelivery must not act (it fails, to come back later).
    let (status, outcome) = second.deliver(&event).await.expect("an answer");
    assert!(status == 503 || !applied(&outcome), "{status}: {outcome}");
    // The next change (or the sweep) re-reads the vault: already compliant, nothing to do.
    let (status, outcome) = second.deliver(&workspace_write()).await.expect("an answer");
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["disposition"], "evaluated");
    assert!(!applied(&outcome), "{outcome}");
    assert!(
        !rules(&outcome).contains(&FINDING.to_owned()),
        "the finding is resolved: {outcome}"
    );
    assert!(
        !rules(&second.evaluate_read_only().await).contains(&FINDING.to_owned()),
        "Azure complies"
    );
    assert_eq!(
        writes(&sim),
        vec![format!(
            "Vaults_Update PATCH /subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}"
        )],
        "exactly one write"
    );
}

#[tokio::test]
async fn killed_while_its_remediation_write_is_in_flight_the_restarted_process_does_not_act_while_the_claim_holds()
 {
    let (sim, env, _scratch) = remediating_setup().await;
    let write = sim.add_fault(Fault::on_operation("Vaults_Update").latency(HANG).times(1));
    let mut first = Instance::start(&env).await;
    let event = workspace_write();
    let delivery = deliver_in_background(&first, &event);
    caught(&sim, write).await;
    first.kill();
    let answered = delivery.await.expect("delivery task");
    assert!(
        answered.is_err(),
        "the killed process answered: {answered:?}"
    );

    let second = Instance::start(&env).await;
    let (status, outcome) = second.deliver(&event).await.expect("an answer");
    assert!(status == 503 || !applied(&outcome), "{status}: {outcome}");
    // The hanging write has not landed, and the restarted process must not write again while
    // the dead instance's remediation claim holds (until its lease ends; then the next
    // delivery re-reads and acts at most once).
    let (status, outcome) = second.deliver(&workspace_write()).await.expect("an answer");
    assert_eq!(status, 200, "{outcome}");
    assert!(!applied(&outcome), "no second remediation: {outcome}");
    // The simulator records a request when it answers: the first write still hangs.
    assert_eq!(writes(&sim), Vec::<String>::new(), "no second write");
}

#[tokio::test]
async fn an_unreachable_state_store_fails_relevant_invocations_and_the_process_keeps_serving() {
    // A Blob container URL (with a SAS, so no token is needed) on a port nothing listens on.
    let closed = free_port();
    let state = format!(
        "http://127.0.0.1:{closed}/devstoreaccount1/cmk-guard-state?sv=2023-11-03&sr=c&sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=c2lnbmF0dXJl"
    );
    let handler = Handler::start_with(tenant(), &[("CMKGUARD_STATE", &state)]).await;
    for attempt in 0..2 {
        let reply = handler
            .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
            .await
            .remove(0);
        assert!(
            !(200..300).contains(&reply.status),
            "attempt {attempt}: a transient failure, for Event Grid to redeliver: {:?}",
            reply.body
        );
        assert!(
            reply.logs().iter().any(|l| l.contains("state store")),
            "{:?}",
            reply.logs()
        );
        assert!(
            !reply.body.to_string().contains("c2lnbmF0dXJl"),
            "the SAS signature never shows"
        );
    }
    let ready = handler.get("/").await;
    assert_eq!(ready.status, 200, "still serving");
    let evaluate = handler
        .post_chunked(
            "/api/evaluate",
            json!({"resource": workspace_id()}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(evaluate.status, 200, "read-only checks need no state");
    assert!(rules(&evaluate.body).contains(&FINDING.to_owned()));
}
