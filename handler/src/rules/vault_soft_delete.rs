//! `vault.soft-delete`: the CMK key vault has soft delete on.
//!
//! Requirement: "The key vault has soft delete and purge protection enabled." Soft delete is on for
//! every vault since February 2025 and cannot be turned off; new api-versions omit the property,
//! and an absent value means on (docs/architecture.md *Rules*, azure-notes §1.5 and Trap T6). Only
//! a legacy vault can still report `false`, and that cannot be changed, so there is no remediation.
//! Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Azure Policy `1e66c121-a66a-4b1f-9b83-0fd99bf0fc2d` (Key vaults should have soft
//! delete enabled) and `0b60c0b2-2dc2-4e1c-b5c9-abbed971de53`; Prowler `keyvault_recoverable`;
//! Checkov `CKV_AZURE_111`, `CKV_AZURE_42`; Defender "Key vaults should have soft delete enabled".
//!
//! Compliant: `"enableSoftDelete": true`, or the property absent.
//! Non-compliant: `"enableSoftDelete": false`.

use super::chain;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::VaultSoftDelete,
    judge: check,
};

const EXPECTED: &str = "soft delete is on (enableSoftDelete true or absent)";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.vault.to_owned();
    let vault = match chain::vault(snapshot) {
        Ok(vault) => vault,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    let check = match vault.enable_soft_delete {
        Some(true) => Check::pass(RULE.id, resource, "enableSoftDelete is true", EXPECTED),
        None => Check::pass(
            RULE.id,
            resource,
            "enableSoftDelete is not reported: on, as for every vault since February 2025",
            EXPECTED,
        ),
        Some(false) => Check::fail(
            RULE.id,
            resource,
            Severity::High,
            "enableSoftDelete is false (a legacy vault: deleted keys cannot be recovered)",
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
                    "absent means on",
                    |s| vault_mut(s).enable_soft_delete = None,
                    &[PASS],
                ),
                (
                    "off",
                    |s| vault_mut(s).enable_soft_delete = Some(false),
                    &[HIGH],
                ),
                ("vault gone", |s| s.vault = Some(Read::NotFound), &[NA]),
                (
                    "vault unreadable",
                    |s| s.vault = Some(failed_read("vault", VAULT_ID)),
                    &[UNKNOWN],
                ),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
