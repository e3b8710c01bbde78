//! Plan: findings + policy + mode + what was stored before → what to do. Pure: no I/O, no
//! clock (time is passed in). `act` carries the plan out.
//!
//! Alerts go out on a change of state only — a new finding, a higher severity, a resolution —
//! plus reminders every `reminder_hours` for open critical and high findings (none when it is
//! 0). The sweep's digest goes out at most once per `digest_hours`, and only when it would tell
//! people something they have not heard within that interval ([`digest_window`]). A workspace that
//! is gone (its read answered 404) closes every finding still open about it, with one resolved
//! alert for those people were told about. Remediation is
//! planned only in `remediate` mode, only for rules the policy allows, and only within the
//! per-resource budget. `observe` mode plans neither.
//!
//! The loop guard is precise: an event that cmk-guard's own remediation caused leaves alone
//! only the findings of the (resource, rule) that remediation wrote — no second remediation,
//! no second alert, and no state written, so that the next event or sweep that is not its own
//! still sees any change there. Every other finding of that event is handled as on any event.

use std::collections::{BTreeMap, BTreeSet};

use time::{Duration, OffsetDateTime};

use crate::catalogue::RuleId;
use crate::notify::Change;
use crate::outcome::{Finding, FindingState, Severity};
use crate::policy::{Notify, Policy};
use crate::rules::Evaluation;
use crate::settings::Mode;
use crate::state::FindingKey;

/// What is stored about one finding key (workspace, rule, resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub key: FindingKey,
    pub open: bool,
    pub severity: Severity,
    pub last_notified: Option<OffsetDateTime>,
}

/// What to do about a finding's remediation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Nothing: the rule has no remediation, the policy does not consent, or the mode is
    /// `observe`.
    None,
    /// `alert` mode: say what remediation would do, without doing it.
    Describe,
    /// `remediate` mode: remediate now.
    Apply,
    /// `remediate` mode, but the per-resource budget is spent: skipped, and reported as a
    /// `guard.remediation-budget` finding (the resource keeps drifting back).
    OverBudget,
    /// The triggering event is (or may be) cmk-guard's own recent remediation of this
    /// (resource, rule) coming back: nothing is remediated, sent or recorded for it.
    OwnWrite,
}

/// The decision about one finding: everything act carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub finding: Finding,
    /// What changed since the stored state, as people hear it; `None` when nothing did (or
    /// for cmk-guard's own write): then nothing is recorded.
    pub change: Option<Change>,
    /// Whether people hear of the change (routed by severity when sent).
    pub alert: bool,
    pub remediation: Remedy,
    /// The stored state was open: a remediation that resolves the finding is news.
    pub was_open: bool,
}

impl Step {
    /// The step once its remediation was applied and verified: the finding is resolved, and a
    /// finding people knew open is told resolved (a new one is told as planned, with what was
    /// done). `verified` — what the remediation's check saw after the write — replaces the
    /// observation from before it, so the resolved finding says what holds now.
    pub fn remediated(mut self, verified: &str) -> Self {
        self.finding.state = FindingState::Resolved;
        self.finding.observed = verified.to_owned();
        if self.was_open {
            self.change = Some(Change::Resolved);
            self.alert = true;
        } else if self.change.is_none() {
            self.change = Some(Change::Resolved);
        }
        self
    }
}

/// Who caused the triggering event, as far as cmk-guard can tell: the loop guard's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Someone else — or no event at all: the sweep and on-demand checks start themselves.
    Other,
    /// cmk-guard's own identity.
    Own,
    /// The event does not name its caller (Key Vault events, ARM events without claims), or
    /// cmk-guard does not know its own object id: it may be cmk-guard's own write.
    Unknown,
}

/// How far back a remediation of cmk-guard's counts as "its own write" when an event that may
/// be its own arrives. Event Grid delivers in seconds; an event later than this is handled like
/// any other, which the stored state makes harmless when the remediation held.
pub const OWN_WRITE_WINDOW: Duration = Duration::hours(1);

/// Everything the planner needs besides the evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub mode: Mode,
    pub now: OffsetDateTime,
    /// Who caused the triggering event (the loop guard).
    pub cause: Cause,
    /// (rule, lower-case resource) pairs cmk-guard remediated within [`OWN_WRITE_WINDOW`];
    /// only consulted when the cause is not [`Cause::Other`].
    pub own_remediations: &'a BTreeSet<(RuleId, String)>,
    /// Remediation attempts in the last hour, by lower-case resource id.
    pub recent_attempts: &'a BTreeMap<String, u32>,
}

impl Inputs<'_> {
    fn attempts(&self, resource: &str) -> u32 {
        self.recent_attempts
            .get(&resource.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Whether this finding is what cmk-guard's own write changed, coming back as the event.
    fn own_write(&self, finding: &Finding) -> bool {
        self.cause != Cause::Other
            && self
                .own_remediations
                .contains(&(finding.rule, finding.resource.to_ascii_lowercase()))
    }
}

/// The `observed` text of a finding closed because its workspace was deleted.
pub const WORKSPACE_DELETED: &str = "workspace deleted";

/// At most this many remediation attempts per resource per hour; then the finding stays open
/// and flapping is reported instead of fought.
pub const REMEDIATION_BUDGET_PER_HOUR: u32 = 3;

/// Decides, for one workspace's evaluation and what was stored before.
pub fn plan(evaluation: &Evaluation, priors: &[Prior], inputs: &Inputs) -> Vec<Step> {
    let mut steps = Vec::new();
    let reminders = inputs.policy.notify.reminder_hours;
    let reminder = Duration::hours(i64::from(reminders));
    let sends = inputs.mode != Mode::Observe;
    for finding in &evaluation.findings {
        let prior = priors.iter().find(|p| p.key.names(finding));
        let change = match prior {
            Some(prior) if prior.open && finding.severity > prior.severity => {
                Some(Change::Escalated {
                    from: prior.severity,
                })
            }
            Some(prior) if prior.open => match prior.last_notified {
                None if sends => Some(Change::New),
                Some(at)
                    if sends
                        && reminders > 0
                        && finding.severity >= Severity::High
                        && inputs.now - at >= reminder =>
                {
                    Some(Change::Reminder)
                }
                _ => None,
            },
            _ => Some(Change::New),
        };
        let was_open = prior.is_some_and(|p| p.open);
        if inputs.own_write(finding) {
            steps.push(Step {
                finding: finding.clone(),
                change: None,
                alert: false,
                remediation: Remedy::OwnWrite,
                was_open,
            });
            continue;
        }
        let allowed = inputs.policy.allows_remediation(finding.rule);
        let within_budget = inputs.attempts(&finding.resource) < REMEDIATION_BUDGET_PER_HOUR;
        let remediation = match inputs.mode {
            Mode::Remediate if allowed && within_budget => Remedy::Apply,
            Mode::Remediate if allowed => Remedy::OverBudget,
            Mode::Alert if allowed => Remedy::Describe,
            _ => Remedy::None,
        };
        steps.push(Step {
            finding: finding.clone(),
            change,
            alert: sends && change.is_some(),
            remediation,
            was_open,
        });
    }
    // A resolution is never a repeat: the stored state is still open, so nobody heard of it,
    // whoever's write brought it about. A deleted workspace closes every open finding, event
    // rules' too. Either way the message closes what people were told, so a finding nobody
    // was told about (recorded in `observe` mode) closes silently.
    for prior in priors.iter().filter(|p| p.open) {
        if evaluation.findings.iter().any(|f| prior.key.names(f)) {
            continue;
        }
        // A rule id this version does not know (written by a newer one) is left as it is.
        let Some(rule) = RuleId::parse(&prior.key.rule) else {
            continue;
        };
        let (observed, notify) = if evaluation.workspace_deleted {
            (WORKSPACE_DELETED, sends && prior.last_notified.is_some())
        } else if evaluation.resolves(&prior.key.rule, &prior.key.resource) {
            (
                "the rule passes now",
                sends && prior.last_notified.is_some(),
            )
        } else {
            continue;
        };
        steps.push(Step {
            finding: Finding {
                rule,
                resource: prior.key.resource.clone(),
                workspace: prior.key.workspace.clone(),
                severity: prior.severity,
                state: crate::outcome::FindingState::Resolved,
                observed: observed.to_owned(),
                expected: String::new(),
            },
            change: Some(Change::Resolved),
            alert: notify,
            remediation: Remedy::None,
            was_open: true,
        });
    }
    steps
}

/// When the sweep's digest is due: the start of the current digest interval (intervals of
/// `digest_hours` from the Unix epoch, UTC), which names the digest in the outbox so that of all
/// sweeps within one interval, on any instance, only the first sends it. `None` when no digest
/// goes out: in `observe` mode, with `digest_hours = 0`, when nothing is `open`, or when people
/// were told about every open finding within the interval — by an event's alert, a reminder or
/// the sweep's own alert just now — so that the digest would only repeat it.
pub fn digest_window(
    open: &[Prior],
    notify: &Notify,
    mode: Mode,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    if mode == Mode::Observe || notify.digest_hours == 0 {
        return None;
    }
    let interval = Duration::hours(i64::from(notify.digest_hours));
    let unheard = open
        .iter()
        .filter(|prior| prior.open)
        .any(|prior| prior.last_notified.is_none_or(|at| now - at >= interval));
    if !unheard {
        return None;
    }
    let seconds = interval.whole_seconds();
    OffsetDateTime::from_unix_timestamp(now.unix_timestamp().div_euclid(seconds) * seconds).ok()
}

#[cfg(test)]
mod tests;
