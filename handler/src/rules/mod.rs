//! The CMK rules: pure functions from one workspace's [`Snapshot`] (plus the time, the policy
//! and the trigger) to [`Check`]s, one file per rule, and [`evaluate`], which runs them all and
//! applies the policy (enabled rules, severity overrides, exemptions; thresholds and scope are
//! read by the rules themselves).
//!
//! Rule ids are public contract (docs/architecture.md *Rules*); `docs/rules.md` documents each one.
//! Silence never means compliant: a rule whose data is missing or unreadable answers
//! [`Status::Unknown`], never [`Status::Pass`], and `guard.visibility` turns every failed or
//! missing read into a finding.

mod chain;
mod guard_visibility;
mod key_enabled;
mod key_exists;
mod key_expiry;
mod key_expiry_set;
mod key_rotation_policy;
mod key_type_size;
mod key_use_failures;
mod managed_resources_tamper;
mod subscription_providers;
mod vault_events_wired;
mod vault_exists;
mod vault_purge_protection;
mod vault_soft_delete;
mod workspace_cmk_enabled;
mod workspace_key_access;
mod workspace_unsupported_endpoints;
mod workspace_vault_same_subscription;

use std::borrow::Cow;

use time::{Date, OffsetDateTime};

pub use guard_visibility::unreadable;

use crate::catalogue::{Kind, RuleId};
use crate::intake::Trigger;
use crate::outcome::{Finding, FindingState, Severity};
use crate::policy::Policy;
use crate::snapshot::{Read, Snapshot};
use chain::Links;

/// Everything a rule may look at. Time is passed in so that tests (and replays) control it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub snapshot: &'a Snapshot,
    pub now: OffsetDateTime,
    pub policy: &'a Policy,
    /// The event that caused this evaluation; `None` for the sweep and on-demand checks.
    pub trigger: Option<&'a Trigger>,
}

/// The id of `guard.visibility`, for findings made outside the rules and for the CLI's verdict.
pub const VISIBILITY: &str = RuleId::GuardVisibility.as_str();

/// A rule's verdict on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The requirement holds; an open finding for the same rule and resource is resolved.
    Pass,
    /// The requirement is broken, with the rule's own severity (before policy overrides).
    Fail(Severity),
    /// The requirement does not apply here (no CMK, kind `project`, out of scope, no event).
    NotApplicable,
    /// The rule could not decide because data is missing or unreadable; `guard.visibility`
    /// reports why. Not a pass: open findings stay open.
    Unknown,
}

/// One rule's verdict on one resource of a workspace's CMK chain. Every verdict is kept, passes
/// included, so that a state layer can resolve findings (see [`Evaluation::resolves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub rule: RuleId,
    /// The ARM id or key URL the verdict is about.
    pub resource: String,
    pub status: Status,
    /// What was seen; for `NotApplicable` and `Unknown`, why no verdict was reached. Most texts
    /// are fixed: they are borrowed, not copied, for every check of every event.
    pub observed: Cow<'static, str>,
    /// What the requirement asks for.
    pub expected: Cow<'static, str>,
}

impl Check {
    fn new(
        rule: RuleId,
        resource: impl Into<String>,
        status: Status,
        observed: impl Into<Cow<'static, str>>,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            rule,
            resource: resource.into(),
            status,
            observed: observed.into(),
            expected: expected.into(),
        }
    }

    fn pass(
        rule: RuleId,
        resource: impl Into<String>,
        observed: impl Into<Cow<'static, str>>,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(rule, resource, Status::Pass, observed, expected)
    }

    fn fail(
        rule: RuleId,
        resource: impl Into<String>,
        severity: Severity,
        observed: impl Into<Cow<'static, str>>,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(rule, resource, Status::Fail(severity), observed, expected)
    }
}

/// One rule's checks. Most rules give one, held inline rather than in a `Vec`: a shape for
/// speed, since a `Vec` per rule was a heap allocation per rule on every event.
#[derive(Debug)]
pub(crate) enum Checks {
    One(Check),
    Many(Vec<Check>),
}

impl Checks {
    pub(crate) fn as_slice(&self) -> &[Check] {
        match self {
            Checks::One(check) => std::slice::from_ref(check),
            Checks::Many(checks) => checks,
        }
    }
}

impl From<Vec<Check>> for Checks {
    fn from(checks: Vec<Check>) -> Self {
        Checks::Many(checks)
    }
}

impl FromIterator<Check> for Checks {
    fn from_iter<I: IntoIterator<Item = Check>>(checks: I) -> Self {
        Checks::Many(checks.into_iter().collect())
    }
}

impl IntoIterator for Checks {
    type Item = Check;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Check>, std::vec::IntoIter<Check>>;

    fn into_iter(self) -> Self::IntoIter {
        // An empty `Vec` does not allocate.
        match self {
            Checks::One(check) => Some(check).into_iter().chain(Vec::new()),
            Checks::Many(checks) => None.into_iter().chain(checks),
        }
    }
}

/// One rule: its id (the catalogue says what kind it is and how it is remediated) and its check.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: RuleId,
    /// The check itself, over the chain's [`Links`] that [`evaluate`] works out once for all rules.
    judge: fn(&Context, &Links) -> Checks,
}

impl Rule {
    /// This rule's verdicts on the context's snapshot, on their own (remediation asks one rule
    /// again after a write).
    pub fn check(&self, context: &Context) -> Vec<Check> {
        (self.judge)(context, &Links::new(context.snapshot))
            .into_iter()
            .collect()
    }
}

/// Every rule, in the order of the docs/architecture.md table (and of the findings).
pub const RULES: &[Rule] = &[
    workspace_cmk_enabled::RULE,
    workspace_vault_same_subscription::RULE,
    workspace_key_access::RULE,
    workspace_unsupported_endpoints::RULE,
    vault_exists::RULE,
    vault_soft_delete::RULE,
    vault_purge_protection::RULE,
    vault_events_wired::RULE,
    key_exists::RULE,
    key_enabled::RULE,
    key_expiry::RULE,
    key_expiry_set::RULE,
    key_type_size::RULE,
    key_rotation_policy::RULE,
    key_use_failures::RULE,
    subscription_providers::RULE,
    managed_resources_tamper::RULE,
    guard_visibility::RULE,
];

/// The rule with this id, if a rule over a snapshot raises it.
pub fn find(id: RuleId) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

/// A failing check that a live exemption covers: reported apart, never notified or remediated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptedFinding {
    pub finding: Finding,
    pub reason: String,
    pub expires: Option<Date>,
}

/// The result of evaluating one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub workspace: String,
    /// Every verdict of every enabled rule, with the policy's severity overrides applied.
    pub checks: Vec<Check>,
    /// The failing checks that no live exemption covers, as Outcome findings (state `open`).
    pub findings: Vec<Finding>,
    pub exempted: Vec<ExemptedFinding>,
    /// The workspace read answered 404: the workspace is gone, so nothing about it is a problem
    /// any more, and every finding still open about it is closed (`plan`), whatever its rule.
    pub workspace_deleted: bool,
}

impl Evaluation {
    /// True when this evaluation shows that an open finding of `rule` on `resource` is no
    /// longer a problem: the rule judges standing state, reached a verdict (at least one pass or
    /// fail and no unknown), and no longer fails on that resource. A rule that is disabled, had
    /// missing data, or judges events leaves open findings open.
    pub fn resolves(&self, rule: &str, resource: &str) -> bool {
        let Some(rule) = RuleId::parse(rule) else {
            return false;
        };
        let checks: Vec<&Check> = self.checks.iter().filter(|c| c.rule == rule).collect();
        rule.kind() == Kind::State
            && checks
                .iter()
                .any(|c| matches!(c.status, Status::Pass | Status::Fail(_)))
            && !checks.iter().any(|c| c.status == Status::Unknown)
            && !checks.iter().any(|c| {
                matches!(c.status, Status::Fail(_)) && c.resource.eq_ignore_ascii_case(resource)
            })
    }
}

/// Runs every enabled rule on the context's snapshot and applies the policy.
pub fn evaluate(context: &Context) -> Evaluation {
    let policy = context.policy;
    let links = Links::new(context.snapshot);
    let workspace = links.workspace.to_owned();
    let today = context.now.date();
    let mut evaluation = Evaluation {
        workspace: workspace.clone(),
        // A compliant chain gives about two dozen checks; one allocation holds them.
        checks: Vec::with_capacity(32),
        findings: Vec::new(),
        exempted: Vec::new(),
        workspace_deleted: matches!(context.snapshot.workspace, Read::NotFound),
    };
    for rule in RULES.iter().filter(|rule| policy.rule_enabled(rule.id)) {
        // One span per rule evaluation, at debug level (CMKGUARD_LOG=debug exports them).
        let _span = tracing::debug_span!("rule", rule = rule.id.as_str()).entered();
        for mut check in (rule.judge)(context, &links) {
            let Status::Fail(own_severity) = check.status else {
                evaluation.checks.push(check);
                continue;
            };
            let severity = policy.severity_override(rule.id).unwrap_or(own_severity);
            check.status = Status::Fail(severity);
            // What a rule observed quotes Azure's answers (states, names, ids), which are as
            // hostile as any input: bounded and escaped once here, for every place a finding
            // goes (Outcome, webhook, state, cards, emails). Real ids and texts pass unchanged.
            let mut finding = Finding {
                rule: rule.id,
                resource: crate::text::clean(&check.resource, crate::text::LINE).into_owned(),
                workspace: workspace.clone(),
                severity,
                state: FindingState::Open,
                observed: crate::text::clean(&check.observed, crate::text::REASON).into_owned(),
                expected: check.expected.clone().into_owned(),
            };
            let covering = policy
                .exemptions
                .iter()
                .filter(|e| e.covers(rule.id, &check.resource, &workspace));
            let (live, expired): (Vec<_>, Vec<_>) = covering.partition(|e| !e.is_expired(today));
            if let Some(exemption) = live.first() {
                evaluation.exempted.push(ExemptedFinding {
                    finding,
                    reason: exemption.reason.clone(),
                    expires: exemption.expires,
                });
            } else {
                for exemption in expired {
                    if let Some(expires) = exemption.expires {
                        finding.observed.push_str(&format!(
                            " (exemption expired on {expires}: {})",
                            exemption.reason
                        ));
                    }
                }
                evaluation.findings.push(finding);
            }
            evaluation.checks.push(check);
        }
    }
    evaluation
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn rule_ids_are_the_documented_contract() {
        let ids: Vec<&str> = RULES.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "workspace.cmk-enabled",
                "workspace.vault-same-subscription",
                "workspace.key-access",
                "workspace.unsupported-endpoints",
                "vault.exists",
                "vault.soft-delete",
                "vault.purge-protection",
                "vault.events-wired",
                "key.exists",
                "key.enabled",
                "key.expiry",
                "key.expiry-set",
                "key.type-size",
                "key.rotation-policy",
                "key.use-failures",
                "subscription.providers",
                "managed-resources.tamper",
                "guard.visibility",
            ]
        );
        assert!(RULES.iter().map(|r| r.id).eq(RuleId::evaluated()));
    }

    #[test]
    fn a_compliant_chain_has_no_findings_and_every_rule_reaches_a_verdict() {
        let snapshot = compliant_snapshot();
        let policy = Policy::default();
        let evaluation = evaluate(&context(&snapshot, &policy));
        assert_eq!(evaluation.findings, []);
        assert_eq!(evaluation.exempted, []);
        for check in &evaluation.checks {
            assert!(
                matches!(check.status, Status::Pass | Status::NotApplicable),
                "{check:?}"
            );
        }
        assert!(evaluation.resolves("vault.purge-protection", VAULT_ID));
        assert!(!evaluation.resolves("managed-resources.tamper", WORKSPACE_ID));
    }

    #[test]
    fn what_azure_answered_reaches_a_finding_escaped_and_bounded() {
        let hostile = format!(
            "\u{1b}[31mDisabled\r\nforged\u{2028}\u{202e}\u{0}{}",
            "C".repeat(9000)
        );
        let mut snapshot = compliant_snapshot();
        encryption_mut(&mut snapshot).status = Some(hostile);
        encryption_mut(&mut snapshot).key_vault_arm_id =
            Some(format!("/subscriptions/\u{1b}{}", "D".repeat(5000)));
        let policy = Policy::default();
        let evaluation = evaluate(&context(&snapshot, &policy));
        assert!(!evaluation.findings.is_empty());
        for finding in &evaluation.findings {
            for text in [&finding.observed, &finding.resource] {
                assert!(text.len() <= crate::text::LINE_BYTES, "{}", text.len());
                assert!(!text.chars().any(crate::text::is_control), "{text:?}");
            }
            assert!(finding.observed.chars().count() <= 1000);
        }
    }

    #[test]
    fn a_deleted_workspace_has_no_findings_and_says_it_is_gone() {
        let policy = Policy::default();
        let compliant = compliant_snapshot();
        assert!(!evaluate(&context(&compliant, &policy)).workspace_deleted);
        let mut snapshot = compliant_snapshot();
        snapshot.workspace = Read::NotFound;
        snapshot.endpoints = Some(Read::NotFound);
        let evaluation = evaluate(&context(&snapshot, &policy));
        assert!(evaluation.workspace_deleted);
        assert_eq!(evaluation.findings, []);
        assert!(
            evaluation
                .checks
                .iter()
                .all(|c| matches!(c.status, Status::NotApplicable | Status::Pass)),
            "{:?}",
            evaluation.checks
        );
        let mut unreadable = compliant_snapshot();
        unreadable.workspace = failed_read("workspace", WORKSPACE_ID);
        assert!(
            !evaluate(&context(&unreadable, &policy)).workspace_deleted,
            "a read that failed is not a deletion"
        );
    }

    #[test]
    fn severity_overrides_disabled_rules_and_exemptions_apply() {
        let mut snapshot = compliant_snapshot();
        vault_mut(&mut snapshot).enable_purge_protection = None;
        key_mut(&mut snapshot).expires = None;
        let policy = Policy::from_toml_str(
            &format!(
                r#"
[rules."vault.purge-protection"]
severity = "critical"
[rules."key.rotation-policy"]
enabled = false
[[exemptions]]
rule = "key.expiry-set"
resource = "{WORKSPACE_ID}"
reason = "HSM keys are rotated by hand, change 42"
expires = "2099-12-31"
"#
            ),
            "test.toml",
        )
        .unwrap();
        let evaluation = evaluate(&context(&snapshot, &policy));
        let rules: Vec<(&str, Severity)> = evaluation
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.severity))
            .collect();
        assert_eq!(rules, [("vault.purge-protection", Severity::Critical)]);
        assert_eq!(evaluation.exempted.len(), 1);
        assert_eq!(evaluation.exempted[0].finding.rule, "key.expiry-set");
        assert!(
            evaluation
                .checks
                .iter()
                .all(|c| c.rule != "key.rotation-policy")
        );
        assert!(!evaluation.resolves("vault.purge-protection", VAULT_ID));
        assert!(!evaluation.resolves("key.rotation-policy", KEY_URL));
    }

    #[test]
    fn an_expired_exemption_no_longer_applies_and_the_finding_says_so() {
        let mut snapshot = compliant_snapshot();
        vault_mut(&mut snapshot).enable_purge_protection = Some(false);
        let policy = Policy::from_toml_str(
            &format!(
                r#"
[[exemptions]]
rule = "vault.purge-protection"
resource = "{VAULT_ID}"
reason = "migration, change 4711"
expires = 2020-01-31
"#
            ),
            "test.toml",
        )
        .unwrap();
        let evaluation = evaluate(&context(&snapshot, &policy));
        assert_eq!(evaluation.exempted, []);
        assert_eq!(evaluation.findings.len(), 1);
        assert!(
            evaluation.findings[0]
                .observed
                .ends_with("(exemption expired on 2020-01-31: migration, change 4711)"),
            "{}",
            evaluation.findings[0].observed
        );
    }

    #[test]
    fn unknown_data_keeps_findings_open() {
        let mut snapshot = compliant_snapshot();
        snapshot.vault = Some(failed_read("vault", VAULT_ID));
        let policy = Policy::default();
        let evaluation = evaluate(&context(&snapshot, &policy));
        let rules: Vec<&str> = evaluation
            .findings
            .iter()
            .map(|f| f.rule.as_str())
            .collect();
        assert_eq!(rules, ["guard.visibility"]);
        assert!(!evaluation.resolves("vault.purge-protection", VAULT_ID));
        assert!(!evaluation.resolves("guard.visibility", VAULT_ID));
    }
}
