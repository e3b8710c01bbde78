//! `cmk-guard history <workspace>`: the audit trail of a workspace's findings.

use std::process::ExitCode;

use super::ListFormat;
use crate::settings::Settings;

/// Runs `history`.
pub(super) fn run(settings: Settings, workspace: &str, format: ListFormat) -> ExitCode {
    let _ = (settings, workspace, format);
    eprintln!("cmk-guard: history is not built yet");
    ExitCode::from(super::exit::CONFIGURATION)
}
