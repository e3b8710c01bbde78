//! `cmk-guard history <workspace>`: the audit trail of a workspace's findings, read from the
//! state store `CMKGUARD_STATE` names (docs/state.md *History*). It only reads: a SQLite file
//! that does not exist is an error, never created.

use std::process::ExitCode;

use super::ListFormat;
use crate::history::{Entry, History};
use crate::ids::ArmResourceId;
use crate::report::{columns, short_name};
use crate::settings::Settings;
use crate::state::StateSpec;

/// The ARM type `history` accepts.
const WORKSPACE_TYPE: &str = "Microsoft.MachineLearningServices/workspaces";
/// Longest detail a table row shows (the JSON has the whole, bounded, text).
const MAX_DETAIL: usize = 100;

/// Runs `history`: exit 0 with the trail (empty when the workspace has none), 2 when the
/// workspace id is not one or the store is not configured or cannot be read.
pub(super) fn run(settings: Settings, workspace: &str, format: ListFormat) -> ExitCode {
    let workspace = match ArmResourceId::parse(workspace.trim()) {
        Ok(id) if id.is_type(WORKSPACE_TYPE) => id,
        Ok(_) => {
            eprintln!(
                "cmk-guard: history: `{}` is not the ARM id of an ML workspace ({WORKSPACE_TYPE})",
                crate::text::field(workspace)
            );
            return ExitCode::from(super::exit::CONFIGURATION);
        }
        Err(error) => {
            eprintln!("cmk-guard: history: {error}");
            return ExitCode::from(super::exit::CONFIGURATION);
        }
    };
    let history = match load(&settings, Some(workspace.as_str())) {
        Ok(history) => history,
        Err(error) => {
            eprintln!("cmk-guard: history: {error}");
            return ExitCode::from(super::exit::CONFIGURATION);
        }
    };
    let text = match format {
        ListFormat::Table => table(&history.entries),
        ListFormat::Json => match serde_json::to_string_pretty(&history.entries) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("cmk-guard: cannot print the history: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    println!("{}", text.trim_end());
    ExitCode::SUCCESS
}

/// Why the trail could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error(
        "no state store is configured: set CMKGUARD_STATE to the store the handler writes (sqlite:<path> or a Blob container URL)"
    )]
    NotConfigured,
    #[error("cannot read the state store {store}: {reason}")]
    Unreadable { store: String, reason: String },
}

/// The trail of `workspace` (every workspace when `None`) from the store `CMKGUARD_STATE`
/// names. The variable must be set: its default would name a file in the working directory,
/// which is not where a deployed handler keeps its trail.
pub(super) fn load(settings: &Settings, workspace: Option<&str>) -> Result<History, LoadError> {
    if std::env::var("CMKGUARD_STATE").map_or(true, |v| v.trim().is_empty()) {
        return Err(LoadError::NotConfigured);
    }
    let unreadable = |reason: String| LoadError::Unreadable {
        store: settings.state.to_string(),
        reason,
    };
    if let StateSpec::Sqlite(path) = &settings.state
        && !path.is_file()
    {
        return Err(unreadable("no such file".to_owned()));
    }
    let azure = crate::azure::Azure::new(&settings.azure(), |name| std::env::var(name).ok())
        .map_err(|error| unreadable(crate::text::chain(&error)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| unreadable(error.to_string()))?;
    runtime.block_on(async {
        let store = crate::state::open(&settings.state, &azure.transport, &azure.credential)
            .await
            .map_err(|error| unreadable(error.message))?;
        History::load(store.as_ref(), workspace)
            .await
            .map_err(|error| unreadable(error.message))
    })
}

/// The trail as a fixed-width table: time, rule, resource (its short name), step, caller,
/// detail; or a line saying there is none.
fn table(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "no history for this workspace".to_owned();
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|entry| {
            [
                // Whole seconds for people; `--format json` keeps the stored precision.
                entry
                    .at
                    .replace_nanosecond(0)
                    .unwrap_or(entry.at)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                entry.rule.clone(),
                short_name(&entry.resource).to_owned(),
                entry.step.as_str().to_owned(),
                caller(entry),
                crate::text::clean(&entry.detail, crate::text::Limit::chars(MAX_DETAIL))
                    .into_owned(),
            ]
            .map(|cell| crate::text::clean_owned(cell, crate::text::REASON))
        })
        .collect();
    let mut out = columns(
        ["TIME", "RULE", "RESOURCE", "STEP", "CALLER", "DETAIL"],
        &rows,
    );
    out.push_str(&format!("{} step(s)", entries.len()));
    out
}

/// Who caused the step: the name and object id when both are known, `-` when neither is.
fn caller(entry: &Entry) -> String {
    match (&entry.caller_name, &entry.caller) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        (Some(name), None) => name.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Step;

    fn entry(step: Step, caller: Option<&str>, detail: &str) -> Entry {
        Entry {
            at: time::OffsetDateTime::UNIX_EPOCH,
            workspace: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws".into(),
            rule: "vault.purge-protection".into(),
            resource: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-cmk".into(),
            step,
            caller: caller.map(str::to_owned),
            caller_name: None,
            detail: detail.into(),
        }
    }

    #[test]
    fn the_table_has_one_row_per_step_with_the_short_name_and_caller() {
        let text = table(&[
            entry(Step::Opened, Some("u-1"), "purge protection is off"),
            entry(
                Step::Resolved,
                None,
                &format!("a\u{1b}[2J{}", "x".repeat(300)),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(lines[1].contains("1970-01-01T00:00:00Z  vault.purge-protection  kv-cmk"));
        assert!(lines[1].contains("opened") && lines[1].contains("u-1"));
        assert!(lines[2].contains("resolved") && lines[2].contains(" - "));
        assert!(!text.contains('\u{1b}'));
        assert!(
            lines[2].chars().count() < 250,
            "the detail is cut: {}",
            lines[2]
        );
        assert_eq!(lines[3], "2 step(s)");
        assert_eq!(table(&[]), "no history for this workspace");
    }

    #[test]
    fn short_names_are_the_last_segment() {
        assert_eq!(short_name("/subscriptions/s/vaults/kv/"), "kv");
        assert_eq!(short_name("https://kv.vault.azure.net/keys/cmk"), "cmk");
        assert_eq!(short_name("plain"), "plain");
    }
}
