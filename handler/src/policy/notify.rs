//! `[notify]`: which finding severities go to which channel, how often open findings are
//! re-sent, and how often the sweep's digest may go out.

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
    /// The sweep's digest goes out at most once per this many hours (intervals start at
    /// multiples of it since the Unix epoch, UTC); 0 sends none.
    pub digest_hours: u32,
}

impl Default for Notify {
    fn default() -> Self {
        use Severity::*;
        Self {
            teams: vec![Critical, High, Medium],
            email: vec![Critical, High],
            webhook: vec![Critical, High, Medium, Low],
            reminder_hours: 24,
            digest_hours: 24,
        }
    }
}

/// The longest digest interval: as long as the outbox keeps sent ids
/// ([`crate::state::SENT_NOTIFICATION_RETENTION`], a week).
pub const MAX_DIGEST_HOURS: u32 = 168;

/// The `[notify]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    teams: Option<Vec<Severity>>,
    email: Option<Vec<Severity>>,
    webhook: Option<Vec<Severity>>,
    reminder_hours: Option<Spanned<u32>>,
    digest_hours: Option<Spanned<u32>>,
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
        // A digest's outbox id names its interval, and the outbox remembers sent ids for
        // `SENT_NOTIFICATION_RETENTION`: a longer interval could send one twice.
        let digest_hours = match self.digest_hours {
            Some(hours) if *hours.get_ref() > MAX_DIGEST_HOURS => {
                return Err(Invalid::new(
                    hours.span(),
                    at.key("digest_hours"),
                    "digest_hours must be at most 168 (a week)",
                ));
            }
            Some(hours) => hours.into_inner(),
            None => defaults.digest_hours,
        };
        Ok(Notify {
            teams: self.teams.unwrap_or(defaults.teams),
            email: self.email.unwrap_or(defaults.email),
            webhook: self.webhook.unwrap_or(defaults.webhook),
            reminder_hours,
            digest_hours,
        })
    }
}
