//! `workspace.vault-same-subscription`: the CMK vault is in the workspace's subscription.
//!
//! Requirement: "The key vault that contains your customer-managed key must be in the same Azure
//! subscription as the workspace." Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: none in Azure Policy, Prowler or Checkov; Cloud Custodian can approximate it with
//! a regex on `properties.encryption.keyVaultProperties.keyVaultArmId` and `{account_id}`.
//!
//! Compliant: workspace `/subscriptions/S/…/workspaces/ws`, `keyVaultArmId`
//! `/subscriptions/S/resourceGroups/kv-rg/providers/Microsoft.KeyVault/vaults/kv`.
//! Non-compliant: the same workspace with `keyVaultArmId` `/subscriptions/T/…/vaults/kv`.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::ids::ArmResourceId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::WorkspaceVaultSameSubscription,
    judge: check,
};

const EXPECTED: &str = "the CMK key vault is in the workspace's subscription";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.workspace.to_owned();
    let encryption = match chain::cmk(snapshot) {
        Ok((_, encryption)) => encryption,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    let Some(vault_text) = encryption.key_vault_arm_id.as_deref() else {
        let why = "the workspace's encryption names no key vault".to_owned();
        return Checks::One(Gate::Unknown(why).check(RULE.id, resource, EXPECTED));
    };
    let vault = match ArmResourceId::parse(vault_text) {
        Ok(vault) => vault,
        Err(error) => {
            let why = format!("keyVaultArmId cannot be read: {error}");
            return Checks::One(Gate::Unknown(why).check(RULE.id, resource, EXPECTED));
        }
    };
    let workspace_subscription = snapshot.workspace_id.subscription();
    if vault.subscription() == workspace_subscription {
        Checks::One(Check::pass(
            RULE.id,
            resource,
            [
                "the key vault is in subscription ",
                workspace_subscription.as_str(),
            ]
            .concat(),
            EXPECTED,
        ))
    } else {
        Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::High,
            format!(
                "the key vault {vault_text} is in subscription {}, the workspace in {workspace_subscription}",
                vault.subscription()
            ),
            EXPECTED,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("same subscription", |_| {}, &[PASS]),
                (
                    "same subscription, other casing",
                    |s| {
                        encryption_mut(s).key_vault_arm_id = Some(
                            VAULT_ID
                                .to_uppercase()
                                .replace("/SUBSCRIPTIONS/", "/subscriptions/"),
                        )
                    },
                    &[PASS],
                ),
                (
                    "other subscription",
                    |s| {
                        encryption_mut(s).key_vault_arm_id = Some(
                            "/subscriptions/99999999-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
                                .into(),
                        )
                    },
                    &[HIGH],
                ),
                (
                    "no vault named",
                    |s| encryption_mut(s).key_vault_arm_id = None,
                    &[UNKNOWN],
                ),
                (
                    "unparsable vault id",
                    |s| encryption_mut(s).key_vault_arm_id = Some("kv1".into()),
                    &[UNKNOWN],
                ),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
