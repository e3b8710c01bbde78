//! `[notify]`: which finding severities go to which channel, and how often open findings are
//! re-sent.

use serde::Deserialize;
use toml::Spanned;

use super::error::{Invalid, KeyPath};
use crate::outcome::Severity;

/// Which finding severities go to which channel, and how often open findings are re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub teams: Vec<Severity>,
    pub email: Vec<Severity>,
    pub webhook: Vec<Severity>,
    /// Hours between reminders for a finding that stays open; 0 sends none.
    pub reminder_hours: u32,
}

impl Default for Notify {
    fn default() -> Self {
        use Severity::*;
        Self {
            teams: vec![Critical, High, Medium],
            email: vec![Critical, High],
            webhook: vec![Critical, High, Medium, Low],
            reminder_hours: 24,
        }
    }
}

/// The `[notify]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    teams: Option<Vec<Severity>>,
    email: Option<Vec<Severity>>,
    webhook: Option<Vec<Severity>>,
    reminder_hours: Option<Spanned<u32>>,
}

impl RawNotify {
    pub(super) fn validate(self, at: &KeyPath) -> Result<Notify, Invalid> {
        let defaults = Notify::default();
        let reminder_hours = match self.reminder_hours {
            Some(hours) if *hours.get_ref() > 8760 => {
                return Err(Invalid::new(
                    hours.span(),
                    at.key("reminder_hours"),
                    "reminder_hours must be at most 8760 (a year)",
                ));
            }
            Some(hours) => hours.into_inner(),
            None => defaults.reminder_hours,
        };
        Ok(Notify {
            teams: self.teams.unwrap_or(defaults.teams),
            email: self.email.unwrap_or(defaults.email),
            webhook: self.webhook.unwrap_or(defaults.webhook),
            reminder_hours,
        })
    }
}
