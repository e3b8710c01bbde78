//! The sweep fanned out over the Storage queue: `subscriptions` × `per_subscription` workspaces
//! (ten per vault) on azure-sim with ARM's throttling model, `instances` handler processes
//! sharing one SQLite state file, Azurite's queue service, and the queue host of the black-box
//! tests standing in for the Functions host's queue trigger. The Sweep function enqueues one
//! message per subscription; the queue host delivers them, round robin over the instances, all
//! at once, until the queue is empty.
//!
//! The bar: each subscription's ARM reads stay inside one principal's read budget — a token
//! bucket of 250 refilled at 25 per second — however many instances read at once. Checked by
//! replaying every subscription's reads through that bucket, and by counting the 429s the
//! simulator answered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azure_sim::{RecordFilter, RequestRecord, Sim, SimOptions};
use cmk_guard_blackbox::azurite_queue::{AzuriteQueue, QueueHost};

use crate::phases::Setup;
use crate::process::Server;
use crate::report::{Section, fixed};
use crate::scenario;

const TITLE: &str = "Sweep fan-out over a Storage queue";
/// ARM's read bucket per principal and subscription: its size and refill per second.
const READ_BURST: f64 = 250.0;
const READ_REFILL_PER_SECOND: f64 = 25.0;
/// The sweep queue's name on Azurite.
const QUEUE: &str = "cmk-guard-sweep";

/// The figures of one fanned-out sweep, or why it could not run.
pub async fn fanout(
    setup: &Setup,
    subscriptions: usize,
    per_subscription: usize,
    instances: usize,
) -> Section {
    match measure(setup, subscriptions, per_subscription, instances.max(1)).await {
        Ok(section) => section,
        Err(error) => Section::failed(TITLE, &error),
    }
}

async fn measure(
    setup: &Setup,
    subscriptions: usize,
    per_subscription: usize,
    instances: usize,
) -> Result<Section, String> {
    let azurite = cmk_guard_blackbox::repo_root().join(".tools/node_modules/.bin/azurite-queue");
    if !azurite.is_file() {
        return Err(format!(
            "{} is missing: run scripts/test-tools",
            azurite.display()
        ));
    }
    let tenant = scenario::tenant_sharing(subscriptions, per_subscription, 10)?;
    let options = SimOptions {
        arm_throttling: true,
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant, options)
        .await
        .map_err(|e| format!("azure-sim: {e}"))?;
    let queue = AzuriteQueue::start().await;
    queue.create_queue(QUEUE).await;
    queue.create_queue(&format!("{QUEUE}-poison")).await;
    let env = environment(setup, &sim, &queue, subscriptions);
    let servers = (0..instances)
        .map(|_| Server::start(&setup.handler, &["serve"], &env))
        .collect::<Result<Vec<_>, _>>()?;
    let urls: Vec<String> = servers.iter().map(Server::base_url).collect();

    let started = Instant::now();
    let fanned = start_sweep(&urls[0]).await?;
    let host = QueueHost {
        queue: &queue,
        name: QUEUE.to_owned(),
        function: "SweepSubscription",
        binding: "message",
        max_dequeue_count: 5,
        visibility: 60,
    };
    let deliveries = host.run_at(&urls).await;
    let seconds = started.elapsed().as_secs_f64();

    let swept: usize = deliveries
        .iter()
        .map(|d| {
            d.reply.outcome()["workspaces"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    let failed = deliveries.iter().filter(|d| d.reply.status != 200).count();
    let poisoned = queue.peek(&format!("{QUEUE}-poison")).await.len();
    let reads = sim.requests(&RecordFilter {
        reads_only: true,
        host: Some("management.azure.com".to_owned()),
        ..RecordFilter::default()
    });
    let budget = Budget::of(&reads);
    sim.stop().await;
    drop(servers);

    let workspaces = subscriptions * per_subscription;
    let mut section = Section::new(TITLE);
    section.row(
        "tenant",
        format!(
            "{subscriptions} subscriptions × {per_subscription} workspaces (10 per vault), ARM throttling on"
        ),
    );
    section.row("handler instances", instances);
    section.row("Sweep reply", fanned);
    section.row("duration, Sweep to empty queue (s)", fixed(seconds, 1));
    section.row(
        "deliveries (failed, poisoned)",
        format!("{} ({failed}, {poisoned})", deliveries.len()),
    );
    section.row("workspaces swept", format!("{swept} of {workspaces}"));
    section.row("ARM reads", reads.len());
    section.row(
        "ARM reads per workspace",
        fixed(reads.len() as f64 / workspaces.max(1) as f64, 2),
    );
    section.row(
        "peak reads of one subscription in 1 s",
        format!("{} ({})", budget.peak_per_second, budget.peak_subscription),
    );
    section.row("429 answers to reads", budget.throttled);
    section.row(
        "subscriptions whose reads overdrew the bucket",
        budget.overdrawn,
    );
    section.verdict(
        "Fan-out: each subscription's reads within ARM's budget (250 burst, 25/s)",
        budget.overdrawn == 0 && budget.throttled == 0 && swept == workspaces,
        format!(
            "{} subscriptions overdrawn, {} reads throttled, {swept} of {workspaces} workspaces swept in {} s over {instances} instances",
            budget.overdrawn,
            budget.throttled,
            fixed(seconds, 1)
        ),
    );
    Ok(section)
}

/// The handler's variables: the simulator, one SQLite file every instance shares, the queue
/// on Azurite (a SAS on the service URL), the subscriptions in scope, no alerts.
fn environment(
    setup: &Setup,
    sim: &Sim,
    queue: &AzuriteQueue,
    subscriptions: usize,
) -> Vec<(String, String)> {
    let state = setup
        .scratch
        .join(format!("fanout-{}.db", uuid::Uuid::new_v4().simple()));
    let scope: Vec<String> = (0..subscriptions).map(scenario::subscription).collect();
    let mut env = sim.handler_env();
    env.extend([
        (
            "CMKGUARD_STATE".to_owned(),
            format!("sqlite:{}", state.display()),
        ),
        ("CMKGUARD_MODE".to_owned(), "observe".to_owned()),
        ("CMKGUARD_SUBSCRIPTIONS".to_owned(), scope.join(",")),
        ("CMKGUARD_SWEEP_QUEUE".to_owned(), QUEUE.to_owned()),
        (
            "AzureWebJobsStorage__queueServiceUri".to_owned(),
            queue.service_sas_url(),
        ),
    ]);
    env
}

/// Invokes the Sweep function; returns its status and reason.
async fn start_sweep(base_url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let body = serde_json::json!({
        "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Sweep", "UtcNow": "2026-11-28T12:00:00Z", "RandGuid": uuid::Uuid::new_v4().to_string()}}
    });
    let response = client
        .post(format!("{base_url}/Sweep"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST /Sweep: {e}"))?;
    let status = response.status().as_u16();
    let reply: serde_json::Value = response.json().await.unwrap_or_default();
    let reason = reply["ReturnValue"]["reason"].as_str().unwrap_or_default();
    if status != 200 {
        return Err(format!("the Sweep answered {status}: {reason}"));
    }
    Ok(format!("HTTP {status}: {reason}"))
}

/// Each subscription's reads replayed through ARM's read bucket.
#[derive(Debug, Default)]
struct Budget {
    /// Subscriptions whose bucket went below zero at some read.
    overdrawn: usize,
    /// Reads answered 429.
    throttled: usize,
    /// The most reads of one subscription inside any one second, and which subscription.
    peak_per_second: usize,
    peak_subscription: String,
}

impl Budget {
    fn of(reads: &[RequestRecord]) -> Self {
        let mut by_subscription: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut budget = Budget::default();
        for read in reads {
            if read.status == 429 {
                budget.throttled += 1;
            }
            if let Some(subscription) = subscription_of(&read.path) {
                by_subscription
                    .entry(subscription)
                    .or_default()
                    .push(read.at_ms);
            }
        }
        for (subscription, mut times) in by_subscription {
            times.sort_by(f64::total_cmp);
            if overdraws(&times) {
                budget.overdrawn += 1;
            }
            let peak = peak_in_window(&times, 1000.0);
            if peak > budget.peak_per_second {
                budget.peak_per_second = peak;
                budget.peak_subscription = subscription;
            }
        }
        budget
    }
}

/// The subscription id of an ARM path (`/subscriptions/<id>/…`), lower-case.
fn subscription_of(path: &str) -> Option<String> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(first), Some(id)) if first.eq_ignore_ascii_case("subscriptions") => {
            Some(id.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Whether reads at these times (ms, sorted) take more tokens than a full bucket of
/// [`READ_BURST`] refilled at [`READ_REFILL_PER_SECOND`] holds at some point.
fn overdraws(times: &[f64]) -> bool {
    let mut tokens = READ_BURST;
    let mut last = times.first().copied().unwrap_or_default();
    for &at in times {
        tokens = (tokens + (at - last) / 1000.0 * READ_REFILL_PER_SECOND).min(READ_BURST);
        last = at;
        tokens -= 1.0;
        if tokens < 0.0 {
            return true;
        }
    }
    false
}

/// The most times (ms, sorted) inside any window of `window_ms`.
fn peak_in_window(times: &[f64], window_ms: f64) -> usize {
    let mut start = 0;
    let mut peak = 0;
    for (end, &at) in times.iter().enumerate() {
        while at - times[start] >= window_ms {
            start += 1;
        }
        peak = peak.max(end + 1 - start);
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_refill_rate() {
        let burst: Vec<f64> = (0..250).map(|_| 0.0).collect();
        assert!(!overdraws(&burst));
        let mut one_more = burst.clone();
        one_more.push(1.0);
        assert!(overdraws(&one_more));
        // 250 at once, then 25 per second for ten seconds.
        let mut paced = burst;
        paced.extend((1..=250).map(|i| f64::from(i) * 40.0));
        assert!(!overdraws(&paced));
        assert_eq!(
            peak_in_window(&[0.0, 10.0, 999.0, 1000.0, 1500.0], 1000.0),
            3
        );
        assert_eq!(
            subscription_of("/subscriptions/ABC/resourceGroups/x").as_deref(),
            Some("abc")
        );
        assert_eq!(
            subscription_of("/providers/Microsoft.ResourceGraph/resources"),
            None
        );
    }
}
