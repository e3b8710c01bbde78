//! The command line: `serve` for the Functions host, `evaluate` for a person or a pipeline.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::engine::Engine;
use crate::outcome::{Disposition, Outcome};
use crate::server::Application;
use crate::settings::{self, Settings};

/// cmk-guard keeps Azure ML workspaces with customer-managed keys compliant.
#[derive(Debug, Parser)]
#[command(name = "cmk-guard", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Azure Functions host (the default when FUNCTIONS_CUSTOMHANDLER_PORT is set).
    Serve {
        /// Port to listen on; defaults to FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Evaluate an event file or one resource and print the Outcome as JSON.
    Evaluate {
        /// A file holding one Event Grid or CloudEvents event, or an array of them (`-` for stdin).
        #[arg(
            long,
            required_unless_present = "resource",
            conflicts_with = "resource"
        )]
        event: Option<PathBuf>,
        /// An ARM id of an ML workspace, key vault or key.
        #[arg(long)]
        resource: Option<String>,
    },
}

/// Runs the command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        Some(command) => command,
        None if std::env::var_os(settings::PORT_VARIABLE).is_some() => {
            Command::Serve { port: None }
        }
        None => {
            eprintln!(
                "cmk-guard: no command given and {} is not set; see `cmk-guard --help`",
                settings::PORT_VARIABLE
            );
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("cmk-guard: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve { port } => serve(settings, port),
        Command::Evaluate { event, resource } => evaluate(settings, event, resource),
    }
}

fn serve(settings: Settings, port: Option<u16>) -> ExitCode {
    init_logging(true);
    let port = match port
        .map(Ok)
        .unwrap_or_else(|| settings::listen_port(|n| std::env::var(n).ok()))
    {
        Ok(port) => port,
        Err(error) => {
            eprintln!("cmk-guard: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cmk-guard: cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::from(2);
        }
    };
    let mode = settings.mode;
    let result = actix_web::rt::System::new().block_on(async move {
        let application = Application::build(Engine::new(settings), listener)?;
        tracing::info!(message = "Listening.", port = application.port(), mode = %mode, version = env!("CARGO_PKG_VERSION"));
        application.run_until_stopped().await
    });
    match result {
        Ok(()) => {
            tracing::info!(message = "Stopped.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cmk-guard: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn evaluate(settings: Settings, event: Option<PathBuf>, resource: Option<String>) -> ExitCode {
    init_logging(false);
    let engine = Engine::new(settings);
    let outcomes: Vec<Outcome> = if let Some(resource) = resource {
        let body = serde_json::json!({ "resource": resource }).to_string();
        match engine.evaluate_request(body.as_bytes(), &uuid::Uuid::new_v4().to_string()) {
            Ok(outcome) => vec![outcome],
            Err(reason) => {
                eprintln!("cmk-guard: {reason}");
                return ExitCode::from(2);
            }
        }
    } else {
        let path = event.unwrap_or_else(|| PathBuf::from("-"));
        let text = match read_input(&path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("cmk-guard: cannot read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        };
        match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Array(events)) => events.into_iter().map(|e| engine.on_event(e)).collect(),
            Ok(event) => vec![engine.on_event(event)],
            Err(_) => {
                vec![engine.on_event(Value::String(String::from_utf8_lossy(&text).into_owned()))]
            }
        }
    };
    let printed = if outcomes.len() == 1 {
        serde_json::to_string_pretty(&outcomes[0])
    } else {
        serde_json::to_string_pretty(&outcomes)
    };
    match printed {
        Ok(text) => println!("{text}"),
        Err(error) => {
            eprintln!("cmk-guard: cannot print the outcome: {error}");
            return ExitCode::FAILURE;
        }
    }
    if outcomes
        .iter()
        .any(|o| o.disposition == Disposition::Rejected)
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_input(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut buffer)?;
    } else {
        std::fs::File::open(path)?.read_to_end(&mut buffer)?;
    }
    Ok(buffer)
}

/// JSON lines on stdout for the host to collect; readable lines on stderr for the CLI.
fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CMKGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .with_writer(std::io::stdout)
            .try_init()
    } else {
        builder.compact().with_writer(std::io::stderr).try_init()
    };
}
