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
    /// Open now, and was not open before — or was recorded open but never told to anyone
    /// (in `observe` mode, or by an older loop guard that swallowed it).
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
    /// The triggering event is (or may be) cmk-guard's own recent remediation of this
    /// (resource, rule) coming back: nothing is sent, remediated or recorded for it.
    pub own_write: bool,
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
    pub own_remediations: &'a BTreeSet<(String, String)>,
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
                .contains(&(finding.rule.clone(), finding.resource.to_ascii_lowercase()))
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
        let prior = priors.iter().find(|p| same_key(p, finding));
        let change = match prior {
            Some(prior) if prior.open && finding.severity > prior.severity => Change::Escalated,
            Some(prior) if prior.open => match prior.last_notified {
                None if sends => Change::New,
                Some(at)
                    if sends
                        && finding.severity >= Severity::High
                        && inputs.now - at >= reminder =>
                {
                    Change::Reminder
                }
                _ => Change::Unchanged,
            },
            _ => Change::New,
        };
        let own_write = inputs.own_write(finding);
        let acting = sends && !own_write;
        let allowed = inputs.policy.allows_remediation(&finding.rule);
        let within_budget = inputs.attempts(&finding.resource) < REMEDIATION_BUDGET_PER_HOUR;
        steps.push(Step {
            finding: finding.clone(),
            change,
            notify: acting && change != Change::Unchanged,
            remediate: acting && inputs.mode == Mode::Remediate && allowed && within_budget,
            describe_remediation: acting && inputs.mode == Mode::Alert && allowed,
            own_write,
        });
    }
    // A resolution is never a repeat: the stored state is still open, so nobody heard of it,
    // whoever's write brought it about. A deleted workspace closes every open finding, event
    // rules' too. Either way the message closes what people were told, so a finding nobody
    // was told about (recorded in `observe` mode) closes silently.
    for prior in priors.iter().filter(|p| p.open) {
        if evaluation.findings.iter().any(|f| same_key(prior, f)) {
            continue;
        }
        let (observed, notify) = if evaluation.workspace_deleted {
            (WORKSPACE_DELETED, sends && prior.last_notified.is_some())
        } else if evaluation.resolves(&prior.rule, &prior.resource) {
            (
                "the rule passes now",
                sends && prior.last_notified.is_some(),
            )
        } else {
            continue;
        };
        steps.push(Step {
            finding: Finding {
                rule: prior.rule.clone(),
                resource: prior.resource.clone(),
                workspace: prior.workspace.clone(),
                severity: prior.severity,
                state: crate::outcome::FindingState::Resolved,
                observed: observed.to_owned(),
                expected: String::new(),
            },
            change: Change::Resolved,
            notify,
            remediate: false,
            describe_remediation: false,
            own_write: false,
        });
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
        && !step.own_write
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
            workspace_deleted: false,
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
            .map(|rule| ((*rule).to_owned(), VAULT.to_ascii_lowercase()))
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
        assert_eq!((new[0].change, new[0].notify), (Change::New, true));
        let same = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
        );
        assert_eq!((same[0].change, same[0].notify), (Change::Unchanged, false));
        let escalated = run(
            Mode::Alert,
            &policy,
            &eval,
            &[prior("vault.purge-protection", Severity::Medium, true, 1)],
            0,
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
        );
        assert_eq!((steps[0].change, steps[0].notify), (Change::Reminder, true));
        let low = evaluation(vec![finding("key.rotation-policy", Severity::Low)], &[]);
        let steps = run(
            Mode::Alert,
            &policy,
            &low,
            &[prior("key.rotation-policy", Severity::Low, true, 25)],
            0,
        );
        assert_eq!(steps[0].change, Change::Unchanged);
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
            (steps[0].change, steps[0].notify, steps[0].finding.state),
            (Change::Resolved, false, FindingState::Resolved)
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
                    s.notify,
                )
            })
            .collect();
        let resolved = |rule, notify| {
            (
                rule,
                Change::Resolved,
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
        assert!(steps.iter().all(|s| !s.remediate && !s.own_write));
        let observed = run(Mode::Observe, &policy, &deleted, &priors, 0);
        assert_eq!(observed.len(), 3, "still recorded in observe mode");
        assert!(observed.iter().all(|s| !s.notify), "observe sends nothing");
    }

    #[test]
    fn remediation_needs_the_mode_the_consent_and_the_budget() {
        let eval = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let consenting = consenting_policy();
        assert!(run(Mode::Remediate, &consenting, &eval, &[], 0)[0].remediate);
        assert!(
            !run(Mode::Remediate, &Policy::default(), &eval, &[], 0)[0].remediate,
            "no consent"
        );
        assert!(
            !run(Mode::Alert, &consenting, &eval, &[], 0)[0].remediate,
            "alert mode"
        );
        assert!(run(Mode::Alert, &consenting, &eval, &[], 0)[0].describe_remediation);
        let exhausted = run(Mode::Remediate, &consenting, &eval, &[], 3);
        assert!(!exhausted[0].remediate);
        let recent = BTreeMap::from([(VAULT.to_ascii_lowercase(), 3)]);
        let inputs = Inputs {
            policy: &consenting,
            mode: Mode::Remediate,
            now: NOW,
            cause: Cause::Other,
            own_remediations: &BTreeSet::new(),
            recent_attempts: &recent,
        };
        assert!(over_budget(&exhausted[0], &inputs));
    }

    #[test]
    fn observe_mode_plans_no_alert_reminder_or_remediation() {
        let consenting = consenting_policy();
        let high = evaluation(vec![finding("vault.purge-protection", Severity::High)], &[]);
        let new = run(Mode::Observe, &consenting, &high, &[], 0);
        assert_eq!(new[0].change, Change::New, "still recorded");
        assert!(!new[0].notify && !new[0].remediate && !new[0].describe_remediation);
        let due = run(
            Mode::Observe,
            &consenting,
            &high,
            &[prior("vault.purge-protection", Severity::High, true, 25)],
            0,
        );
        assert_eq!(
            (due[0].change, due[0].notify),
            (Change::Unchanged, false),
            "no reminder"
        );
        let resolved = run(
            Mode::Observe,
            &consenting,
            &evaluation(Vec::new(), &["vault.purge-protection"]),
            &[prior("vault.purge-protection", Severity::High, true, 1)],
            0,
        );
        assert_eq!(
            (resolved[0].change, resolved[0].notify),
            (Change::Resolved, false)
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
        assert_eq!((steps[0].change, steps[0].notify), (Change::New, true));
        let observed = run(Mode::Observe, &policy, &medium, &[untold], 0);
        assert_eq!(observed[0].change, Change::Unchanged, "no write per event");
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
        assert!(purge.own_write);
        assert!(!purge.notify && !purge.remediate && !purge.describe_remediation);
        let other = &steps[1];
        assert!(!other.own_write);
        assert_eq!((other.change, other.notify), (Change::New, true));
        let inputs = Inputs {
            policy: &consenting,
            mode: Mode::Remediate,
            now: NOW,
            cause: Cause::Own,
            own_remediations: &BTreeSet::new(),
            recent_attempts: &BTreeMap::from([(VAULT.to_ascii_lowercase(), 3)]),
        };
        assert!(
            !over_budget(purge, &inputs),
            "no budget finding for our own write"
        );
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
            assert_eq!(steps[0].own_write, guarded_step, "{cause:?}");
            assert_eq!(steps[0].remediate, !guarded_step, "{cause:?}");
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
        assert!(!not_remediated[0].own_write && not_remediated[0].remediate);
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
            (steps[0].change, steps[0].notify, steps[0].own_write),
            (Change::Resolved, true, false)
        );
    }
}
