//! `vault.exists`: the CMK key vault exists and is not soft-deleted.
//!
//! Requirement: the workspace's data is encrypted with a key in this vault; without the vault the
//! workspace cannot decrypt anything. A deleted vault is kept (soft-deleted) for its retention
//! period and can be recovered; its role assignments are not restored on recovery (azure-notes
//! §1.5). Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: none (single-resource tools do not follow the workspace's reference).
//!
//! Compliant: `GET …/vaults/kv` answers 200.
//! Non-compliant: it answers 404, and `…/locations/{loc}/deletedVaults/kv` shows the vault was
//! deleted on 2026-11-01 with purge scheduled for 2027-01-30.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::VaultExists,
    judge: check,
};

const EXPECTED: &str = "the CMK key vault exists and is not deleted";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.vault.to_owned();
    match chain::vault(snapshot) {
        Ok(vault) => Checks::One(Check::pass(
            RULE.id,
            resource,
            ["the key vault ", &vault.name, " exists"].concat(),
            EXPECTED,
        )),
        Err(Gate::NotApplicable(_)) if matches!(snapshot.vault, Some(Read::NotFound)) => {
            let observed = match snapshot.deleted_vault.as_ref().and_then(Read::found) {
                Some(deleted) => format!(
                    "the key vault is soft-deleted (deleted {}, purge scheduled {}); recover it",
                    deleted
                        .deletion_date
                        .as_deref()
                        .unwrap_or("at an unknown date"),
                    deleted
                        .scheduled_purge_date
                        .as_deref()
                        .unwrap_or("at an unknown date"),
                ),
                None => "the key vault does not exist".to_owned(),
            };
            Checks::One(Check::fail(
                RULE.id,
                resource,
                Severity::Critical,
                observed,
                EXPECTED,
            ))
        }
        Err(gate) => Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::DeletedVault;

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("exists", |_| {}, &[PASS]),
                ("gone", |s| s.vault = Some(Read::NotFound), &[CRITICAL]),
                (
                    "soft-deleted",
                    |s| {
                        s.vault = Some(Read::NotFound);
                        s.deleted_vault = Some(Read::Found(DeletedVault {
                            deletion_date: Some("2026-11-01T00:00:00Z".into()),
                            scheduled_purge_date: Some("2027-01-30T00:00:00Z".into()),
                            ..DeletedVault::default()
                        }));
                    },
                    &[CRITICAL],
                ),
                (
                    "unreadable",
                    |s| s.vault = Some(failed_read("vault", VAULT_ID)),
                    &[UNKNOWN],
                ),
                ("not read", |s| s.vault = None, &[UNKNOWN]),
                (
                    "no vault named",
                    |s| encryption_mut(s).key_vault_arm_id = None,
                    &[UNKNOWN],
                ),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn a_soft_deleted_vault_is_named_as_such() {
        let mut snapshot = compliant_snapshot();
        snapshot.vault = Some(Read::NotFound);
        snapshot.deleted_vault = Some(Read::Found(DeletedVault::default()));
        let check = &run(&RULE, &snapshot)[0];
        assert!(
            check.observed.contains("soft-deleted"),
            "{}",
            check.observed
        );
        assert_eq!(check.resource, VAULT_ID);
    }
}
