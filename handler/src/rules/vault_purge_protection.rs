//! `vault.purge-protection`: the CMK key vault has purge protection on.
//!
//! Requirement: "The key vault has soft delete and purge protection enabled." Without purge
//! protection a deleted key can be purged at once and the workspace's data is lost. The property
//! is absent until it is enabled, so absent means off (azure-notes Trap T5), and enabling it is
//! irreversible: the remediation (`PATCH enablePurgeProtection=true`) needs
//! `irreversible_ok = true` in the policy. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Azure Policy `0b60c0b2-2dc2-4e1c-b5c9-abbed971de53` (Key vaults should have
//! deletion protection enabled); Prowler `keyvault_recoverable`; Checkov `CKV_AZURE_110`,
//! `CKV_AZURE_42`; Cloud Custodian `azure.keyvault` `value: properties.enablePurgeProtection`.
//!
//! Compliant: `"enablePurgeProtection": true`.
//! Non-compliant: the property absent, or `false`.

use super::chain;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::VaultPurgeProtection,
    judge: check,
};

const EXPECTED: &str = "purge protection is on (enablePurgeProtection true)";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.vault.to_owned();
    let vault = match chain::vault(snapshot) {
        Ok(vault) => vault,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    let check = match vault.enable_purge_protection {
        Some(true) if vault.enable_soft_delete == Some(false) => Check::fail(
            RULE.id,
            resource,
            Severity::High,
            "enablePurgeProtection is true but has no effect: soft delete is off",
            EXPECTED,
        ),
        Some(true) => Check::pass(RULE.id, resource, "enablePurgeProtection is true", EXPECTED),
        Some(false) => Check::fail(
            RULE.id,
            resource,
            Severity::High,
            "enablePurgeProtection is false",
            EXPECTED,
        ),
        None => Check::fail(
            RULE.id,
            resource,
            Severity::High,
            "enablePurgeProtection is not set (never enabled)",
            EXPECTED,
        ),
    };
    Checks::One(check)
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
                ("on", |_| {}, &[PASS]),
                (
                    "absent means off",
                    |s| vault_mut(s).enable_purge_protection = None,
                    &[HIGH],
                ),
                (
                    "off",
                    |s| vault_mut(s).enable_purge_protection = Some(false),
                    &[HIGH],
                ),
                (
                    "on without soft delete",
                    |s| vault_mut(s).enable_soft_delete = Some(false),
                    &[HIGH],
                ),
                ("vault gone", |s| s.vault = Some(Read::NotFound), &[NA]),
                ("vault not read", |s| s.vault = None, &[UNKNOWN]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
