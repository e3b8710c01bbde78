use super::*;
use crate::outcome::FindingState;
use crate::rules::{Check, Status};
use time::macros::datetime;

const WS: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";
const VAULT: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
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
            observed: "".into(),
            expected: "".into(),
        })
        .collect();
    checks.extend(passes.iter().map(|rule| Check {
        rule: rule.parse().expect("a rule id"),
        resource: VAULT.into(),
        status: Status::Pass,
        observed: "".into(),
        expected: "".into(),
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
    let planned =
        |mode, policy: &Policy, attempts| run(mode, policy, &eval, &[], attempts)[0].remediation;
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
    let fixed = known.remediated("verified: purge protection is on");
    assert_eq!(
        (fixed.change, fixed.alert, fixed.finding.state),
        (Some(Change::Resolved), true, FindingState::Resolved)
    );
    assert_eq!(fixed.finding.observed, "verified: purge protection is on");
    let new = run(Mode::Remediate, &policy, &eval, &[], 0)
        .remove(0)
        .remediated("verified: purge protection is on");
    assert_eq!(
        (new.change, new.alert, new.finding.state),
        (Some(Change::New), true, FindingState::Resolved),
        "told once, as new, with what was done"
    );
}

fn notify(reminder_hours: u32, digest_hours: u32) -> Policy {
    let mut policy = Policy::default();
    policy.notify.reminder_hours = reminder_hours;
    policy.notify.digest_hours = digest_hours;
    policy
}

#[test]
fn a_check_right_after_an_alert_reminds_of_nothing_and_a_reminder_waits_its_interval() {
    let critical = evaluation(
        vec![finding("vault.purge-protection", Severity::Critical)],
        &[],
    );
    let after = |policy: &Policy, hours: i64| {
        let steps = run(
            Mode::Alert,
            policy,
            &critical,
            &[prior(
                "vault.purge-protection",
                Severity::Critical,
                true,
                hours,
            )],
            0,
        );
        (steps[0].change, steps[0].alert)
    };
    let daily = notify(24, 24);
    assert_eq!(after(&daily, 0), (None, false), "the sweep right after");
    assert_eq!(after(&daily, 23), (None, false));
    assert_eq!(after(&daily, 24), (Some(Change::Reminder), true));
    let never = notify(0, 24);
    assert_eq!(
        after(&never, 0),
        (None, false),
        "0 is no reminders, not hourly"
    );
    assert_eq!(after(&never, 24 * 365), (None, false));
}

#[test]
fn a_digest_goes_out_once_per_interval_only_with_something_people_have_not_heard_lately() {
    let daily = notify(24, 24);
    let told = |hours: i64| prior("vault.purge-protection", Severity::Medium, true, hours);
    let today = datetime!(2026-11-28 00:00 UTC);
    assert_eq!(
        digest_window(&[told(25)], &daily.notify, Mode::Alert, NOW),
        Some(today),
        "an open finding last told more than a day ago"
    );
    assert_eq!(
        digest_window(
            &[told(25)],
            &daily.notify,
            Mode::Alert,
            NOW + Duration::hours(11)
        ),
        Some(today),
        "later the same day: the same digest, which the outbox refuses twice"
    );
    assert_eq!(
        digest_window(
            &[told(25)],
            &daily.notify,
            Mode::Alert,
            NOW + Duration::hours(12)
        ),
        Some(today + Duration::days(1)),
        "the next day: the next digest"
    );
    let mut never_told = told(0);
    never_told.last_notified = None;
    assert_eq!(
        digest_window(&[never_told], &daily.notify, Mode::Alert, NOW),
        Some(today)
    );
    assert_eq!(
        digest_window(&[told(0), told(23)], &daily.notify, Mode::Alert, NOW),
        None,
        "everything open was told within the day (an event's alert, the sweep's own)"
    );
    assert_eq!(
        digest_window(&[told(0), told(25)], &daily.notify, Mode::Alert, NOW),
        Some(today),
        "one finding people have not heard of lately is enough"
    );
    let resolved = prior("vault.purge-protection", Severity::Medium, false, 48);
    assert_eq!(
        digest_window(&[resolved], &daily.notify, Mode::Alert, NOW),
        None,
        "nothing open"
    );
    assert_eq!(digest_window(&[], &daily.notify, Mode::Alert, NOW), None);
    assert_eq!(
        digest_window(&[told(25)], &daily.notify, Mode::Observe, NOW),
        None,
        "never in observe mode"
    );
    assert_eq!(
        digest_window(&[told(25)], &notify(24, 0).notify, Mode::Remediate, NOW),
        None,
        "digest_hours = 0: none"
    );
    assert_eq!(
        digest_window(&[told(7)], &notify(24, 6).notify, Mode::Remediate, NOW),
        Some(datetime!(2026-11-28 12:00 UTC)),
        "six-hour intervals start at 00, 06, 12 and 18 UTC"
    );
}
