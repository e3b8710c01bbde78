//! `key.exists`: the CMK key, and the version the workspace pins, exist in the CMK vault.
//!
//! Requirement: the workspace wraps its data keys with this key; if the key (or the pinned
//! version, azure-notes Trap T10) is gone, the workspace cannot decrypt. The key must also live in
//! the vault the workspace names: the key can only ever be changed to another key in the same
//! vault (azure-notes Trap T21). Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: none (single-resource tools do not follow the workspace's reference).
//!
//! Compliant: `keyIdentifier` `https://kv.vault.azure.net/keys/cmk/0123…` and
//! `GET …/vaults/kv/keys/cmk/versions/0123…` answers 200.
//! Non-compliant: that GET answers 404 (the version was deleted), or `keyIdentifier` names the
//! host `other.vault.azure.net` while `keyVaultArmId` names the vault `kv`.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyExists,
    judge: check,
};

const EXPECTED: &str = "the CMK key and the version the workspace uses exist in the CMK vault";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    let stop = |gate: Gate| Checks::One(gate.check(RULE.id, resource.clone(), EXPECTED));
    let vault = match chain::vault(snapshot) {
        Ok(vault) => vault,
        Err(gate) => return stop(gate),
    };
    let url = match &links.key_url {
        Some(Ok(url)) => url,
        Some(Err(error)) => {
            return stop(Gate::Unknown(format!(
                "keyIdentifier cannot be read: {error}"
            )));
        }
        None => {
            return stop(Gate::Unknown(
                "the workspace's encryption names no key".into(),
            ));
        }
    };
    if !url.vault_name().eq_ignore_ascii_case(&vault.name) {
        let observed = format!(
            "keyIdentifier names the vault `{}`, but keyVaultArmId names `{}`",
            url.vault_name(),
            vault.name
        );
        return Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            observed,
            EXPECTED,
        ));
    }
    match &snapshot.key {
        Some(Read::Found(_)) => Checks::One(Check::pass(
            RULE.id,
            resource,
            ["the key ", &links.key_label, " exists"].concat(),
            EXPECTED,
        )),
        Some(Read::NotFound) => {
            let latest = snapshot.latest_key.as_ref().and_then(Read::found);
            let observed = match (url.version(), latest) {
                (Some(version), Some(latest)) => format!(
                    "the pinned version {version} of the key {} does not exist (the latest version is {})",
                    url.name(),
                    latest.version.as_deref().unwrap_or("unknown")
                ),
                (Some(version), None) => format!(
                    "the key {} (pinned version {version}) does not exist",
                    url.name()
                ),
                (None, _) => format!("the key {} does not exist", url.name()),
            };
            Checks::One(Check::fail(
                RULE.id,
                resource,
                Severity::Critical,
                observed,
                EXPECTED,
            ))
        }
        Some(Read::Failed(_)) => stop(Gate::Unknown("the key could not be read".into())),
        None => stop(Gate::Unknown("the key was not read".into())),
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
                ("exists", |_| {}, &[PASS]),
                ("gone", |s| s.key = Some(Read::NotFound), &[CRITICAL]),
                (
                    "key in another vault than keyVaultArmId",
                    |s| {
                        encryption_mut(s).key_identifier =
                            Some("https://other.vault.azure.net/keys/cmk".into())
                    },
                    &[CRITICAL],
                ),
                (
                    "unreadable",
                    |s| s.key = Some(failed_read("key", KEY_URL)),
                    &[UNKNOWN],
                ),
                ("not read", |s| s.key = None, &[UNKNOWN]),
                (
                    "no key named",
                    |s| encryption_mut(s).key_identifier = None,
                    &[UNKNOWN],
                ),
                (
                    "unparsable key identifier",
                    |s| encryption_mut(s).key_identifier = Some("cmk".into()),
                    &[UNKNOWN],
                ),
                ("vault gone", |s| s.vault = Some(Read::NotFound), &[NA]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn a_missing_pinned_version_names_the_latest() {
        let mut snapshot = compliant_snapshot();
        snapshot.key = Some(Read::NotFound);
        key_latest_version(&mut snapshot, "fedcba9876543210fedcba9876543210");
        let check = &run(&RULE, &snapshot)[0];
        assert!(
            check
                .observed
                .contains("the latest version is fedcba9876543210fedcba9876543210"),
            "{}",
            check.observed
        );
    }

    fn key_latest_version(snapshot: &mut crate::snapshot::Snapshot, version: &str) {
        if let Some(Read::Found(latest)) = &mut snapshot.latest_key {
            latest.version = Some(version.into());
        }
    }
}
