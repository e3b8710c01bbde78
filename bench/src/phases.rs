//! The measurements, one function each, in the order of the quality bars of docs/architecture.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use azure_sim::{Fault, RecordFilter, RequestRecord, Sim, SimOptions};
use serde_json::Value;

use crate::load::{self, percentile, sorted};
use crate::process::Server;
use crate::procfs;
use crate::report::{Section, fixed, mib};
use crate::scenario;

/// Settings shared by every measurement.
#[derive(Debug, Clone)]
pub struct Setup {
    pub handler: PathBuf,
    pub bare: PathBuf,
    /// Length of each throughput run.
    pub duration: Duration,
    /// Events in the sequential warm-cache run.
    pub sequential_events: usize,
    /// Cold starts to measure.
    pub cold_starts: usize,
    /// Directory for state files.
    pub scratch: PathBuf,
}

impl Setup {
    /// The handler's environment: the simulator's variables and a fresh SQLite state.
    pub fn handler_env(&self, sim: &Sim, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let state = self
            .scratch
            .join(format!("state-{}.db", uuid::Uuid::new_v4().simple()));
        let mut env = sim.handler_env();
        env.push((
            "CMKGUARD_STATE".into(),
            format!("sqlite:{}", state.display()),
        ));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }
}

/// Starts a simulator serving `workspaces` benchmark workspaces.
pub async fn start_sim(workspaces: usize) -> Result<Sim, String> {
    let tenant = scenario::tenant(workspaces)?;
    Sim::start(tenant, SimOptions::default())
        .await
        .map_err(|e| format!("azure-sim: {e}"))
}

/// Samples a process's RSS until stopped; returns the largest value seen (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Some((rss, _)) = procfs::memory_kib(pid) {
                    max = max.max(rss);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        });
        Self { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// (d) Cold start and idle memory: spawn → first answered `GET /`, then RSS after a second idle.
pub async fn cold_start(setup: &Setup, sim: &Sim) -> Section {
    let mut section = Section::new("(d) Cold start and idle memory");
    let mut starts = Vec::new();
    let mut idle = Vec::new();
    let mut bare_starts = Vec::new();
    for _ in 0..setup.cold_starts {
        match Server::start(&setup.handler, &["serve"], &setup.handler_env(sim, &[])) {
            Ok(server) => {
                starts.push(server.cold_start.as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some((rss, _)) = procfs::memory_kib(server.pid) {
                    idle.push(rss as f64);
                }
            }
            Err(error) => return Section::failed(&section.title, &error),
        }
        if let Ok(bare) = Server::start(&setup.bare, &[], &[]) {
            bare_starts.push(bare.cold_start.as_secs_f64() * 1000.0);
        }
    }
    let starts = sorted(starts);
    let idle = sorted(idle);
    let bare_starts = sorted(bare_starts);
    section.row("runs", starts.len());
    section.row(
        "cold start p50 / p90 / max (ms)",
        format!(
            "{} / {} / {}",
            fixed(percentile(&starts, 50.0), 1),
            fixed(percentile(&starts, 90.0), 1),
            fixed(percentile(&starts, 100.0), 1)
        ),
    );
    section.row(
        "bare actix-web cold start p50 (ms), for comparison",
        fixed(percentile(&bare_starts, 50.0), 1),
    );
    let idle_p50 = percentile(&idle, 50.0) as u64;
    section.row(
        "idle RSS p50 / max",
        format!(
            "{} / {}",
            mib(idle_p50),
            mib(percentile(&idle, 100.0) as u64)
        ),
    );
    let p50 = percentile(&starts, 50.0);
    section.verdict(
        "Cold start < 50 ms",
        p50 < 50.0 && percentile(&starts, 90.0) < 50.0,
        format!("p50 {} ms, p90 {} ms (readiness polled every 1 ms, binary in the page cache, fresh SQLite state)", fixed(p50, 1), fixed(percentile(&starts, 90.0), 1)),
    );
    section.verdict(
        "Idle RSS < 20 MiB",
        (percentile(&idle, 100.0) as u64) < 20 * 1024,
        format!("{} after 1 s idle", mib(idle_p50)),
    );
    section
}

/// (a) Irrelevant events against the two bare handlers (a reply as large as cmk-guard's, and
/// the minimal fixed reply of issue 18), same load, alternating runs. Returns the
/// handler for the next measurement and the peak RSS seen.
pub async fn irrelevant(setup: &Setup, sim: &Sim) -> (Section, Option<Server>, u64) {
    let mut section = Section::new("(a) Irrelevant events vs a bare actix-web handler");
    let handler = match Server::start(&setup.handler, &["serve"], &setup.handler_env(sim, &[])) {
        Ok(server) => server,
        Err(error) => return (Section::failed(&section.title, &error), None, 0),
    };
    let bare = match Server::start(&setup.bare, &[], &[]) {
        Ok(server) => server,
        Err(error) => return (Section::failed(&section.title, &error), None, 0),
    };
    // Issue 18's baseline: the same server answering the smallest reply the host accepts.
    let minimal = match Server::start(&setup.bare, &["--minimal"], &[]) {
        Ok(server) => server,
        Err(error) => return (Section::failed(&section.title, &error), None, 0),
    };
    let body = scenario::envelope(&scenario::irrelevant("irrelevant-1"), "OnSubscriptionEvent");
    let use_wrk = load::wrk_available();
    let client = match load::client() {
        Ok(c) => c,
        Err(error) => return (Section::failed(&section.title, &error), None, 0),
    };
    // The answer must be `ignored`; anything else measures the wrong path.
    let probe = client
        .post(format!("{}/OnSubscriptionEvent", handler.base_url()))
        .body(body.clone())
        .send()
        .await;
    let disposition = match probe {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["ReturnValue"]["disposition"].as_str().map(str::to_owned)),
        Err(_) => None,
    };
    section.row("disposition of the event", disposition.unwrap_or_default());
    let before = sim.counters().total;
    let sampler = RssSampler::start(handler.pid);
    let half = setup.duration / 2;
    let connections = 32;
    let mut runs: BTreeMap<&str, Vec<(f64, f64, u64)>> = BTreeMap::new();
    for _round in 0..2 {
        for (name, server) in [
            ("cmk-guard", &handler),
            ("bare", &bare),
            ("minimal", &minimal),
        ] {
            let url = format!("{}/OnSubscriptionEvent", server.base_url());
            let cpu_before = procfs::cpu_seconds(server.pid).unwrap_or(0.0);
            let result = if use_wrk {
                load::wrk(&url, &body, half, connections)
            } else {
                let body = body.clone();
                Ok(load::closed_loop(
                    &client,
                    &url,
                    Arc::new(move |_| body.clone()),
                    connections,
                    half,
                )
                .await)
            };
            let cpu = procfs::cpu_seconds(server.pid).unwrap_or(0.0) - cpu_before;
            match result {
                Ok(t) => runs.entry(name).or_default().push((
                    t.requests_per_second,
                    t.requests as f64 / cpu.max(0.01),
                    t.failures,
                )),
                Err(error) => return (Section::failed(&section.title, &error), None, 0),
            }
        }
    }
    let peak_rss = sampler.finish();
    let azure_requests = sim.counters().total - before;
    let mean = |name: &str, pick: fn(&(f64, f64, u64)) -> f64| {
        let v = runs.get(name).cloned().unwrap_or_default();
        v.iter().map(pick).sum::<f64>() / v.len().max(1) as f64
    };
    let guard_rps = mean("cmk-guard", |r| r.0);
    let bare_rps = mean("bare", |r| r.0);
    let guard_per_cpu = mean("cmk-guard", |r| r.1);
    let bare_per_cpu = mean("bare", |r| r.1);
    let minimal_rps = mean("minimal", |r| r.0);
    let minimal_per_cpu = mean("minimal", |r| r.1);
    let failures: u64 = runs.values().flatten().map(|r| r.2).sum();
    section.row(
        "load",
        format!(
            "{} with {connections} connections, 2 × {} s per server, alternating",
            if use_wrk {
                "wrk -t1"
            } else {
                "reqwest closed loop"
            },
            half.as_secs()
        ),
    );
    section.row("cmk-guard requests/s", fixed(guard_rps, 0));
    section.row("bare actix-web requests/s", fixed(bare_rps, 0));
    section.row(
        "throughput ratio cmk-guard / bare",
        fixed(guard_rps / bare_rps, 2),
    );
    section.row(
        "bare actix-web requests/s, minimal fixed reply",
        fixed(minimal_rps, 0),
    );
    section.row(
        "throughput ratio cmk-guard / bare with the minimal reply",
        fixed(guard_rps / minimal_rps, 2),
    );
    section.row("cmk-guard requests per CPU-second", fixed(guard_per_cpu, 0));
    section.row("bare requests per CPU-second", fixed(bare_per_cpu, 0));
    section.row(
        "CPU-efficiency ratio cmk-guard / bare",
        fixed(guard_per_cpu / bare_per_cpu, 2),
    );
    section.row(
        "bare requests per CPU-second, minimal fixed reply",
        fixed(minimal_per_cpu, 0),
    );
    section.row(
        "CPU-efficiency ratio cmk-guard / bare with the minimal reply",
        fixed(guard_per_cpu / minimal_per_cpu, 2),
    );
    section.row("non-2xx answers", failures);
    section.row("Azure requests during the runs", azure_requests);
    section.row("cmk-guard peak RSS during the runs", mib(peak_rss));
    section.verdict(
        "Irrelevant events ≥ 0.5 × bare throughput, without I/O",
        guard_rps / bare_rps >= 0.5 && azure_requests == 0,
        format!(
            "ratio {} (per CPU-second {}), {} Azure requests",
            fixed(guard_rps / bare_rps, 2),
            fixed(guard_per_cpu / bare_per_cpu, 2),
            azure_requests
        ),
    );
    section.verdict(
        "Irrelevant events ≥ 0.8 × a bare handler's throughput with the minimal reply",
        guard_rps / minimal_rps >= 0.8 && azure_requests == 0,
        format!(
            "ratio {} (per CPU-second {}), {} Azure requests",
            fixed(guard_rps / minimal_rps, 2),
            fixed(guard_per_cpu / minimal_per_cpu, 2),
            azure_requests
        ),
    );
    (section, Some(handler), peak_rss)
}

/// (b) Relevant events with a warm cache: sequential events for handler time and CPU per event,
/// then a concurrent run for throughput and memory at full load.
pub async fn relevant(setup: &Setup, sim: &Sim, handler: &Server, peak_before: u64) -> Section {
    let mut section = Section::new("(b) Relevant events, warm cache");
    let client = match load::client() {
        Ok(c) => c,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let url = format!("{}/OnSubscriptionEvent", handler.base_url());
    let event = |n: usize| {
        scenario::envelope(
            &scenario::workspace_write(n % 10, &format!("warm-{n}-{}", uuid::Uuid::new_v4())),
            "OnSubscriptionEvent",
        )
    };
    for n in 0..50 {
        if let Err(error) = load::invoke(&client, &url, event(n)).await {
            return Section::failed(&section.title, &error);
        }
    }
    handler.clear_evaluated_us();
    let reads_before = sim.counters().total;
    let cpu_before = procfs::cpu_split_seconds(handler.pid).unwrap_or_default();
    let ticks_before = procfs::machine_ticks().unwrap_or_default();
    let mut round_trips = Vec::new();
    let mut cpu_ns = Vec::new();
    let mut failures = 0;
    for n in 0..setup.sequential_events {
        let body = event(n);
        let ns_before = procfs::thread_cpu_ns(handler.pid).unwrap_or(0);
        match load::invoke(&client, &url, body).await {
            Ok((200, elapsed)) => round_trips.push(elapsed.as_secs_f64() * 1000.0),
            _ => failures += 1,
        }
        let ns_after = procfs::thread_cpu_ns(handler.pid).unwrap_or(0);
        cpu_ns.push(ns_after.saturating_sub(ns_before) as f64 / 1e6);
    }
    let cpu_after = procfs::cpu_split_seconds(handler.pid).unwrap_or_default();
    let ticks_after = procfs::machine_ticks().unwrap_or_default();
    let stolen =
        (ticks_after.1 - ticks_before.1) as f64 / (ticks_after.0 - ticks_before.0).max(1) as f64;
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu_total = user + system;
    let reads = sim.counters().total - reads_before;
    // The log line is written after the reply; wait until the drain thread has seen them all.
    let deadline = Instant::now() + Duration::from_secs(5);
    while handler.evaluated_us().len() < round_trips.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let own = sorted(handler.evaluated_us().iter().map(|us| *us as f64 / 1000.0));
    let round_trips = sorted(round_trips);
    let cpu_ms = sorted(cpu_ns);
    let n = setup.sequential_events;
    section.row("events (sequential, one at a time, 10 workspaces)", n);
    section.row("failed invocations", failures);
    section.row(
        "handler time p50 / p99 (ms, the handler's own `elapsed_us`)",
        format!(
            "{} / {}",
            fixed(percentile(&own, 50.0), 3),
            fixed(percentile(&own, 99.0), 3)
        ),
    );
    section.row(
        "round trip p50 / p99 (ms, client over loopback)",
        format!(
            "{} / {}",
            fixed(percentile(&round_trips, 50.0), 3),
            fixed(percentile(&round_trips, 99.0), 3)
        ),
    );
    section.row(
        "handler CPU per event p50 / p99 (ms, threads' schedstat)",
        format!(
            "{} / {}",
            fixed(percentile(&cpu_ms, 50.0), 3),
            fixed(percentile(&cpu_ms, 99.0), 3)
        ),
    );
    section.row(
        "handler CPU per event, mean (ms, /proc stat utime+stime)",
        fixed(cpu_total * 1000.0 / n.max(1) as f64, 3),
    );
    section.row(
        "of which user / system (ms per event, /proc stat)",
        format!(
            "{} / {}",
            fixed(user * 1000.0 / n.max(1) as f64, 3),
            fixed(system * 1000.0 / n.max(1) as f64, 3)
        ),
    );
    section.row(
        "CPU stolen by the hypervisor during the run (% of the machine's CPU time)",
        fixed(stolen * 100.0, 1),
    );
    section.row("Azure requests during the run (cache refreshes)", reads);
    let p99_cpu = percentile(&cpu_ms, 99.0);
    section.verdict(
        "Handler CPU per relevant event < 0.5 ms (p99), SQLite state",
        p99_cpu < 0.5,
        format!(
            "p99 {} ms, p50 {} ms ({} % of the machine's CPU stolen meanwhile)",
            fixed(p99_cpu, 3),
            fixed(percentile(&cpu_ms, 50.0), 3),
            fixed(stolen * 100.0, 1)
        ),
    );

    let sampler = RssSampler::start(handler.pid);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make_body = {
        let counter = counter.clone();
        Arc::new(move |_| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            scenario::envelope(
                &scenario::workspace_write(n % 10, &format!("load-{n}-{}", uuid::Uuid::new_v4())),
                "OnSubscriptionEvent",
            )
        })
    };
    let concurrency = 32;
    let throughput = load::closed_loop(&client, &url, make_body, concurrency, setup.duration).await;
    let peak = sampler.finish().max(peak_before);
    let hwm = procfs::memory_kib(handler.pid).map_or(0, |(_, hwm)| hwm);
    section.row(
        &format!(
            "relevant events/s, {concurrency} concurrent ({} s)",
            setup.duration.as_secs()
        ),
        fixed(throughput.requests_per_second, 0),
    );
    section.row("failed invocations under load", throughput.failures);
    section.row(
        "peak RSS under load (sampled every 50 ms) / VmHWM",
        format!("{} / {}", mib(peak), mib(hwm)),
    );
    section.verdict(
        "RSS at full load < 64 MiB",
        hwm < 64 * 1024,
        format!("VmHWM {} after irrelevant and relevant load", mib(hwm)),
    );
    section
}

/// Groups request records into sequential rounds: a new round starts when a response arrives
/// more than half the injected latency after the previous one.
fn rounds(records: &[RequestRecord], latency_ms: f64) -> Vec<Vec<String>> {
    let mut sorted: Vec<&RequestRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for record in sorted {
        if record.at_ms - last > latency_ms / 2.0 {
            out.push(Vec::new());
        }
        last = record.at_ms;
        if let Some(round) = out.last_mut() {
            round.push(record.operation.clone());
        }
    }
    out
}

/// Critical path: sequential rounds of Azure reads for one relevant event on a cold cache,
/// counted from the simulator's response times with 100 ms injected on every call.
pub async fn critical_path(setup: &Setup) -> Section {
    let mut section = Section::new("Critical path: sequential rounds of Azure reads (cold cache)");
    let latency_ms = 100.0;
    let sim = match start_sim(10).await {
        Ok(sim) => sim,
        Err(error) => return Section::failed(&section.title, &error),
    };
    sim.add_fault(Fault::on_everything().latency(Duration::from_millis(latency_ms as u64)));
    let client = match load::client() {
        Ok(c) => c,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let mut worst = 0;
    for (name, function, event) in [
        (
            "workspace write (ws 0)",
            "OnSubscriptionEvent",
            scenario::workspace_write(0, "cp-ws"),
        ),
        (
            "KeyNearExpiry (ws 1's key, via Resource Graph)",
            "OnKeyVaultEvent",
            scenario::key_near_expiry(1, "cp-key"),
        ),
    ] {
        // A fresh handler per event: nothing cached, not even what the other event read.
        let handler = match Server::start(&setup.handler, &["serve"], &setup.handler_env(&sim, &[]))
        {
            Ok(server) => server,
            Err(error) => return Section::failed(&section.title, &error),
        };
        sim.reset_counters();
        let url = format!("{}/{function}", handler.base_url());
        let result = load::invoke(&client, &url, scenario::envelope(&event, function)).await;
        let records: Vec<RequestRecord> = sim
            .requests(&RecordFilter::default())
            .into_iter()
            .filter(|r| r.operation != "Identity_GetToken")
            .collect();
        let rounds = rounds(&records, latency_ms);
        worst = worst.max(rounds.len());
        let shown: Vec<String> = rounds
            .iter()
            .map(|r| {
                let mut ops = r.clone();
                ops.sort();
                ops.dedup();
                format!("[{}]", ops.join(", "))
            })
            .collect();
        let elapsed = result.map_or("failed".to_owned(), |(status, e)| {
            format!("{status}, {} ms", fixed(e.as_secs_f64() * 1000.0, 0))
        });
        section.row(
            &format!("{name}: rounds"),
            format!(
                "{} ({} requests; answer {elapsed}) {}",
                rounds.len(),
                records.len(),
                shown.join(" → ")
            ),
        );
    }
    section.verdict(
        "At most two sequential rounds of Azure reads per relevant event",
        worst <= 2,
        format!("worst case {worst} rounds ({latency_ms} ms injected per call; the managed-identity token fetch is not counted)"),
    );
    sim.stop().await;
    section
}

/// (c) Burst coalescing: 1,000 events over 10 workspaces within one second, on a fresh handler.
pub async fn burst(setup: &Setup) -> Section {
    let mut section = Section::new("(c) Burst coalescing: 1,000 events over 10 workspaces in 1 s");
    let sim = match start_sim(10).await {
        Ok(sim) => sim,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let handler = match Server::start(&setup.handler, &["serve"], &setup.handler_env(&sim, &[])) {
        Ok(server) => server,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let client = match load::client() {
        Ok(c) => c,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let url = format!("{}/OnSubscriptionEvent", handler.base_url());
    sim.reset_counters();
    let started = Instant::now();
    let tasks = (0..1000usize).map(|n| {
        let (client, url) = (client.clone(), url.clone());
        let body = scenario::envelope(
            &scenario::workspace_write(n % 10, &format!("burst-{n}")),
            "OnSubscriptionEvent",
        );
        tokio::spawn(async move {
            tokio::time::sleep_until((started + Duration::from_millis(n as u64)).into()).await;
            let sent = started.elapsed();
            (sent, load::invoke(&client, &url, body).await)
        })
    });
    let results = futures_util::future::join_all(tasks).await;
    let last_sent = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(sent, _)| *sent))
        .max()
        .unwrap_or_default();
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok((_, Ok((200, _))))))
        .count();
    let latencies = sorted(results.iter().filter_map(|r| match r {
        Ok((_, Ok((_, e)))) => Some(e.as_secs_f64() * 1000.0),
        _ => None,
    }));
    let mut per_resource: BTreeMap<String, usize> = BTreeMap::new();
    for record in sim.requests(&RecordFilter::default()) {
        if record.method != "GET" && record.operation != "ResourceGraph_Resources" {
            continue;
        }
        if record.operation == "Identity_GetToken" {
            continue;
        }
        *per_resource
            .entry(format!(
                "{} {}",
                record.operation,
                record.path.to_ascii_lowercase()
            ))
            .or_default() += 1;
    }
    let total: usize = per_resource.values().sum();
    let max = per_resource.values().copied().max().unwrap_or(0);
    section.row("events sent / answered 200", format!("1000 / {ok}"));
    section.row("last event sent after (ms)", last_sent.as_millis());
    section.row(
        "answer time p50 / p99 / max (ms)",
        format!(
            "{} / {} / {}",
            fixed(percentile(&latencies, 50.0), 0),
            fixed(percentile(&latencies, 99.0), 0),
            fixed(percentile(&latencies, 100.0), 0)
        ),
    );
    section.row("distinct resources read", per_resource.len());
    section.row("Azure reads in total", total);
    section.row(
        "reads per distinct resource (mean / max)",
        format!(
            "{} / {max}",
            fixed(total as f64 / per_resource.len().max(1) as f64, 2)
        ),
    );
    section.verdict(
        "Bursts coalesce: at most one read per distinct resource",
        max <= 1 && ok == 1000,
        format!(
            "{total} reads of {} resources for 1,000 events, at most {max} per resource",
            per_resource.len()
        ),
    );
    drop(handler);
    sim.stop().await;
    section
}

/// One `cmk-guard scan` of `workspaces` workspaces with `latency` on every Azure call.
struct SweepRun {
    seconds: f64,
    /// CPU seconds cmk-guard spent.
    handler_cpu: f64,
    /// CPU seconds this process (the simulator, mostly) spent meanwhile.
    sim_cpu: f64,
    peak: usize,
    reads: u64,
    scanned: usize,
    visibility: usize,
    exit: String,
}

async fn sweep_run(
    setup: &Setup,
    workspaces: usize,
    rate: Option<u32>,
    latency: Duration,
) -> Result<SweepRun, String> {
    let sim = start_sim(workspaces).await?;
    sim.add_fault(Fault::on_everything().latency(latency));
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(rate) = rate {
        extra.push(("CMKGUARD_READ_RATE", rate.to_string()));
    }
    let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = setup.handler_env(&sim, &pairs);
    let mut command = tokio::process::Command::new(&setup.handler);
    command
        .args(["scan", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null());
    let children_before = procfs::children_cpu_seconds().unwrap_or(0.0);
    let own_before = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let output = command
        .output()
        .await
        .map_err(|e| format!("cmk-guard scan: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let handler_cpu = procfs::children_cpu_seconds().unwrap_or(0.0) - children_before;
    let sim_cpu = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_before;
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let scanned = outcome["workspaces"].as_array().map_or(0, Vec::len);
    let visibility = outcome["findings"].as_array().map_or(0, |f| {
        f.iter().filter(|f| f["rule"] == "guard.visibility").count()
    });
    let filter = RecordFilter {
        reads_only: true,
        ..RecordFilter::default()
    };
    let peak = sim.peak_rate(Duration::from_secs(1), &filter).peak;
    let reads = sim.requests(&filter).len() as u64;
    let exit = match output.status.code() {
        Some(0) => "0".to_owned(),
        other => format!(
            "{other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
    };
    sim.stop().await;
    Ok(SweepRun {
        seconds,
        handler_cpu,
        sim_cpu,
        peak,
        reads,
        scanned,
        visibility,
        exit,
    })
}

/// The Sweep function itself: one timer invocation over the host protocol, against a fresh
/// handler and simulator, read budget and all.
async fn sweep_function_run(
    setup: &Setup,
    workspaces: usize,
    rate: u32,
    latency: Duration,
) -> Result<SweepRun, String> {
    let sim = start_sim(workspaces).await?;
    sim.add_fault(Fault::on_everything().latency(latency));
    let rate_text = rate.to_string();
    let env = setup.handler_env(&sim, &[("CMKGUARD_READ_RATE", rate_text.as_str())]);
    let handler = Server::start(&setup.handler, &["serve"], &env)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(900))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let body = serde_json::json!({
        "Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Sweep", "UtcNow": "2026-11-28T12:00:00.0131455Z", "RandGuid": uuid::Uuid::new_v4().to_string()}}
    });
    let handler_before = procfs::cpu_seconds(handler.pid).unwrap_or(0.0);
    let own_before = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let response = client
        .post(format!("{}/Sweep", handler.base_url()))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST /Sweep: {e}"))?;
    let status = response.status().as_u16();
    let reply: Value = response.json().await.unwrap_or(Value::Null);
    let seconds = started.elapsed().as_secs_f64();
    let handler_cpu = procfs::cpu_seconds(handler.pid).unwrap_or(0.0) - handler_before;
    let sim_cpu = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_before;
    let outcome = &reply["ReturnValue"];
    let filter = RecordFilter {
        reads_only: true,
        ..RecordFilter::default()
    };
    let run = SweepRun {
        seconds,
        handler_cpu,
        sim_cpu,
        peak: sim.peak_rate(Duration::from_secs(1), &filter).peak,
        reads: sim.requests(&filter).len() as u64,
        scanned: outcome["workspaces"].as_array().map_or(0, Vec::len),
        visibility: outcome["findings"].as_array().map_or(0, |f| {
            f.iter().filter(|f| f["rule"] == "guard.visibility").count()
        }),
        exit: match outcome["reason"].as_str() {
            Some(reason) => format!("HTTP {status}: {reason}"),
            None => format!("HTTP {status}"),
        },
    };
    drop(handler);
    sim.stop().await;
    Ok(run)
}

/// (e) The sweep: `cmk-guard scan` (the Sweep function's engine path) over `workspaces`
/// workspaces with 50 ms per Azure call, at `rate` requests/s; and a small run at the default
/// rate to show the limiter and extrapolate.
pub async fn sweep(setup: &Setup, workspaces: usize, rate: u32, small: usize) -> Section {
    let mut section = Section::new(&format!(
        "(e) Sweep: {workspaces} workspaces, 50 ms per Azure call"
    ));
    let latency = Duration::from_millis(50);
    let full = match sweep_run(setup, workspaces, Some(rate), latency).await {
        Ok(run) => run,
        Err(error) => return Section::failed(&section.title, &error),
    };
    section.row(
        "configured read rate (CMKGUARD_READ_RATE)",
        format!("{rate}/s"),
    );
    section.row("duration (s)", fixed(full.seconds, 1));
    section.row(
        "workspaces scanned / guard.visibility findings",
        format!("{} / {}", full.scanned, full.visibility),
    );
    section.row(
        "Azure reads / per workspace",
        format!(
            "{} / {}",
            full.reads,
            fixed(full.reads as f64 / workspaces.max(1) as f64, 2)
        ),
    );
    section.row(
        "peak read rate (sim peak_rate, any 1 s window)",
        format!("{}/s", full.peak),
    );
    section.row("exit code", &full.exit);
    section.row(
        "CPU: cmk-guard scan / azure-sim (s)",
        format!(
            "{} / {}",
            fixed(full.handler_cpu, 1),
            fixed(full.sim_cpu, 1)
        ),
    );
    section.row(
        "cmk-guard CPU per Azure read (ms)",
        fixed(full.handler_cpu * 1000.0 / full.reads.max(1) as f64, 3),
    );
    let function = sweep_function_run(setup, workspaces, rate, latency).await;
    match &function {
        Ok(run) => {
            section.row(
                "Sweep function (POST /Sweep): duration (s)",
                fixed(run.seconds, 1),
            );
            section.row(
                "Sweep function: workspaces / guard.visibility findings",
                format!("{} / {}", run.scanned, run.visibility),
            );
            section.row("Sweep function: peak read rate", format!("{}/s", run.peak));
            section.row(
                "Sweep function: CPU cmk-guard / azure-sim (s)",
                format!("{} / {}", fixed(run.handler_cpu, 1), fixed(run.sim_cpu, 1)),
            );
            section.row("Sweep function: answer", &run.exit);
        }
        Err(error) => section.note(format!("Sweep function run failed: {error}")),
    }
    // The default has no static cap: reads are paced from ARM's remaining counts, which this
    // simulator (not throttling) always reports full; the throttled section measures ARM's model.
    let small_run = sweep_run(setup, small, None, latency).await;
    match &small_run {
        Ok(run) => {
            let per_ws = run.reads as f64 / small.max(1) as f64;
            section.row(
                &format!("default settings (no cap): {small} workspaces took (s)"),
                fixed(run.seconds, 1),
            );
            section.row(
                &format!("default settings: peak read rate ({small} workspaces)"),
                format!("{}/s", run.peak),
            );
            section.row(
                &format!(
                    "under ARM's limits: {workspaces} workspaces would take at least (s, reads beyond 200 ÷ 25/s)"
                ),
                fixed((per_ws * workspaces as f64 - 200.0).max(0.0) / 25.0, 0),
            );
        }
        Err(error) => section.note(format!("default-settings run failed: {error}")),
    }
    let within_bar = |run: &SweepRun| {
        run.seconds < 30.0
            && run.peak as u32 <= rate
            && run.scanned == workspaces
            && run.visibility == 0
    };
    let figures = |run: &SweepRun, done: &str| {
        format!(
            "{} s at a configured {rate}/s, peak {}/s, {} workspaces {done}",
            fixed(run.seconds, 1),
            run.peak,
            run.scanned
        )
    };
    section.verdict(
        "Sweep (scan) of 5,000 workspaces < 30 s within the configured read rate",
        within_bar(&full),
        figures(&full, "scanned"),
    );
    if let Ok(run) = &function {
        section.verdict(
            "Sweep function: 5,000 workspaces < 30 s within the configured read rate",
            within_bar(run),
            figures(run, "swept"),
        );
    }
    if let Ok(run) = small_run {
        section.verdict(
            "Default settings (no static cap): every workspace scanned, none unread",
            run.scanned == small && run.visibility == 0,
            format!(
                "{} of {small} scanned, {} guard.visibility, peak {}/s",
                run.scanned, run.visibility, run.peak
            ),
        );
    }
    section.note("`cmk-guard scan` lists with Resource Graph, then observes and evaluates 32 workspaces at a time as a continuous stream; the Sweep function does the same in chunks of 32 and also acts (state, alerts) after each chunk. Both are measured.");
    section
}
