//! `cargo run --release -p bench`: measures the release `cmk-guard` binary against azure-sim, with
//! the load coming from this process over loopback, and reports every figure of the quality bars
//! (docs/architecture.md) side by side in one run, with a verdict per bar. It reports; it never
//! fails because a bar is missed (exit 1 only when a measurement could not run at all).
//!
//! # Layout
//! - `phases`: the measurements, one function each.
//! - `fanout`: the sweep fanned out over a Storage queue (Azurite) to several instances.
//! - `instructions`: instructions per event under callgrind, deterministic on a busy machine.
//! - `process`: starting the servers and timing their cold start.
//! - `load`: wrk and a reqwest client as load generators; percentiles.
//! - `procfs`: CPU time and memory from `/proc`.
//! - `scenario`: the simulated tenants and events.
//! - `throttled`: the sweep (`cmk-guard scan`) under ARM's throttling model.
//! - `bulk`: Azure requests per workspace of `cmk-guard scan` (bulk reads), vaults shared or not.
//! - `report`: sections, verdicts, Markdown and JSON output.

mod bulk;
mod fanout;
mod instructions;
mod load;
mod phases;
mod process;
mod procfs;
mod report;
mod scenario;
mod throttled;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use phases::Setup;
use report::Section;

/// Benchmarks the release cmk-guard binary against the quality bars.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Sequential relevant events for handler time and CPU per event.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Cold starts to measure.
    #[arg(long, default_value_t = 20)]
    cold_starts: usize,
    /// Workspaces in the sweep.
    #[arg(long, default_value_t = 5000)]
    sweep_workspaces: usize,
    /// CMKGUARD_READ_RATE for the sweep.
    #[arg(long, default_value_t = 1500)]
    sweep_rate: u32,
    /// Workspaces in the sweep at the default read rate.
    #[arg(long, default_value_t = 50)]
    sweep_small: usize,
    /// Subscriptions in the fan-out measurement.
    #[arg(long, default_value_t = 20)]
    fanout_subscriptions: usize,
    /// Workspaces per subscription in the fan-out measurement.
    #[arg(long, default_value_t = 250)]
    fanout_workspaces: usize,
    /// Handler instances the fan-out's queue delivers to.
    #[arg(long, default_value_t = 4)]
    fanout_instances: usize,
    /// Workspaces of the bulk-read scan whose workspaces share vaults ten to a vault.
    #[arg(long, default_value_t = 5000)]
    bulk_shared: usize,
    /// Workspaces of the bulk-read scan where each workspace has its own vault.
    #[arg(long, default_value_t = 1000)]
    bulk_own: usize,
    /// Workspaces of the scan under ARM's throttling model (ten to a vault, one subscription).
    #[arg(long, default_value_t = 5000)]
    throttled_workspaces: usize,
    /// Events of each kind counted under callgrind (the `instructions` measurement).
    #[arg(long, default_value_t = 500)]
    counted_events: usize,
    /// Measurements to run (default: all): cold, irrelevant, relevant, instructions, critical,
    /// burst, sweep, fanout, bulk, throttled.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep the scratch folder (databases, logs, callgrind's `callgrind.out.1` and `.2` for
    /// `callgrind_annotate`) and print where it is.
    #[arg(long)]
    keep_scratch: bool,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // reqwest is built without a crypto provider of its own (it would bring aws-lc): its
    // clients use the process default, ring. Fails only when one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let scratch = std::env::temp_dir().join(format!("cmk-guard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let setup = Setup {
        handler: process::release_binary("cmk-guard")?,
        bare: process::release_binary("bench-bare")?,
        duration: Duration::from_secs(args.duration.max(2)),
        sequential_events: args.events.max(1),
        cold_starts: args.cold_starts.max(1),
        scratch: scratch.clone(),
    };
    let machine = procfs::machine();
    println!(
        "# cmk-guard benchmark\n\nmachine: {machine}\nhandler: {}\n",
        setup.handler.display()
    );
    let mut sections: Vec<Section> = Vec::new();
    let mut emit = |section: Section| {
        println!("{}", section.markdown());
        sections.push(section);
    };
    let sim = phases::start_sim(10).await?;
    if wanted("cold") {
        emit(phases::cold_start(&setup, &sim).await);
    }
    if wanted("irrelevant") || wanted("relevant") {
        let (section, handler, peak) = phases::irrelevant(&setup, &sim).await;
        if wanted("irrelevant") {
            emit(section);
        }
        if wanted("relevant")
            && let Some(handler) = handler
        {
            emit(phases::relevant(&setup, &sim, &handler, peak).await);
        }
    }
    if wanted("instructions") {
        emit(instructions::instructions(&setup, &sim, args.counted_events.max(1)).await);
    }
    sim.stop().await;
    if wanted("critical") {
        emit(phases::critical_path(&setup).await);
    }
    if wanted("burst") {
        emit(phases::burst(&setup).await);
    }
    if wanted("sweep") {
        emit(
            phases::sweep(
                &setup,
                args.sweep_workspaces,
                args.sweep_rate,
                args.sweep_small,
            )
            .await,
        );
    }
    if wanted("bulk") {
        emit(bulk::bulk(&setup, args.bulk_shared, args.bulk_own).await);
    }
    if wanted("throttled") {
        emit(throttled::throttled(&setup, args.throttled_workspaces).await);
    }
    if wanted("fanout") {
        emit(
            fanout::fanout(
                &setup,
                args.fanout_subscriptions,
                args.fanout_workspaces,
                args.fanout_instances,
            )
            .await,
        );
    }
    if args.keep_scratch {
        println!("scratch kept: {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let results = serde_json::json!({
        "machine": machine,
        "handler": setup.handler.display().to_string(),
        "sections": sections.iter().map(Section::json).collect::<Vec<_>>(),
    });
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("results: {}", args.out.display());
    Ok(())
}
