//! Plan: findings + policy + mode + what was stored before → what to do. Pure: no I/O, no
//! clock (time is passed in). `act` carries the plan out.
//!
//! Alerts go out on a change of state only — a new finding, a higher severity, a resolution —
//! plus reminders every `reminder_hours` for open critical and high findings. A workspace that
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
use crate::policy::Policy;
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
    /// done).
    pub fn remediated(mut self) -> Self {
        self.finding.state = FindingState::Resolved;
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
    let reminder = Duration::hours(i64::from(inputs.policy.notify.reminder_hours.max(1)));
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
            rule: RuleId::parse(rule).unwrap(),
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
                rule: f.rule,
                resource: f.resource.clone(),
                status: Status::Fail(f.severity),
                observed: String::new(),
                expected: String::new(),
            })
            .collect();
        checks.extend(passes.iter().map(|rule| Check {
            rule: rule.parse().expect("a rule id"),
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
            workspace_deleted: false,
        }
    }

    fn prior(rule: &str, severity: Severity, open: bool, notified_hours_ago: i64) -> Prior {
        Prior {
            key: FindingKey {
                workspace: WS.into(),
                rule: rule.into(),
                resource: VAULT.into(),
            },
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
    ) -> Vec<Step> {
        guarded(
            mode,
            policy,
            evaluation,
            priors,
            attempts,
            Cause::Other,
            &[],
        )
    }

    /// Plans with the loop guard's inputs: who caused the event, and which rules cmk-guard
    /// remediated on the vault within the window.
    fn guarded(
        mode: Mode,
        policy: &Policy,
        evaluation: &Evaluation,
        priors: &[Prior],
        attempts: u32,
        cause: Cause,
        remediated_rules: &[&str],
    ) -> Vec<Step> {
        let recent = BTreeMap::from([(VAULT.to_ascii_lowercase(), attempts)]);
        let own_remediations = remediated_rules
            .iter()
            .map(|rule| (RuleId::parse(rule).unwrap(), VAULT.to_ascii_lowercase()))
            .collect();
        plan(
            evaluation,
            priors,
            &Inputs {
                policy,
                mode,
                now: NOW,
                cause,
                own_remediations: &own_remediations,
                recent_attempts: &recent,
            },
        )
    }

    #[test]
    fn alerts_only_on_a_change_of_state() {
        let policy = Policy::default();
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let new = run(Mode::Alert, &policy, &eval, &[], 0);
        assert_eq!((new[0].change, new[0].alert), (Some(Change::New), true));
        let same = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
        );
        assert_eq!((same[0].change, same[0].alert), (None, false));
        let escalated = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::Medium, true, 1)],
            0,
        );
        assert_eq!(
            (escalated[0].change, escalated[0].alert),
            (
                Some(Change::Escalated {
                    from: Severity::Medium
                }),
                true
            )
        );
        let reopened = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, false, 1)],
            0,
        );
        assert_eq!(reopened[0].change, Some(Change::New));
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
        );
        assert_eq!(
            (steps[0].change, steps[0].alert),
            (Some(Change::Reminder), true)
        );
        let low = evaluation(vec![finding("key.rotation-policy", Severity::Low)], &[]);
        let steps = run(
            Mode::Alert,
            &policy,
            &low,
            &[prior("key.rotation-policy", Severity::Low, true, 25)],
            0,
        );
        assert_eq!(steps[0].change, None);
    }

    #[test]
    fn a_finding_nobody_was_told_about_resolves_silently() {
        let policy = Policy::default();
        let eval = evaluation(Vec::new(), &["vault.purge-protection"]);
        let untold = Prior {
            last_notified: None,
            ..prior("vault.purge-protection", Severity::High, true, 1)
        };
        let steps = run(Mode::Alert, &policy, &eval, &[untold], 0);
        assert_eq!(
            (steps[0].change, steps[0].alert, steps[0].finding.state),
            (Some(Change::Resolved), false, FindingState::Resolved)
        );
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
        );
        assert_eq!(steps.len(), 1);
        assert_eq!(
            (steps[0].change, steps[0].alert, steps[0].finding.state),
            (Some(Change::Resolved), true, FindingState::Resolved)
        );
        let unknown = evaluation(Vec::new(), &[]);
        assert!(
            run(
                Mode::Alert,
                &policy,
                &unknown,
                &[prior("vault.purge-protection", Severity::High, true, 1)],
                0
            )
            .is_empty()
        );
    }

    #[test]
    fn a_deleted_workspace_closes_every_open_finding_and_tells_what_was_told() {
        let deleted = Evaluation {
            checks: Vec::new(),
            workspace_deleted: true,
            ..evaluation(Vec::new(), &[])
        };
        let untold = Prior {
            last_notified: None,
            ..prior("key.expiry-set", Severity::Medium, true, 0)
        };
        let priors = [
            prior("vault.purge-protection", Severity::High, true, 1),
            prior("managed-resources.tamper", Severity::High, true, 1),
            prior("key.expiry", Severity::Critical, false, 1),
            untold,
        ];
        let policy = Policy::default();
        let steps = run(Mode::Alert, &policy, &deleted, &priors, 0);
        let closed: Vec<_> = steps
            .iter()
            .map(|s| {
                (
                    s.finding.rule.as_str(),
                    s.change,
                    s.finding.state,
                    s.finding.observed.as_str(),
                    s.alert,
                )
            })
            .collect();
        let resolved = |rule, notify| {
            (
                rule,
                Some(Change::Resolved),
                FindingState::Resolved,
                WORKSPACE_DELETED,
                notify,
            )
        };
        assert_eq!(
            closed,
            [
                resolved("vault.purge-protection", true),
                resolved("managed-resources.tamper", true),
                resolved("key.expiry-set", false),
            ],
            "open ones only, event rules too; nobody hears of what nobody was told"
        );
        assert!(steps.iter().all(|s| s.remediation == Remedy::None));
        let observed = run(Mode::Observe, &policy, &deleted, &priors, 0);
        assert_eq!(observed.len(), 3, "still recorded in observe mode");
        assert!(observed.iter().all(|s| !s.alert), "observe sends nothing");
    }

    #[test]
    fn remediation_needs_the_mode_the_consent_and_the_budget() {
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let consenting = consenting_policy();
        let planned = |mode, policy: &Policy, attempts| {
            run(mode, policy, &eval, &[], attempts)[0].remediation
        };
        assert_eq!(planned(Mode::Remediate, &consenting, 0), Remedy::Apply);
        assert_eq!(
            planned(Mode::Remediate, &Policy::default(), 0),
            Remedy::None,
            "no consent"
        );
        assert_eq!(planned(Mode::Alert, &consenting, 0), Remedy::Describe);
        assert_eq!(planned(Mode::Observe, &consenting, 0), Remedy::None);
        assert_eq!(planned(Mode::Remediate, &consenting, 3), Remedy::OverBudget);
    }

    #[test]
    fn observe_mode_plans_no_alert_reminder_or_remediation() {
        let consenting = consenting_policy();
        let high = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let new = run(Mode::Observe, &consenting, &high, &[], 0);
        assert_eq!(new[0].change, Some(Change::New), "still recorded");
        assert_eq!((new[0].alert, new[0].remediation), (false, Remedy::None));
        let due = run(
            Mode::Observe,
            &consenting,
            &high,
            &[prior("vault.purge-protection", Severity::High, true, 25)],
            0,
        );
        assert_eq!((due[0].change, due[0].alert), (None, false), "no reminder");
        let resolved = run(
            Mode::Observe,
            &consenting,
            &evaluation(Vec::new(), &["vault.purge-protection"]),
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
        );
        assert_eq!(
            (resolved[0].change, resolved[0].alert),
            (Some(Change::Resolved), false)
        );
    }

    #[test]
    fn an_open_finding_nobody_was_told_about_is_new_once_alerts_go_out() {
        let policy = Policy::default();
        let medium = evaluation(vec![finding("key.expiry-set", Severity::Medium)], &[]);
        let untold = Prior {
            last_notified: None,
            ..prior("key.expiry-set", Severity::Medium, true, 0)
        };
        let steps = run(
            Mode::Alert,
            &policy,
            &medium,
            std::slice::from_ref(&untold),
            0,
        );
        assert_eq!((steps[0].change, steps[0].alert), (Some(Change::New), true));
        let observed = run(Mode::Observe, &policy, &medium, &[untold], 0);
        assert_eq!(observed[0].change, None, "no write per event");
    }

    #[test]
    fn our_own_event_leaves_alone_only_the_rule_and_resource_we_remediated() {
        let consenting = consenting_policy();
        let eval = evaluation(
            vec![
                finding("vault.purge-protection", Severity::High),
                finding("key.expiry-set", Severity::Medium),
            ],
            &[],
        );
        let steps = guarded(
            Mode::Remediate,
            &consenting,
            &eval,
            &[],
            1,
            Cause::Own,
            &["vault.purge-protection"],
        );
        let purge = &steps[0];
        assert_eq!(
            (purge.remediation, purge.change, purge.alert),
            (Remedy::OwnWrite, None, false),
            "no remediation, no alert, nothing recorded (and no budget finding)"
        );
        let other = &steps[1];
        assert_eq!(
            other.remediation,
            Remedy::None,
            "not our write: planned as on any event (no consent for this rule)"
        );
        assert_eq!((other.change, other.alert), (Some(Change::New), true));
    }

    #[test]
    fn an_event_that_may_be_ours_is_guarded_like_our_own() {
        let consenting = consenting_policy();
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let remediated = ["vault.purge-protection"];
        for (cause, guarded_step) in [
            (Cause::Own, true),
            (Cause::Unknown, true),
            (Cause::Other, false),
        ] {
            let steps = guarded(
                Mode::Remediate,
                &consenting,
                &eval,
                &[],
                1,
                cause,
                &remediated,
            );
            assert_eq!(
                steps[0].remediation == Remedy::OwnWrite,
                guarded_step,
                "{cause:?}"
            );
            assert_eq!(
                steps[0].remediation == Remedy::Apply,
                !guarded_step,
                "{cause:?}"
            );
        }
        let not_remediated = guarded(
            Mode::Remediate,
            &consenting,
            &eval,
            &[],
            0,
            Cause::Own,
            &["workspace.key-access"],
        );
        assert_eq!(not_remediated[0].remediation, Remedy::Apply);
    }

    #[test]
    fn a_resolution_on_our_own_event_is_still_told() {
        let steps = guarded(
            Mode::Remediate,
            &consenting_policy(),
            &evaluation(Vec::new(), &["vault.purge-protection"]),
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            1,
            Cause::Own,
            &["vault.purge-protection"],
        );
        assert_eq!(
            (
                steps[0].change,
                steps[0].alert,
                steps[0].remediation == Remedy::OwnWrite
            ),
            (Some(Change::Resolved), true, false)
        );
    }

    #[test]
    fn a_remediation_that_resolves_a_finding_people_knew_is_told_resolved() {
        let policy = consenting_policy();
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let known = run(
            Mode::Remediate,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
        )
        .remove(0);
        assert_eq!(
            (known.change, known.alert),
            (None, false),
            "nothing new yet"
        );
        let fixed = known.remediated();
        assert_eq!(
            (fixed.change, fixed.alert, fixed.finding.state),
            (Some(Change::Resolved), true, FindingState::Resolved)
        );
        let new = run(Mode::Remediate, &policy, &eval, &[], 0)
            .remove(0)
            .remediated();
        assert_eq!(
            (new.change, new.alert, new.finding.state),
            (Some(Change::New), true, FindingState::Resolved),
            "told once, as new, with what was done"
        );
    }
}
