//! `key.rotation-policy`: the key has a rotation policy that rotates it or warns before expiry.
//!
//! Requirement: a CMK is rotated on a schedule, or at least announces its expiry; a rotation
//! policy with a `Rotate` or `Notify` lifetime action does that (action types compare
//! case-insensitively: ARM writes `rotate`, the data plane `Rotate`, azure-notes Trap T2). The
//! remediation PUTs the rotation policy from the policy file. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>, and Key
//! Vault's key rotation guide. Equivalents: Azure Policy `d8cf8476-a2ec-4916-896e-992351803c44`
//! (rotation scheduled within N days); Prowler `keyvault_key_rotation_enabled` (requires
//! `Rotate`); Cloud Custodian `keyvault-key` `rotation-policy`. Checkov has none.
//!
//! Compliant: `"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "rotate"}}]`.
//! Non-compliant: no rotation policy, or one with no lifetime actions.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyRotationPolicy,
    judge: check,
};

const EXPECTED: &str = "a key rotation policy with a Rotate or Notify action";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    let stop = |gate: Gate| Checks::One(gate.check(RULE.id, resource.clone(), EXPECTED));
    let key = match chain::key(snapshot) {
        Ok(key) => key,
        Err(gate) => return stop(gate),
    };
    let policy = match &snapshot.rotation_policy {
        Some(Read::Found(policy)) => policy.as_ref(),
        Some(Read::NotFound) => None,
        Some(Read::Failed(_)) => {
            return stop(Gate::Unknown(
                "the key's rotation policy could not be read".into(),
            ));
        }
        None => {
            return stop(Gate::Unknown(
                "the key's rotation policy was not read".into(),
            ));
        }
    };
    let name = &key.key_name;
    let Some(policy) = policy else {
        let observed = format!("the key {name} has no rotation policy");
        return Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::Low,
            observed,
            EXPECTED,
        ));
    };
    let has = |action: &str| {
        policy
            .lifetime_actions
            .iter()
            .any(|a| a.action.eq_ignore_ascii_case(action))
    };
    Checks::One(match (has("Rotate"), has("Notify")) {
        (true, _) => Check::pass(
            RULE.id,
            resource,
            ["the key ", name, " rotates automatically"].concat(),
            EXPECTED,
        ),
        (false, true) => Check::pass(
            RULE.id,
            resource,
            format!("the key {name} notifies before expiry (no automatic rotation)"),
            EXPECTED,
        ),
        (false, false) => Check::fail(
            RULE.id,
            resource,
            Severity::Low,
            format!("the key {name}'s rotation policy has no Rotate or Notify action"),
            EXPECTED,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::{LifetimeAction, RotationPolicy};

    fn actions(names: &[&str]) -> Read<Option<RotationPolicy>> {
        Read::Found(Some(RotationPolicy {
            expiry_time: Some("P2Y".into()),
            lifetime_actions: names
                .iter()
                .map(|name| LifetimeAction {
                    action: (*name).into(),
                    time_after_create: None,
                    time_before_expiry: Some("P30D".into()),
                })
                .collect(),
        }))
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("rotate (ARM casing)", |_| {}, &[PASS]),
                (
                    "Rotate (data-plane casing)",
                    |s| s.rotation_policy = Some(actions(&["Rotate"])),
                    &[PASS],
                ),
                (
                    "Notify only",
                    |s| s.rotation_policy = Some(actions(&["Notify"])),
                    &[PASS],
                ),
                (
                    "no actions",
                    |s| s.rotation_policy = Some(actions(&[])),
                    &[LOW],
                ),
                (
                    "no policy",
                    |s| s.rotation_policy = Some(Read::Found(None)),
                    &[LOW],
                ),
                (
                    "policy 404",
                    |s| s.rotation_policy = Some(Read::NotFound),
                    &[LOW],
                ),
                (
                    "unreadable",
                    |s| s.rotation_policy = Some(failed_read("rotation policy", KEY_URL)),
                    &[UNKNOWN],
                ),
                ("not read", |s| s.rotation_policy = None, &[UNKNOWN]),
                ("key gone", |s| s.key = Some(Read::NotFound), &[NA]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
