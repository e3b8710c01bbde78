//! `vault.purge-protection`: `PATCH …/vaults/{v}` with `{"properties":{"enablePurgeProtection":true}}`.
//!
//! A PATCH, never a PUT: a vault PUT needs the whole vault and can wipe its access policies and
//! network rules (azure-notes Trap T7). Only `true` is ever sent, because the service refuses
//! `false` (T5). Purge protection only takes effect with soft delete, which cmk-guard does not
//! touch, so a vault with soft delete off is reported, not patched. Enabling it cannot be undone,
//! hence the catalogue's [`crate::catalogue::Remediation::Irreversible`] and the policy's
//! `irreversible_ok`.

use serde_json::{Value, json};

use super::{Act, Stage, Stop, partial_snapshot, vault_id};
use crate::catalogue::RuleId;
use crate::ids::ArmResourceId;
use crate::snapshot::{Read, Snapshot};

const RULE: RuleId = RuleId::VaultPurgeProtection;

/// The whole PATCH body: one flag, so nothing else on the vault can change.
pub(super) fn body() -> Value {
    json!({"properties": {"enablePurgeProtection": true}})
}

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let vault_id = vault_id(&workspace, act.arm.scope())?;
    let mut snapshot = partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault_id).await?);
    let observed = act.still_failing(RULE, &snapshot)?;
    if let Some(Read::Found(vault)) = &snapshot.vault
        && vault.enable_soft_delete == Some(false)
    {
        return Err(Stop::refused(format!(
            "soft delete is off on {vault_id}; purge protection only works with soft delete, which cmk-guard does not change"
        )));
    }
    act.arm
        .patch(
            vault_id.as_str(),
            act.api_version("Microsoft.KeyVault"),
            &body(),
            act.deadline,
        )
        .await
        .map_err(|e| {
            Stop::azure(
                &format!("PATCH enablePurgeProtection=true on {vault_id}"),
                &e,
            )
        })?;
    snapshot.vault = Some(act.vault(&vault_id).await?);
    act.verified(RULE, &snapshot)?;
    Ok(format!(
        "PATCHed {vault_id} with enablePurgeProtection=true (before: {observed}); verified: purge protection is on"
    ))
}

pub(super) fn describe(snapshot: &Snapshot) -> String {
    let vault = snapshot
        .workspace
        .found()
        .and_then(|w| w.encryption.as_ref())
        .and_then(|e| e.key_vault_arm_id.clone())
        .unwrap_or_else(|| "the workspace's key vault".to_owned());
    let soft_delete_off = snapshot
        .vault
        .as_ref()
        .and_then(Read::found)
        .is_some_and(|v| v.enable_soft_delete == Some(false));
    if soft_delete_off {
        format!(
            "would not PATCH {vault}: soft delete is off, and purge protection only works with it"
        )
    } else {
        format!(
            "would PATCH enablePurgeProtection=true on {vault} (irreversible: purge protection cannot be turned off again)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{VAULT_ID, compliant_snapshot, vault_mut};

    #[test]
    fn the_body_sets_only_purge_protection() {
        assert_eq!(
            body().to_string(),
            r#"{"properties":{"enablePurgeProtection":true}}"#
        );
    }

    #[test]
    fn describes_the_patch_or_why_not() {
        let mut snapshot = compliant_snapshot();
        vault_mut(&mut snapshot).enable_purge_protection = None;
        assert_eq!(
            describe(&snapshot),
            format!(
                "would PATCH enablePurgeProtection=true on {VAULT_ID} (irreversible: purge protection cannot be turned off again)"
            )
        );
        vault_mut(&mut snapshot).enable_soft_delete = Some(false);
        assert!(describe(&snapshot).starts_with("would not PATCH"));
    }
}
