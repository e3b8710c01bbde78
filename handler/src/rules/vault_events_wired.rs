//! `vault.events-wired`: cmk-guard receives the CMK vault's Event Grid events and its
//! `AuditEvent` log (self-wiring). Being written; not evaluated yet.

use super::{Context, Rule};
use crate::catalogue::RuleId;

pub(super) const RULE: Rule = Rule {
    id: RuleId::VaultEventsWired,
    check,
};

fn check(_context: &Context) -> Vec<super::Check> {
    Vec::new()
}
