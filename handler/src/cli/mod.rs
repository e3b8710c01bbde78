//! The command line: `serve` for the Functions host, `evaluate` and `scan` for a person or a
//! pipeline, `who-uses` for a key's blast radius, `history` for a workspace's audit trail,
//! `policy check` to validate a policy file before deploying it.

mod history;
mod progress;
mod who_uses;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::azure::Azure;
use crate::azure::credential::{self, NO_CREDENTIAL};
use crate::engine::{Engine, Unfinished};
use crate::ids::SubscriptionId;
use crate::outcome::{Disposition, FindingState, Outcome, Severity};
use crate::policy::Policy;
use crate::server::Application;
use crate::settings::{self, Settings};

/// How long the CLI waits for Azure.
const CLI_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// The CLI's exit codes (`serve` uses the configuration one); a pipeline branches on those of
/// `evaluate` and `scan`, so each means one thing and an incomplete result can never pass.
mod exit {
    /// Everything was read; no finding at or above `--fail-on`, no event rejected.
    pub const CLEAN: u8 = 0;
    /// A finding at or above `--fail-on` is open (`scan`, `evaluate`), or (`evaluate`) an event
    /// was rejected.
    pub const FINDINGS: u8 = 1;
    /// Bad arguments, input or configuration, including no Azure credential: nothing checked.
    pub const CONFIGURATION: u8 = 2;
    /// Incomplete: something could not be read (an open `guard.visibility` finding, or Azure
    /// did not answer in time). Takes precedence over [`FINDINGS`].
    pub const INCOMPLETE: u8 = 3;
}

/// The exit codes as `--help` shows them (the README has the same table).
const EXIT_CODES: &str = "Exit codes (evaluate, scan):
  0  complete: everything was read, nothing at or above --fail-on, no event rejected
  1  scan or evaluate: a finding at or above --fail-on is open; evaluate: an event was rejected
  2  bad arguments, input or configuration, including no Azure credential (nothing was checked)
  3  incomplete: something could not be read (an open guard.visibility finding says what and
     what to grant, or Azure did not answer in time); 3 wins over 1, so an incomplete result
     never passes a gate";

/// cmk-guard keeps Azure ML workspaces with customer-managed keys compliant.
#[derive(Debug, Parser)]
#[command(name = "cmk-guard", version, about, long_about = None, after_help = EXIT_CODES)]
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
    /// Evaluate an event file or one resource and print the Outcome (JSON or a table).
    #[command(
        after_help = EXIT_CODES,
        group(clap::ArgGroup::new("input").required(true).args(["event", "resource"]))
    )]
    Evaluate {
        /// A file holding one Event Grid or CloudEvents event, or an array of them (`-` for stdin).
        #[arg(long)]
        event: Option<PathBuf>,
        /// An ARM id of an ML workspace, key vault or key.
        #[arg(long)]
        resource: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Exit 1 when a finding of this severity or worse is open.
        #[arg(long, value_enum, value_name = "SEVERITY")]
        fail_on: Option<SeverityArg>,
    },
    /// Check every ML workspace of the subscriptions now (a CI gate with --fail-on).
    #[command(after_help = EXIT_CODES)]
    Scan {
        /// A subscription to scan; repeat for several. Default: CMKGUARD_SUBSCRIPTIONS, else
        /// every subscription the identity can read.
        #[arg(long = "subscription", value_name = "ID")]
        subscriptions: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Exit 1 when a finding of this severity or worse is open.
        #[arg(long, value_enum, value_name = "SEVERITY")]
        fail_on: Option<SeverityArg>,
        /// No progress on stderr, even at a terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// List every workspace and resource that depends on a key or a vault: what breaks if it is
    /// disabled, deleted or rotated.
    WhoUses {
        /// A key URL (with or without version) or the ARM id of a key vault.
        target: String,
        /// A subscription to search; repeat for several. Default: CMKGUARD_SUBSCRIPTIONS, else
        /// every subscription the identity can read.
        #[arg(long = "subscription", value_name = "ID")]
        subscriptions: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show the audit trail of a workspace's findings from the state store (CMKGUARD_STATE).
    History {
        /// The ARM id of the ML workspace.
        workspace: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Work with the policy file (CMKGUARD_POLICY_FILE).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

use crate::report::Format;

/// How `who-uses` and `history` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    /// JSON, for tools.
    Json,
    /// A readable table.
    Table,
}

/// A severity on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(value: SeverityArg) -> Self {
        match value {
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file: print a summary and exit 0, or the error (line and key) and exit 1.
    Check {
        /// The TOML policy file.
        file: PathBuf,
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
            return ExitCode::from(exit::CONFIGURATION);
        }
    };
    match command {
        Command::Serve { port } => load_settings().map_or_else(|code| code, |s| serve(s, port)),
        Command::Evaluate {
            event,
            resource,
            format,
            fail_on,
        } => load_settings().map_or_else(
            |code| code,
            |s| evaluate(s, event, resource, format, fail_on),
        ),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => check_policy(&file),
        Command::Scan {
            subscriptions,
            format,
            fail_on,
            quiet,
        } => load_settings().map_or_else(
            |code| code,
            |s| scan(s, &subscriptions, format, fail_on, quiet),
        ),
        Command::WhoUses {
            target,
            subscriptions,
            format,
        } => load_settings().map_or_else(
            |code| code,
            |s| who_uses::run(s, &target, &subscriptions, format),
        ),
        Command::History { workspace, format } => {
            load_settings().map_or_else(|code| code, |s| history::run(s, &workspace, format))
        }
    }
}

/// The configuration from the environment, or the exit code after saying what is wrong.
fn load_settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|error| {
        eprintln!("cmk-guard: invalid configuration: {error}");
        ExitCode::from(exit::CONFIGURATION)
    })
}

/// Validates a policy file; needs no other configuration.
fn check_policy(file: &Path) -> ExitCode {
    match Policy::load(file) {
        Ok(policy) => {
            let today = time::OffsetDateTime::now_utc().date();
            println!("ok: {}: {}", policy.source, policy.summary(today));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cmk-guard: {error}");
            ExitCode::from(1)
        }
    }
}

fn serve(settings: Settings, port: Option<u16>) -> ExitCode {
    let _telemetry = init_logging(true);
    let port = match port
        .map(Ok)
        .unwrap_or_else(|| settings::listen_port(|n| std::env::var(n).ok()))
    {
        Ok(port) => port,
        Err(error) => {
            eprintln!("cmk-guard: cannot start: {error}");
            return ExitCode::from(exit::CONFIGURATION);
        }
    };
    let azure = match Azure::new(&settings.azure(), |name| std::env::var(name).ok()) {
        Ok(azure) => azure,
        Err(error) => {
            let error = crate::text::chain(&error);
            eprintln!("cmk-guard: cannot set up Azure access: {error}");
            return ExitCode::from(exit::CONFIGURATION);
        }
    };
    // Application Insights uploads authenticate with the same identity (when asked to).
    crate::telemetry::app_insights::authenticate_with(
        azure.credential.clone(),
        settings.cloud.monitor_suffix(),
    );
    let mode = settings.mode;
    let credential = azure.credential_source;
    let sign_in = (credential == credential::DEVELOPER_TOOLS).then(|| {
        (
            azure.credential.clone(),
            azure.sign_in.clone(),
            settings.arm_endpoint.to_string(),
        )
    });
    let result = actix_web::rt::System::new().block_on(async move {
        let engine = match Engine::acting(settings, azure).await {
            Ok(engine) => engine,
            Err(error) => {
                eprintln!("cmk-guard: cannot start: {}", crate::text::chain(&error));
                return Ok(false);
            }
        };
        // What any instance learned of the service-provisioned resource groups, before the
        // first event is classified.
        engine.load_managed_groups().await;
        // Best effort, beside the server: until it succeeds, events from subscriptions that
        // are not listed are asked for again, and every sweep tries again.
        if let Some((arm, allowlist)) = engine.discovery() {
            actix_web::rt::spawn(async move {
                let deadline = Instant::now() + crate::engine::EVENT_BUDGET;
                crate::engine::discover(&arm, &allowlist, deadline).await
            });
        }
        // The port is taken last: the host sees it open only once everything it needs —
        // settings, Azure access, the state store, the alert channels — is ready.
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cmk-guard: cannot listen on 127.0.0.1:{port}: {error}");
                return Ok(false);
            }
        };
        let application = Application::build(engine, listener)?;
        tracing::info!(
            message = "Listening.",
            port = application.port(),
            mode = %mode,
            credential,
            version = env!("CARGO_PKG_VERSION")
        );
        if let Some((credential, status, arm_endpoint)) = sign_in {
            actix_web::rt::spawn(check_sign_in(credential, status, arm_endpoint));
        }
        application.run_until_stopped().await.map(|()| true)
    });
    match result {
        Ok(true) => {
            tracing::info!(message = "Stopped.");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::from(exit::CONFIGURATION),
        Err(error) => {
            eprintln!("cmk-guard: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn evaluate(
    settings: Settings,
    event: Option<PathBuf>,
    resource: Option<String>,
    format: Format,
    fail_on: Option<SeverityArg>,
) -> ExitCode {
    let _telemetry = init_logging(false);
    let (engine, runtime) = match read_only_engine(settings) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let deadline = Instant::now() + CLI_BUDGET;
    let results: Vec<Result<Outcome, Unfinished>> = if let Some(resource) = resource {
        let body = serde_json::json!({ "resource": resource }).to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        match runtime.block_on(engine.evaluate_request(body.as_bytes(), &request_id, deadline)) {
            Ok(result) => vec![result],
            Err(reason) => {
                eprintln!("cmk-guard: {reason}");
                return ExitCode::from(exit::CONFIGURATION);
            }
        }
    } else {
        let path = event.unwrap_or_else(|| PathBuf::from("-"));
        let text = match read_input(&path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("cmk-guard: cannot read {}: {error}", path.display());
                return ExitCode::from(exit::CONFIGURATION);
            }
        };
        let events = match serde_json::from_slice::<Value>(&text) {
            Ok(Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(_) => vec![Value::String(String::from_utf8_lossy(&text).into_owned())],
        };
        runtime.block_on(join_all(
            events.into_iter().map(|e| engine.on_event(e, deadline)),
        ))
    };
    if engine.no_credential() {
        return no_credential();
    }
    let mut unavailable = false;
    let outcomes: Vec<Outcome> = results
        .into_iter()
        .map(|result| match result {
            Ok(outcome) => outcome,
            Err(unfinished) => {
                eprintln!("cmk-guard: incomplete: {}", unfinished.reason());
                unavailable = true;
                *unfinished.outcome
            }
        })
        .collect();
    if let Err(code) = print(format, &outcomes, engine.settings()) {
        return code;
    }
    ExitCode::from(verdict(&outcomes, unavailable, fail_on.map(Severity::from)))
}

/// How long a scan may take before what is left unread is reported as not visible.
const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn scan(
    settings: Settings,
    subscriptions: &[String],
    format: Format,
    fail_on: Option<SeverityArg>,
    quiet: bool,
) -> ExitCode {
    let _telemetry = init_logging(false);
    let subscriptions = match parse_subscriptions(subscriptions) {
        Ok(list) => list,
        Err(code) => return code,
    };
    let deadline = Instant::now() + SCAN_BUDGET;
    let mut settings = settings;
    if !subscriptions.is_empty() {
        let allowlist = settings.intake.subscriptions.clone();
        if !allowlist.groups().is_empty() {
            // Whether they are under the management groups is known only once listed.
            let (engine, runtime) = match read_only_engine(settings.clone()) {
                Ok(pair) => pair,
                Err(code) => return code,
            };
            report_discovery(&runtime.block_on(engine.discover_subscriptions(deadline)));
        }
        if let Some(outside) = subscriptions.iter().find(|s| !allowlist.allows(s)) {
            eprintln!(
                "cmk-guard: --subscription: {outside} is not in CMKGUARD_SUBSCRIPTIONS or under CMKGUARD_MANAGEMENT_GROUPS"
            );
            return ExitCode::from(exit::CONFIGURATION);
        }
        // The scan's subscriptions are its allowlist: nothing outside them is read.
        settings.intake.subscriptions = crate::ids::Allowlist::listed(Some(subscriptions));
    }
    let (engine, runtime) = match read_only_engine(settings) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    report_discovery(&runtime.block_on(engine.discover_subscriptions(deadline)));
    let scope = engine.settings().intake.subscriptions.snapshot();
    let progress = progress::Progress::on_stderr(quiet);
    let id = uuid::Uuid::new_v4().to_string();
    let outcome = runtime.block_on(engine.scan(&id, scope.as_deref(), deadline, &progress));
    progress.finish();
    if engine.no_credential() {
        return no_credential();
    }
    if let Err(code) = print(format, std::slice::from_ref(&outcome), engine.settings()) {
        return code;
    }
    ExitCode::from(verdict(
        std::slice::from_ref(&outcome),
        false,
        fail_on.map(Severity::from),
    ))
}

/// The `--subscription` arguments, or the exit code after saying which one is not an id.
fn parse_subscriptions(arguments: &[String]) -> Result<Vec<SubscriptionId>, ExitCode> {
    arguments
        .iter()
        .map(|s| SubscriptionId::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            eprintln!("cmk-guard: --subscription: {error}");
            ExitCode::from(exit::CONFIGURATION)
        })
}

/// Prints `outcomes` in `format` on stdout, or says why not and gives the exit code. The HTML
/// report adds first seen and remediation history from the audit trail when `CMKGUARD_STATE`
/// names a readable store (else it says none was read); the CSV, first seen.
fn print(format: Format, outcomes: &[Outcome], settings: &Settings) -> Result<(), ExitCode> {
    let history = matches!(format, Format::Html | Format::Csv)
        .then(|| history::load(settings, None))
        .and_then(|loaded| match loaded {
            Ok(history) => Some(history),
            Err(history::LoadError::NotConfigured) => None,
            Err(error) => {
                eprintln!("cmk-guard: the report has no history: {error}");
                None
            }
        });
    let context = crate::report::Context {
        generated: time::OffsetDateTime::now_utc(),
        history: history.as_ref(),
    };
    match crate::report::render(format, outcomes, &context) {
        Ok(text) => {
            println!("{}", text.trim_end());
            Ok(())
        }
        Err(error) => {
            eprintln!("cmk-guard: cannot print the outcome: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// The exit code of printed outcomes, in the documented precedence: incomplete ([`exit::INCOMPLETE`]:
/// Azure did not answer in time, or an open `guard.visibility` finding) before a finding at or
/// above `fail_on` or a rejected event ([`exit::FINDINGS`]), so that a result with blind spots
/// never passes a gate however clean the rest looks.
fn verdict(outcomes: &[Outcome], timed_out: bool, fail_on: Option<Severity>) -> u8 {
    let open = || {
        outcomes
            .iter()
            .flat_map(|o| &o.findings)
            .filter(|f| f.state == FindingState::Open)
    };
    let unseen = open()
        .filter(|f| f.rule == crate::rules::VISIBILITY)
        .count();
    if unseen > 0 {
        eprintln!(
            "cmk-guard: incomplete: {unseen} thing(s) could not be read; the {} finding(s) say what and what to grant",
            crate::rules::VISIBILITY
        );
    }
    if timed_out || unseen > 0 {
        exit::INCOMPLETE
    } else if outcomes
        .iter()
        .any(|o| o.disposition == Disposition::Rejected)
        || fail_on.is_some_and(|t| open().any(|f| f.severity >= t))
    {
        exit::FINDINGS
    } else {
        exit::CLEAN
    }
}

/// No credential: a configuration error, reported as one paragraph; nothing is printed on
/// stdout because nothing was checked.
fn no_credential() -> ExitCode {
    eprintln!("cmk-guard: {NO_CREDENTIAL}");
    ExitCode::from(exit::CONFIGURATION)
}

/// Asks for a token once, in the background (readiness must not wait for `az`), and logs
/// [`NO_CREDENTIAL`] when there is none: the log then says why invocations fail (503) before
/// the first one does. A later sign-in is picked up by the next invocation.
async fn check_sign_in(
    credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential>,
    status: credential::SignInStatus,
    arm_endpoint: String,
) {
    let scope = format!("{}/.default", arm_endpoint.trim_end_matches('/'));
    if credential.get_token(&[scope.as_str()], None).await.is_err() && status.no_credential() {
        tracing::error!(message = "No Azure credential found.", help = NO_CREDENTIAL);
    }
}

/// The read-only engine of the CLI commands and a runtime to drive it, or the exit code after
/// saying what is wrong.
/// Says which management groups could not be listed (their subscriptions are not scanned).
fn report_discovery(failures: &[crate::engine::DiscoveryFailure]) {
    for failure in failures {
        eprintln!(
            "cmk-guard: cannot list the subscriptions under management group {}: {}",
            failure.group,
            crate::text::chain(&failure.error)
        );
    }
}

fn read_only_engine(settings: Settings) -> Result<(Engine, tokio::runtime::Runtime), ExitCode> {
    let azure =
        Azure::new(&settings.azure(), |name| std::env::var(name).ok()).map_err(|error| {
            eprintln!("cmk-guard: cannot set up Azure access: {error}");
            ExitCode::from(exit::CONFIGURATION)
        })?;
    tracing::debug!(
        message = "Signing in.",
        credential = azure.credential_source
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("cmk-guard: cannot start the runtime: {error}");
            ExitCode::FAILURE
        })?;
    Ok((Engine::new(settings, azure), runtime))
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

/// JSON lines on stdout for the host to collect; readable lines on stderr for the CLI; export
/// to Application Insights and over OTLP when configured (flushed when the returned value
/// drops), trusting what every client trusts (a bad `CMKGUARD_CA_BUNDLE` is reported later, by
/// the settings; export then trusts Mozilla's roots and the system store only).
fn init_logging(json: bool) -> crate::telemetry::Telemetry {
    let bundle = std::env::var_os("CMKGUARD_CA_BUNDLE").map(PathBuf::from);
    let roots = crate::azure::transport::trusted_roots(bundle.as_deref())
        .or_else(|_| crate::azure::transport::trusted_roots(None))
        .unwrap_or_else(|_| rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    crate::telemetry::init(json, roots)
}
