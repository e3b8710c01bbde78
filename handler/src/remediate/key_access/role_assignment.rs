//! `workspace.key-access` on an RBAC vault: `PUT {vault}/providers/Microsoft.Authorization/roleAssignments/{name}`
//! assigning *Key Vault Crypto Service Encryption User* (azure-notes §5: keys read, wrap and
//! unwrap, nothing else) to the CMK principal as a `ServicePrincipal`.
//!
//! The assignment name is a UUID v5 of scope, principal and role, so a retry PUTs the same
//! assignment again instead of creating a second one; a 409 `RoleAssignmentExists` (the same
//! grant under another name) means the grant is there. Either way the rule judges the result on
//! a fresh list of the principal's assignments.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

use super::RULE;
use crate::ids::ArmResourceId;
use crate::observe::parse;
use crate::remediate::{Act, Stage, Stop};
use crate::snapshot::{CmkPrincipal, Read, RoleAssignment, Snapshot};

/// *Key Vault Crypto Service Encryption User* (azure-notes §5, verified against the built-in
/// roles documentation).
use crate::snapshot::CMK_CONSUMER_ROLE as CRYPTO_SERVICE_ENCRYPTION_USER;

/// cmk-guard's own UUID v5 namespace, so its assignment names never collide with another tool's.
const NAMESPACE: Uuid = Uuid::from_u128(0x5c1b_7e2a_4f0d_4c6e_9a38_2d1f_6b0e_c4a7);

/// The deterministic assignment name for the role at `scope` for `principal_id` (case-folded,
/// because ARM ids and object ids compare case-insensitively, azure-notes Trap T1).
pub(super) fn assignment_name(scope: &str, principal_id: &str) -> Uuid {
    let seed = format!(
        "{}|{}|{CRYPTO_SERVICE_ENCRYPTION_USER}",
        scope.trim_end_matches('/').to_ascii_lowercase(),
        principal_id.to_ascii_lowercase()
    );
    Uuid::new_v5(&NAMESPACE, seed.as_bytes())
}

/// The whole PUT body (api-version 2022-04-01).
pub(super) fn body(subscription: &str, principal_id: &str) -> Value {
    json!({"properties": {
        "roleDefinitionId": format!(
            "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_SERVICE_ENCRYPTION_USER}"
        ),
        "principalId": principal_id,
        "principalType": "ServicePrincipal",
    }})
}

fn assignment_path(vault_id: &ArmResourceId, name: Uuid) -> String {
    format!("{vault_id}/providers/Microsoft.Authorization/roleAssignments/{name}")
}

pub(super) async fn grant(
    act: &Act<'_>,
    snapshot: &mut Snapshot,
    vault_id: &ArmResourceId,
    key_scope: &str,
    principal: &CmkPrincipal,
    observed: &str,
) -> Stage<String> {
    let name = assignment_name(vault_id.as_str(), &principal.principal_id);
    let path = assignment_path(vault_id, name);
    let subscription = vault_id.subscription().as_str();
    let written = act
        .arm
        .put(
            &path,
            act.api_version("Microsoft.Authorization"),
            &body(subscription, &principal.principal_id),
            act.deadline,
        )
        .await;
    let how = match written {
        Ok(_) => format!("PUT role assignment {path}"),
        Err(error)
            if error.status == Some(azure_core::http::StatusCode::Conflict)
                && error.code.as_deref() == Some("RoleAssignmentExists") =>
        {
            format!(
                "role assignment already present (PUT {path} answered 409 RoleAssignmentExists)"
            )
        }
        Err(error) => return Err(Stop::azure(&format!("PUT {path}"), &error)),
    };
    snapshot.role_assignments = Some(read(act, key_scope, &principal.principal_id).await?);
    let now = act.verified(RULE, snapshot)?;
    Ok(format!(
        "{how} giving the {} Key Vault Crypto Service Encryption User on the vault (before: {observed}); verified: {now}",
        principal.describe()
    ))
}

/// The principal's role assignments at or above `scope` (`assignedTo()`, so group grants
/// count), each with its role definition, read fresh.
pub(super) async fn read(
    act: &Act<'_>,
    scope: &str,
    principal_id: &str,
) -> Stage<Read<Vec<RoleAssignment>>> {
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
    let filter = format!("assignedTo('{principal_id}')");
    let version = act.api_version("Microsoft.Authorization");
    let items = match act
        .arm
        .list(&path, version, &[("$filter", &filter)], act.deadline)
        .await
    {
        Ok(items) => items,
        Err(error) if error.is_not_found() => Vec::new(),
        Err(error) => {
            return Err(Stop::azure(
                &format!("listing the role assignments of {principal_id}"),
                &error,
            ));
        }
    };
    let mut definitions = BTreeMap::new();
    let mut assignments = Vec::new();
    for item in &items {
        let text = |pointer: &str| {
            item.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let definition_id = text("/properties/roleDefinitionId");
        let key = definition_id.to_ascii_lowercase();
        if !definitions.contains_key(&key) && definition_id.starts_with('/') {
            let definition = act
                .read(&definition_id, "Microsoft.Authorization", "role definition")
                .await?
                .map(|value| parse::role_definition(&value));
            definitions.insert(key.clone(), definition);
        }
        let Some(definition) = definitions.get(&key).cloned() else {
            continue;
        };
        let optional = |pointer: &str| Some(text(pointer)).filter(|t| !t.is_empty());
        assignments.push(RoleAssignment {
            id: text("/id"),
            principal_id: text("/properties/principalId"),
            principal_type: optional("/properties/principalType"),
            scope: text("/properties/scope"),
            role_definition_id: definition_id,
            condition: optional("/properties/condition"),
            definition,
        });
    }
    Ok(Read::Found(assignments))
}

pub(super) fn describe(vault_id: &ArmResourceId, principal: &CmkPrincipal) -> String {
    let name = assignment_name(vault_id.as_str(), &principal.principal_id);
    format!(
        "would PUT role assignment {} giving the {} Key Vault Crypto Service Encryption User on the vault",
        assignment_path(vault_id, name),
        principal.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    const PRINCIPAL: &str = "aaaaaaaa-0000-0000-0000-000000000001";

    #[test]
    fn the_name_is_a_stable_v5_uuid_of_scope_principal_and_role() {
        let name = assignment_name(VAULT, PRINCIPAL);
        assert_eq!(name.get_version_num(), 5);
        assert_eq!(name, assignment_name(VAULT, PRINCIPAL));
        assert_eq!(
            name,
            assignment_name(
                &format!("{}/", VAULT.to_uppercase()),
                &PRINCIPAL.to_uppercase()
            ),
            "ids compare case-insensitively"
        );
        assert_ne!(
            name,
            assignment_name(VAULT, "aaaaaaaa-0000-0000-0000-000000000002")
        );
        assert_ne!(name, assignment_name(&format!("{VAULT}2"), PRINCIPAL));
        assert_eq!(
            name,
            Uuid::new_v5(
                &NAMESPACE,
                format!(
                    "{}|{PRINCIPAL}|e147488a-f6f5-4113-8e2d-b22465e65bf6",
                    VAULT.to_ascii_lowercase()
                )
                .as_bytes()
            )
        );
    }

    #[test]
    fn the_body_assigns_the_crypto_service_encryption_user_role_to_a_service_principal() {
        assert_eq!(
            body("3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34", PRINCIPAL),
            json!({"properties": {
                "roleDefinitionId": "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6",
                "principalId": PRINCIPAL,
                "principalType": "ServicePrincipal",
            }})
        );
    }
}
