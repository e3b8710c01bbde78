//! `azure-sim --scenario FILE --ca-out FILE [--port N] [--identity-port N]`: starts the
//! simulator and prints one JSON ready line on stdout (ports, CA path, identity endpoint and
//! secret, `CMKGUARD_CONNECT_TO` value) for the parent process; runs until SIGINT/SIGTERM.

use azure_sim::{Scenario, Sim, SimOptions};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "azure-sim",
    about = "Simulates the Azure APIs cmk-guard calls."
)]
struct Cli {
    /// Scenario JSON file; without it the compliant default tenant is served.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Where to write the CA certificate (PEM).
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Also write the server certificate and key (server.pem, server.key) into this folder,
    /// for other local servers (an SMTP server on localhost) that clients trusting the CA accept.
    #[arg(long)]
    tls_out: Option<PathBuf>,
    /// HTTPS port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Managed-identity (plain HTTP) port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    identity_port: u16,
    /// IDENTITY_HEADER secret (random when omitted).
    #[arg(long)]
    identity_header: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Throttle ARM and Resource Graph as the real services do (off: every answer reports full
    /// buckets).
    #[arg(long)]
    arm_throttling: bool,
    /// Print the default compliant scenario as JSON and exit.
    #[arg(long)]
    print_default_scenario: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    if cli.print_default_scenario {
        println!("{}", serde_json::to_string_pretty(&Scenario::compliant())?);
        return Ok(());
    }
    let scenario = match &cli.scenario {
        Some(path) => Scenario::from_json(&std::fs::read_to_string(path)?)?,
        None => Scenario::compliant(),
    };
    let tenant = scenario.build()?;
    let sim = Sim::start(
        tenant,
        SimOptions {
            port: cli.port,
            identity_port: cli.identity_port,
            ca_out: cli.ca_out,
            tls_out: cli.tls_out,
            workers: cli.workers,
            identity_header: cli.identity_header,
            arm_throttling: cli.arm_throttling,
            cloud: Default::default(),
        },
    )
    .await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", serde_json::to_string(sim.info())?)?;
    stdout.flush()?;
    shutdown_signal().await;
    sim.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
