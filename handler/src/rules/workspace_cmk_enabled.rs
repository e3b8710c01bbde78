//! `workspace.cmk-enabled`: the workspace encrypts its data with a customer-managed key.
//!
//! Requirement: workspaces in scope use CMK, `properties.encryption.status` is `Enabled`.
//! Workspaces of kind `project` are excluded: they inherit encryption from their hub. The policy's
//! `[scope] require_cmk_tag` can narrow the requirement to workspaces carrying that tag.
//! Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Azure Policy `ba769a63-b8cc-4b2d-abf6-ac33c7204be8` (Audit/Deny, `kind != project`)
//! and `7f40cee6-e933-4d0f-a782-b96615e0f4a6`; Cloud Custodian `machine-learning-workspace`
//! `value: properties.encryption.status`. Prowler and Checkov have none.
//!
//! Compliant: `"encryption": {"status": "Enabled", "keyVaultProperties": {…}}`.
//! Non-compliant: `"encryption": {"status": "Disabled"}`, or no `encryption` at all.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::WorkspaceCmkEnabled,
    judge: check,
};

const EXPECTED: &str = "encryption.status is Enabled (a customer-managed key)";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.workspace.to_owned();
    let workspace = match chain::workspace(snapshot) {
        Ok(workspace) => workspace,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    if workspace
        .kind
        .as_deref()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("Project"))
    {
        let why = "a project workspace inherits encryption from its hub".to_owned();
        return Checks::One(Gate::NotApplicable(why).check(RULE.id, resource, EXPECTED));
    }
    let scope = &context.policy.scope;
    if !scope.requires_cmk(&workspace.tags) {
        let why = format!(
            "the policy requires CMK only for workspaces tagged `{}`",
            scope.require_cmk_tag.as_deref().unwrap_or_default()
        );
        return Checks::One(Gate::NotApplicable(why).check(RULE.id, resource, EXPECTED));
    }
    if chain::uses_cmk(workspace) {
        return Checks::One(Check::pass(
            RULE.id,
            resource,
            "encryption.status is Enabled",
            EXPECTED,
        ));
    }
    let observed = match workspace
        .encryption
        .as_ref()
        .and_then(|e| e.status.as_deref())
    {
        Some(status) => format!("encryption.status is {status}"),
        None => "the workspace has no encryption settings (Microsoft-managed keys)".to_owned(),
    };
    Checks::One(Check::fail(
        RULE.id,
        resource,
        Severity::High,
        observed,
        EXPECTED,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::policy::Policy;
    use crate::snapshot::Read;

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("enabled", |_| {}, &[PASS]),
                ("disabled", no_cmk, &[HIGH]),
                (
                    "no encryption settings",
                    |s| workspace_mut(s).encryption = None,
                    &[HIGH],
                ),
                (
                    "project inherits from its hub",
                    |s| {
                        no_cmk(s);
                        workspace_mut(s).kind = Some("project".into());
                    },
                    &[NA],
                ),
                (
                    "workspace unreadable",
                    |s| s.workspace = failed_read("workspace", WORKSPACE_ID),
                    &[UNKNOWN],
                ),
                ("workspace gone", |s| s.workspace = Read::NotFound, &[NA]),
            ],
        );
    }

    #[test]
    fn the_scope_tag_narrows_the_requirement() {
        let policy =
            Policy::from_toml_str("[scope]\nrequire_cmk_tag = \"cmk-required\"\n", "t").unwrap();
        let mut snapshot = compliant_snapshot();
        no_cmk(&mut snapshot);
        let verdict = |snapshot: &crate::snapshot::Snapshot| {
            RULE.check(&context(snapshot, &policy))[0].status
        };
        assert_eq!(verdict(&snapshot), NA);
        workspace_mut(&mut snapshot)
            .tags
            .insert("CMK-Required".into(), "yes".into());
        assert_eq!(verdict(&snapshot), HIGH);
    }
}
