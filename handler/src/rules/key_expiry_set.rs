//! `key.expiry-set`: the key version the workspace uses has an expiration date.
//!
//! Requirement: keys carry an expiration date so that they are rotated; a key without one never
//! prompts a rotation and never raises Key Vault's near-expiry events. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys> (key
//! lifecycle), and the anchors below. Equivalents: Azure Policy
//! `152b15f7-8e1f-4c1f-ab71-8c010ba5dbc0` (Key Vault keys should have an expiration date); Prowler
//! `keyvault_rbac_key_expiration_set`, `keyvault_key_expiration_set_in_non_rbac`; Checkov
//! `CKV_AZURE_40`; Defender "Key Vault keys should have an expiration date"; Cloud Custodian
//! `keyvault-key` `value: attributes.data.exp: absent`.
//!
//! Compliant: `"attributes": {"exp": 1830297600}`.
//! Non-compliant: no `exp` attribute.

use super::chain;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyExpirySet,
    judge: check,
};

const EXPECTED: &str = "the key version in use has an expiration date";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    let key = match chain::key(snapshot) {
        Ok(key) => key,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    let label = links.key_label.as_str();
    Checks::One(match key.expires {
        Some(_) => Check::pass(
            RULE.id,
            resource,
            ["the key ", label, " expires at ", &links.key_expires_at].concat(),
            EXPECTED,
        ),
        None => Check::fail(
            RULE.id,
            resource,
            Severity::Medium,
            format!("the key {label} has no expiration date"),
            EXPECTED,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::Read;

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("set", |_| {}, &[PASS]),
                (
                    "set in the past still counts",
                    |s| key_mut(s).expires = Some(0),
                    &[PASS],
                ),
                ("absent", |s| key_mut(s).expires = None, &[MEDIUM]),
                ("key gone", |s| s.key = Some(Read::NotFound), &[NA]),
                (
                    "key unreadable",
                    |s| s.key = Some(failed_read("key", KEY_URL)),
                    &[UNKNOWN],
                ),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
