//! `cmk-guard who-uses <key URL | vault id>`: what depends on a key or a vault.

use std::process::ExitCode;

use super::ListFormat;
use crate::settings::Settings;

/// Runs `who-uses`.
pub(super) fn run(
    settings: Settings,
    target: &str,
    subscriptions: &[String],
    format: ListFormat,
) -> ExitCode {
    let _ = (settings, target, subscriptions, format);
    eprintln!("cmk-guard: who-uses is not built yet");
    ExitCode::from(super::exit::CONFIGURATION)
}
