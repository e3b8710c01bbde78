//! `cmk-guard who-uses <key URL | vault id>`: what depends on a key or a vault.
//!
//! Exit codes: 0 when the search was complete (whether or not anything uses the target), 2 for a
//! bad target, subscription or configuration, 3 when Resource Graph could not be read completely
//! (what was read is still printed).

use std::fmt::Write as _;
use std::process::ExitCode;

use tokio::time::Instant;

use super::{CLI_BUDGET, ListFormat, exit};
use crate::settings::Settings;
use crate::text::field;
use crate::who_uses::{self, Dependent, Report, Target};

/// Runs `who-uses`.
pub(super) fn run(
    settings: Settings,
    target: &str,
    subscriptions: &[String],
    format: ListFormat,
) -> ExitCode {
    let _telemetry = super::init_logging(false);
    let target = match Target::parse(target, &settings.intake.keyvault_dns_suffix) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("cmk-guard: who-uses: {error}");
            return ExitCode::from(exit::CONFIGURATION);
        }
    };
    let chosen = match super::parse_subscriptions(subscriptions) {
        Ok(list) => list,
        Err(code) => return code,
    };
    let (engine, runtime) = match super::read_only_engine(settings) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let deadline = Instant::now() + CLI_BUDGET;
    let allowlist = engine.settings().intake.subscriptions.clone();
    let listed = if allowlist.groups().is_empty() {
        Vec::new()
    } else {
        runtime.block_on(engine.discover_subscriptions(deadline))
    };
    super::report_discovery(&listed);
    let scope = if chosen.is_empty() {
        let (allowed, waiting) = who_uses::scope(&allowlist);
        let failure = listed.first().map(|first| {
            format!(
                "the subscriptions under management group {} could not be listed",
                first.group
            )
        });
        (allowed, failure.or(waiting))
    } else {
        if let Some(outside) = chosen.iter().find(|s| !allowlist.allows(s)) {
            eprintln!(
                "cmk-guard: --subscription: {outside} is not in CMKGUARD_SUBSCRIPTIONS or under CMKGUARD_MANAGEMENT_GROUPS"
            );
            return ExitCode::from(exit::CONFIGURATION);
        }
        (Some(chosen), None)
    };
    let report = runtime.block_on(who_uses::search(
        engine.observer(),
        &target,
        scope,
        deadline,
    ));
    if engine.no_credential() {
        return super::no_credential();
    }
    let text = match format {
        ListFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default(),
        ListFormat::Table => table(&report, &target),
    };
    println!("{}", text.trim_end());
    match &report.incomplete_reason {
        Some(reason) if !report.complete => {
            eprintln!("cmk-guard: incomplete: {reason}; the lists above may miss resources");
            ExitCode::from(exit::INCOMPLETE)
        }
        _ => ExitCode::from(exit::CLEAN),
    }
}

/// The readable form: each workspace with its managed resources, then the other resources, then
/// the counts. Every value from Azure is cleaned of control characters.
fn table(report: &Report, target: &Target) -> String {
    let mut out = String::new();
    let what = match target {
        Target::Key(_) => "key",
        Target::Vault { .. } => "vault",
    };
    let _ = writeln!(out, "Who uses {what} {}", field(&report.target));
    let _ = writeln!(out);
    let _ = writeln!(out, "Workspaces ({}):", report.workspaces.len());
    for workspace in &report.workspaces {
        let _ = writeln!(out, "  {}", line(&workspace.workspace, false));
        for managed in &workspace.managed_resources {
            let _ = writeln!(out, "    managed: {}", line(managed, true));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Other resources ({}):", report.other_resources.len());
    for other in &report.other_resources {
        let _ = writeln!(out, "  {}", line(other, true));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{} use this {what}.", report.counts());
    out
}

fn line(dependent: &Dependent, with_type: bool) -> String {
    let mut text = field(&dependent.id).into_owned();
    if with_type {
        let _ = write!(text, "  {}", field(&dependent.resource_type));
    }
    match (&dependent.key, &dependent.version) {
        (Some(key), Some(version)) => {
            let _ = write!(text, "  key {}  version {}", field(key), field(version));
            if let Some(in_use) = &dependent.version_in_use {
                let _ = write!(text, " (in use: {})", field(in_use));
            }
        }
        _ => text.push_str("  (key set by the workspace's service)"),
    }
    text
}
