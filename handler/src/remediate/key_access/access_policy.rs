//! `workspace.key-access` on an access-policy vault: `PUT …/vaults/{v}/accessPolicies/add` with
//! exactly `get`, `wrapKey` and `unwrapKey` on keys for the CMK principal, in the vault's tenant.
//!
//! `accessPolicies/add` merges into the principal's entry and leaves every other entry alone; an
//! `accessPolicies` array in a vault PATCH would replace the whole list (azure-notes Trap T7).
//! Adding permissions the principal already has changes nothing, so a retry is harmless.

use serde_json::{Value, json};

use super::RULE;
use crate::ids::ArmResourceId;
use crate::remediate::{Act, Stage, Stop};
use crate::snapshot::{CmkPrincipal, Snapshot, Vault};

/// The key permissions CMK needs (Azure ML CMK guide), and nothing more.
const KEY_PERMISSIONS: [&str; 3] = ["get", "wrapKey", "unwrapKey"];

/// The whole `accessPolicies/add` body: one entry, key permissions only.
pub(super) fn body(tenant_id: &str, object_id: &str) -> Value {
    json!({"properties": {"accessPolicies": [{
        "tenantId": tenant_id,
        "objectId": object_id,
        "permissions": {"keys": KEY_PERMISSIONS},
    }]}})
}

pub(super) async fn grant(
    act: &Act<'_>,
    snapshot: &mut Snapshot,
    vault_id: &ArmResourceId,
    vault: &Vault,
    principal: &CmkPrincipal,
    observed: &str,
) -> Stage<String> {
    let tenant = vault.tenant_id.as_deref().ok_or_else(|| {
        Stop::refused(format!(
            "the vault {vault_id} reports no tenantId for the access policy"
        ))
    })?;
    let path = format!("{vault_id}/accessPolicies/add");
    act.arm
        .put(
            &path,
            act.api_version("Microsoft.KeyVault"),
            &body(tenant, &principal.principal_id),
            act.deadline,
        )
        .await
        .map_err(|e| Stop::azure(&format!("PUT {path}"), &e))?;
    snapshot.vault = Some(act.vault(vault_id).await?);
    let now = act.verified(RULE, snapshot)?;
    Ok(format!(
        "PUT accessPolicies/add on {vault_id} granting keys {} to the {} in tenant {tenant} (before: {observed}); verified: {now}",
        KEY_PERMISSIONS.join(", "),
        principal.describe()
    ))
}

pub(super) fn describe(vault: &Vault, principal: &CmkPrincipal) -> String {
    let tenant = vault
        .tenant_id
        .as_deref()
        .or(principal.tenant_id.as_deref())
        .unwrap_or("(unknown)");
    format!(
        "would PUT accessPolicies/add on {} granting keys {} to the {} in tenant {tenant}",
        vault.id,
        KEY_PERMISSIONS.join(", "),
        principal.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_adds_exactly_get_wrap_and_unwrap() {
        assert_eq!(
            body("tenant-1", "principal-1"),
            json!({"properties": {"accessPolicies": [{
                "tenantId": "tenant-1",
                "objectId": "principal-1",
                "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]},
            }]}})
        );
    }
}
