//! `workspace.key-access`: give the workspace's CMK identity get, wrapKey and unwrapKey on the key
//! — by the vault's own permission model, because the other one is ignored (azure-notes Trap T8):
//! an access policy on access-policy vaults ([`access_policy`]), a role assignment on RBAC
//! vaults ([`role_assignment`]). The identity is the encryption identity, else the system
//! identity ([`crate::snapshot::Workspace::cmk_principal`], azure-notes Trap T21).

mod access_policy;
mod role_assignment;

use super::{Act, Stage, Stop, partial_snapshot, vault_id};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::snapshot::{CmkPrincipal, Read, Snapshot, Vault, Workspace};

const RULE: RuleId = RuleId::WorkspaceKeyAccess;

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let vault_id = vault_id(&workspace, act.arm.scope())?;
    let principal = principal(&workspace)?;
    let key_scope = key_scope(&workspace, &vault_id);
    let mut snapshot = partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault_id).await?);
    let access_policy_vault = match &snapshot.vault {
        Some(Read::Found(vault)) => uses_access_policies(vault),
        _ => false,
    };
    if !access_policy_vault {
        snapshot.role_assignments =
            Some(role_assignment::read(act, &key_scope, &principal.principal_id).await?);
    }
    let observed = act.still_failing(RULE, &snapshot)?;
    let Some(Read::Found(vault)) = snapshot.vault.clone() else {
        return Err(Stop::refused(format!(
            "the key vault {vault_id} was not read"
        )));
    };
    if access_policy_vault {
        access_policy::grant(act, &mut snapshot, &vault_id, &vault, &principal, &observed).await
    } else {
        role_assignment::grant(
            act,
            &mut snapshot,
            &vault_id,
            &key_scope,
            &principal,
            &observed,
        )
        .await
    }
}

/// Access policies decide only when the vault says `enableRbacAuthorization: false`; absent
/// means RBAC on api-version 2026-02-01 (azure-notes Trap T6), as the rule reads it.
pub(super) fn uses_access_policies(vault: &Vault) -> bool {
    vault.enable_rbac_authorization == Some(false)
}

fn principal(workspace: &Workspace) -> Stage<CmkPrincipal> {
    workspace.cmk_principal().ok_or_else(|| {
        Stop::refused(
            "the workspace has no CMK identity with a principal id (encryption identity or system identity) to grant access to"
                .to_owned(),
        )
    })
}

/// The scope whose role assignments reach the key (listed with `assignedTo()`, which includes
/// those above it); the vault when the key URL is unusable.
fn key_scope(workspace: &Workspace, vault_id: &ArmResourceId) -> String {
    workspace
        .encryption
        .as_ref()
        .and_then(|e| e.key_identifier.as_deref())
        .and_then(|text| KeyUrl::parse(text).ok())
        .map(|key| format!("{vault_id}/keys/{}", key.name()))
        .unwrap_or_else(|| vault_id.to_string())
}

pub(super) fn describe(snapshot: &Snapshot) -> String {
    let Some(workspace) = snapshot.workspace.found() else {
        return "would grant the workspace's CMK identity access to the key, once the workspace can be read".to_owned();
    };
    let Some(principal) = workspace.cmk_principal() else {
        return "would not grant access: the workspace has no CMK identity with a principal id"
            .to_owned();
    };
    let vault_text = workspace
        .encryption
        .as_ref()
        .and_then(|e| e.key_vault_arm_id.clone())
        .unwrap_or_default();
    let vault = snapshot.vault.as_ref().and_then(Read::found);
    match (vault, ArmResourceId::parse(&vault_text)) {
        (Some(vault), _) if uses_access_policies(vault) => {
            access_policy::describe(vault, &principal)
        }
        (_, Ok(vault_id)) => role_assignment::describe(&vault_id, &principal),
        (_, Err(_)) => "would not grant access: the workspace names no usable key vault".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{
        PRINCIPAL, TENANT, VAULT_ID, compliant_snapshot, vault_mut, workspace_mut,
    };

    #[test]
    fn describes_by_the_vault_permission_model() {
        let mut snapshot = compliant_snapshot();
        assert_eq!(
            describe(&snapshot),
            format!(
                "would PUT accessPolicies/add on {VAULT_ID} granting keys get, wrapKey, unwrapKey to the system identity (principal {PRINCIPAL}) in tenant {TENANT}"
            )
        );
        vault_mut(&mut snapshot).enable_rbac_authorization = None;
        let name = role_assignment::assignment_name(VAULT_ID, PRINCIPAL);
        assert_eq!(
            describe(&snapshot),
            format!(
                "would PUT role assignment {VAULT_ID}/providers/Microsoft.Authorization/roleAssignments/{name} giving the system identity (principal {PRINCIPAL}) Key Vault Crypto Service Encryption User on the vault"
            )
        );
        workspace_mut(&mut snapshot).identity = None;
        assert!(describe(&snapshot).starts_with("would not grant access"));
    }
}
