//! Plan: findings + policy + mode + what was stored before → what to do. Pure: no I/O, no
//! clock (time is passed in). `act` carries the plan out.
//!
//! Alerts go out on a change of state only — a new finding, a higher severity, a resolution —
//! plus reminders every `reminder_hours` for open critical and high findings. Remediation is
//! planned only in `remediate` mode, only for rules the policy allows, only within the
//! per-resource budget, and never for an event cmk-guard caused itself.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use crate::outcome::{Finding, Severity};
use crate::policy::Policy;
use crate::rules::Evaluation;
use crate::settings::Mode;

/// What is stored about one finding key (workspace, rule, resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub workspace: String,
    pub rule: String,
    pub resource: String,
    pub open: bool,
    pub severity: Severity,
    pub last_notified: Option<OffsetDateTime>,
}

/// Why a finding changed, which decides whether and how people hear about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Open now, and was not open before.
    New,
    /// Still open, at a higher severity than before.
    Escalated,
    /// Still open, unchanged, and the reminder interval has passed.
    Reminder,
    /// Still open, nothing to say.
    Unchanged,
    /// Was open, the rule now passes.
    Resolved,
}

/// The decision about one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub finding: Finding,
    pub change: Change,
    /// Send an alert (routed by severity later).
    pub notify: bool,
    /// Try the rule's remediation now.
    pub remediate: bool,
    /// In `alert` mode: say what remediation would do, without doing it.
    pub describe_remediation: bool,
}

/// Everything the planner needs besides the evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub mode: Mode,
    pub now: OffsetDateTime,
    /// True when the triggering event was caused by cmk-guard's own identity (loop guard).
    pub caused_by_self: bool,
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
}

/// At most this many remediation attempts per resource per hour; then the finding stays open
/// and flapping is reported instead of fought.
pub const REMEDIATION_BUDGET_PER_HOUR: u32 = 3;

/// Decides, for one workspace's evaluation and what was stored before.
pub fn plan(evaluation: &Evaluation, priors: &[Prior], inputs: &Inputs) -> Vec<Step> {
    let mut steps = Vec::new();
    let reminder = Duration::hours(i64::from(inputs.policy.notify.reminder_hours.max(1)));
    let acting = inputs.mode != Mode::Observe && !inputs.caused_by_self;
    for finding in &evaluation.findings {
        let prior = priors.iter().find(|p| same_key(p, finding));
        let change = match prior {
            Some(prior) if prior.open && finding.severity > prior.severity => Change::Escalated,
            Some(prior) if prior.open => {
                let due = prior
                    .last_notified
                    .is_none_or(|at| inputs.now - at >= reminder);
                if due && finding.severity >= Severity::High {
                    Change::Reminder
                } else {
                    Change::Unchanged
                }
            }
            _ => Change::New,
        };
        let allowed = inputs.policy.allows_remediation(&finding.rule);
        let within_budget = inputs.attempts(&finding.resource) < REMEDIATION_BUDGET_PER_HOUR;
        steps.push(Step {
            finding: finding.clone(),
            change,
            notify: acting && change != Change::Unchanged,
            remediate: acting && inputs.mode == Mode::Remediate && allowed && within_budget,
            describe_remediation: acting && inputs.mode == Mode::Alert && allowed,
        });
    }
    for prior in priors.iter().filter(|p| p.open) {
        let still_open = evaluation.findings.iter().any(|f| same_key(prior, f));
        if !still_open && evaluation.resolves(&prior.rule, &prior.resource) {
            steps.push(Step {
                finding: Finding {
                    rule: prior.rule.clone(),
                    resource: prior.resource.clone(),
                    workspace: prior.workspace.clone(),
                    severity: prior.severity,
                    state: crate::outcome::FindingState::Resolved,
                    observed: "the rule passes now".to_owned(),
                    expected: String::new(),
                },
                change: Change::Resolved,
                notify: acting,
                remediate: false,
                describe_remediation: false,
            });
        }
    }
    steps
}

/// True when the finding is the same (workspace, rule, resource), ignoring ASCII case.
fn same_key(prior: &Prior, finding: &Finding) -> bool {
    prior.rule == finding.rule
        && prior.workspace.eq_ignore_ascii_case(&finding.workspace)
        && prior.resource.eq_ignore_ascii_case(&finding.resource)
}

/// Whether a plan step's remediation exceeded the budget (reported as its own finding).
pub fn over_budget(step: &Step, inputs: &Inputs) -> bool {
    inputs.mode == Mode::Remediate
        && !inputs.caused_by_self
        && inputs.policy.allows_remediation(&step.finding.rule)
        && inputs.attempts(&step.finding.resource) >= REMEDIATION_BUDGET_PER_HOUR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FindingState;
    use crate::rules::{Check, Status};
    use time::macros::datetime;

    const WS: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";
    const VAULT: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn finding(rule: &str, severity: Severity) -> Finding {
        Finding {
            rule: rule.into(),
            resource: VAULT.into(),
            workspace: WS.into(),
            severity,
            state: FindingState::Open,
            observed: "off".into(),
            expected: "on".into(),
        }
    }

    fn evaluation(findings: Vec<Finding>, passes: &[&'static str]) -> Evaluation {
        let mut checks: Vec<Check> = findings
            .iter()
            .map(|f| Check {
                rule: crate::rules::find(&f.rule)
                    .map(|r| r.id)
                    .unwrap_or("guard.visibility"),
                resource: f.resource.clone(),
                status: Status::Fail(f.severity),
                observed: String::new(),
                expected: String::new(),
            })
            .collect();
        checks.extend(passes.iter().map(|rule| Check {
            rule,
            resource: VAULT.into(),
            status: Status::Pass,
            observed: String::new(),
            expected: String::new(),
        }));
        Evaluation {
            workspace: WS.into(),
            checks,
            findings,
            exempted: Vec::new(),
        }
    }

    fn prior(rule: &str, severity: Severity, open: bool, notified_hours_ago: i64) -> Prior {
        Prior {
            workspace: WS.into(),
            rule: rule.into(),
            resource: VAULT.into(),
            open,
            severity,
            last_notified: Some(NOW - Duration::hours(notified_hours_ago)),
        }
    }

    fn consenting_policy() -> Policy {
        Policy::from_toml_str(
            "[remediation.\"vault.purge-protection\"]\nenabled = true\nirreversible_ok = true\n",
            "test",
        )
        .unwrap()
    }

    fn run(
        mode: Mode,
        policy: &Policy,
        evaluation: &Evaluation,
        priors: &[Prior],
        attempts: u32,
        by_self: bool,
    ) -> Vec<Step> {
        let recent = BTreeMap::from([(VAULT.to_ascii_lowercase(), attempts)]);
        plan(
            evaluation,
            priors,
            &Inputs {
                policy,
                mode,
                now: NOW,
                caused_by_self: by_self,
                recent_attempts: &recent,
            },
        )
    }

    #[test]
    fn alerts_only_on_a_change_of_state() {
        let policy = Policy::default();
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let new = run(Mode::Alert, &policy, &eval, &[], 0, false);
        assert_eq!((new[0].change, new[0].notify), (Change::New, true));
        let same = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
            false,
        );
        assert_eq!((same[0].change, same[0].notify), (Change::Unchanged, false));
        let escalated = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::Medium, true, 1)],
            0,
            false,
        );
        assert_eq!(
            (escalated[0].change, escalated[0].notify),
            (Change::Escalated, true)
        );
        let reopened = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, false, 1)],
            0,
            false,
        );
        assert_eq!(reopened[0].change, Change::New);
    }

    #[test]
    fn reminders_for_open_critical_and_high_after_the_interval() {
        let policy = Policy::default();
        let high = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let steps = run(
            Mode::Alert,
            &policy,
            &high,
            &[prior("vault.purge-protection", Severity::High, true, 25)],
            0,
            false,
        );
        assert_eq!((steps[0].change, steps[0].notify), (Change::Reminder, true));
        let low = evaluation(vec![finding("key.rotation-policy", Severity::Low)], &[]);
        let steps = run(
            Mode::Alert,
            &policy,
            &low,
            &[prior("key.rotation-policy", Severity::Low, true, 25)],
            0,
            false,
        );
        assert_eq!(steps[0].change, Change::Unchanged);
    }

    #[test]
    fn a_passing_rule_resolves_its_open_finding() {
        let policy = Policy::default();
        let eval = evaluation(Vec::new(), &["vault.purge-protection"]);
        let steps = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
            false,
        );
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].change, steps[0].notify, steps[0].finding.state),
            (Change::Resolved, true, FindingState::Resolved)
        );
        let unknown = evaluation(Vec::new(), &[]);
        assert!(
            run(
                Mode::Alert,
                &policy,
                &unknown,
                &[prior("vault.purge-protection", Severity::High, true, 1)],
                0,
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn remediation_needs_the_mode_the_consent_and_the_budget() {
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let consenting = consenting_policy();
        assert!(run(Mode::Remediate, &consenting, &eval, &[], 0, false)[0].remediate);
        assert!(
            !run(Mode::Remediate, &Policy::default(), &eval, &[], 0, false)[0].remediate,
            "no consent"
        );
        assert!(
            !run(Mode::Alert, &consenting, &eval, &[], 0, false)[0].remediate,
            "alert mode"
        );
        assert!(run(Mode::Alert, &consenting, &eval, &[], 0, false)[0].describe_remediation);
        let exhausted = run(Mode::Remediate, &consenting, &eval, &[], 3, false);
        assert!(!exhausted[0].remediate);
        let recent = BTreeMap::from([(VAULT.to_ascii_lowercase(), 3)]);
        let inputs = Inputs {
            policy: &consenting,
            mode: Mode::Remediate,
            now: NOW,
            caused_by_self: false,
            recent_attempts: &recent,
        };
        assert!(over_budget(&exhausted[0], &inputs));
    }

    #[test]
    fn observe_mode_and_own_events_do_nothing() {
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let consenting = consenting_policy();
        for steps in [
            run(Mode::Observe, &consenting, &eval, &[], 0, false),
            run(Mode::Remediate, &consenting, &eval, &[], 0, true),
        ] {
            assert!(!steps[0].notify && !steps[0].remediate && !steps[0].describe_remediation);
        }
    }
}
