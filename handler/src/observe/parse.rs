//! ARM JSON → snapshot types. Tolerant by design: a missing or mistyped field becomes `None`
//! (absent is unknown, azure-notes Trap T16), never an error, because the rules decide what unknown
//! means.

use serde_json::Value;

use crate::snapshot::{
    AccessPolicy, DeletedVault, Encryption, Endpoint, EndpointKind, KeyVersion, LifetimeAction,
    ManagedIdentity, Permission, ProviderRegistration, RoleDefinition, RotationPolicy,
    UserAssignedIdentity, Vault, Workspace,
};

/// The value at a JSON pointer made of plain keys and array indices (no `~` escapes), like
/// `Value::pointer` without allocating a string per token: parsing a snapshot from cached
/// reads is on every relevant event's path.
pub fn at<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    let path = pointer.strip_prefix('/')?;
    path.split('/').try_fold(value, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    at(value, pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn flag(value: &Value, pointer: &str) -> Option<bool> {
    match at(value, pointer) {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn integer(value: &Value, pointer: &str) -> Option<i64> {
    match at(value, pointer) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn strings(value: &Value, pointer: &str) -> Vec<String> {
    at(value, pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `identity` of any ARM resource.
pub fn identity(value: &Value) -> Option<ManagedIdentity> {
    let identity = value.get("identity").filter(|v| v.is_object())?;
    let user_assigned = identity
        .get("userAssignedIdentities")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(resource_id, entry)| UserAssignedIdentity {
                    resource_id: resource_id.clone(),
                    principal_id: text(entry, "/principalId"),
                    client_id: text(entry, "/clientId"),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ManagedIdentity {
        identity_type: text(identity, "/type"),
        principal_id: text(identity, "/principalId"),
        tenant_id: text(identity, "/tenantId"),
        user_assigned,
    })
}

/// A workspace GET body.
pub fn workspace(value: &Value) -> Workspace {
    let encryption = at(value, "/properties/encryption")
        .filter(|v| v.is_object())
        .map(|e| Encryption {
            status: text(e, "/status"),
            key_vault_arm_id: text(e, "/keyVaultProperties/keyVaultArmId")
                .filter(|s| !s.is_empty()),
            key_identifier: text(e, "/keyVaultProperties/keyIdentifier").filter(|s| !s.is_empty()),
            user_assigned_identity: text(e, "/identity/userAssignedIdentity")
                .filter(|s| !s.is_empty()),
        });
    Workspace {
        id: text(value, "/id").unwrap_or_default(),
        name: text(value, "/name").unwrap_or_default(),
        location: text(value, "/location"),
        kind: text(value, "/kind"),
        tags: value
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        identity: identity(value),
        encryption,
        primary_user_assigned_identity: text(value, "/properties/primaryUserAssignedIdentity")
            .filter(|s| !s.is_empty()),
        service_provisioned_resource_group: text(
            value,
            "/properties/serviceProvisionedResourceGroup",
        )
        .filter(|s| !s.is_empty()),
    }
}

/// A vault GET body.
pub fn vault(value: &Value) -> Vault {
    let access_policies = at(value, "/properties/accessPolicies")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| AccessPolicy {
                    tenant_id: text(entry, "/tenantId"),
                    object_id: text(entry, "/objectId").unwrap_or_default(),
                    application_id: text(entry, "/applicationId"),
                    key_permissions: strings(entry, "/permissions/keys"),
                })
                .collect()
        })
        .unwrap_or_default();
    Vault {
        id: text(value, "/id").unwrap_or_default(),
        name: text(value, "/name").unwrap_or_default(),
        location: text(value, "/location"),
        tenant_id: text(value, "/properties/tenantId"),
        vault_uri: text(value, "/properties/vaultUri"),
        enable_soft_delete: flag(value, "/properties/enableSoftDelete"),
        soft_delete_retention_days: integer(value, "/properties/softDeleteRetentionInDays"),
        enable_purge_protection: flag(value, "/properties/enablePurgeProtection"),
        enable_rbac_authorization: flag(value, "/properties/enableRbacAuthorization"),
        access_policies,
        public_network_access: text(value, "/properties/publicNetworkAccess"),
    }
}

/// An item of the deleted-vaults list.
pub fn deleted_vault(value: &Value) -> DeletedVault {
    DeletedVault {
        id: text(value, "/id").unwrap_or_default(),
        vault_id: text(value, "/properties/vaultId"),
        deletion_date: text(value, "/properties/deletionDate"),
        scheduled_purge_date: text(value, "/properties/scheduledPurgeDate"),
        purge_protection_enabled: flag(value, "/properties/purgeProtectionEnabled"),
    }
}

/// An ARM key or key-version GET body. `key_name` and `version` come from the request when the
/// body does not say (a version GET names the version, not the key).
pub fn key_version(value: &Value, key_name: &str, version: Option<&str>) -> KeyVersion {
    let version_from_uri = text(value, "/properties/keyUriWithVersion").and_then(|uri| {
        uri.trim_end_matches('/')
            .rsplit('/')
            .next()
            .map(str::to_owned)
    });
    KeyVersion {
        id: text(value, "/id").unwrap_or_default(),
        key_name: key_name.to_owned(),
        version: version
            .map(str::to_owned)
            .or(version_from_uri)
            .map(|v| v.to_ascii_lowercase()),
        kty: text(value, "/properties/kty"),
        key_size: integer(value, "/properties/keySize").and_then(|n| u32::try_from(n).ok()),
        curve_name: text(value, "/properties/curveName"),
        enabled: flag(value, "/properties/attributes/enabled"),
        not_before: integer(value, "/properties/attributes/nbf"),
        expires: integer(value, "/properties/attributes/exp"),
        created: integer(value, "/properties/attributes/created"),
        key_ops: strings(value, "/properties/keyOps"),
        key_uri: text(value, "/properties/keyUri"),
        key_uri_with_version: text(value, "/properties/keyUriWithVersion"),
    }
}

/// The `rotationPolicy` of an ARM key GET body; `None` when the key has none.
pub fn rotation_policy(value: &Value) -> Option<RotationPolicy> {
    let policy = at(value, "/properties/rotationPolicy").filter(|v| v.is_object())?;
    let lifetime_actions = policy
        .get("lifetimeActions")
        .and_then(Value::as_array)
        .map(|actions| {
            actions
                .iter()
                .map(|a| LifetimeAction {
                    action: text(a, "/action/type").unwrap_or_default(),
                    time_after_create: text(a, "/trigger/timeAfterCreate"),
                    time_before_expiry: text(a, "/trigger/timeBeforeExpiry"),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RotationPolicy {
        expiry_time: text(policy, "/attributes/expiryTime"),
        lifetime_actions,
    })
}

/// The bit length of a base64url JWK modulus (`n`), for keys whose ARM body lacks `keySize`
/// (azure-notes Trap T4).
pub fn modulus_bits(n: &[u8]) -> Option<u32> {
    let bytes = n
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect::<Vec<u8>>();
    let first = *bytes.first()?;
    let bits = (bytes.len() as u32 - 1) * 8 + (8 - first.leading_zeros());
    Some(bits)
}

/// A role definition GET body.
pub fn role_definition(value: &Value) -> RoleDefinition {
    let permissions = at(value, "/properties/permissions")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .map(|p| Permission {
                    actions: strings(p, "/actions"),
                    not_actions: strings(p, "/notActions"),
                    data_actions: strings(p, "/dataActions"),
                    not_data_actions: strings(p, "/notDataActions"),
                })
                .collect()
        })
        .unwrap_or_default();
    RoleDefinition {
        id: text(value, "/id").unwrap_or_default(),
        role_name: text(value, "/properties/roleName"),
        permissions,
    }
}

/// An online or batch endpoint list item.
pub fn endpoint(value: &Value, kind: EndpointKind) -> Endpoint {
    Endpoint {
        id: text(value, "/id").unwrap_or_default(),
        name: text(value, "/name").unwrap_or_default(),
        kind,
        provisioning_state: text(value, "/properties/provisioningState"),
    }
}

/// A provider GET body.
pub fn provider(value: &Value, namespace: &str) -> ProviderRegistration {
    ProviderRegistration {
        namespace: text(value, "/namespace").unwrap_or_else(|| namespace.to_owned()),
        registration_state: text(value, "/registrationState"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn at_agrees_with_json_pointers_on_keys_and_indices() {
        let value = serde_json::json!({"a": {"b": [1, {"c": "x"}], "": 2}, "n": null});
        for pointer in [
            "/a", "/a/b", "/a/b/0", "/a/b/1/c", "/a/b/2", "/a/x", "/n", "/n/x", "/a/",
        ] {
            assert_eq!(at(&value, pointer), value.pointer(pointer), "{pointer}");
        }
        assert_eq!(at(&value, "a"), None, "a pointer starts with a slash");
    }

    fn fixture(name: &str) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/arm")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let example: Value = serde_json::from_str(&text).unwrap();
        example["responses"]["200"]["body"].clone()
    }

    #[test]
    fn reads_the_official_workspace_example() {
        let ws = workspace(&fixture("machinelearningservices-workspaces-get.json"));
        assert_eq!(ws.name, "testworkspace");
        let encryption = ws.encryption.clone().unwrap();
        assert_eq!(encryption.status.as_deref(), Some("Enabled"));
        assert!(
            encryption
                .key_identifier
                .unwrap()
                .ends_with("/keys/testkey/aabbccddee112233445566778899aabb")
        );
        assert!(
            encryption
                .user_assigned_identity
                .unwrap()
                .ends_with("/testuai")
        );
        let principal = ws.cmk_principal().unwrap();
        assert_eq!(
            principal.principal_id,
            "00000000-1111-2222-3333-444444444444"
        );
        assert!(principal.user_assigned_identity.is_some());
    }

    #[test]
    fn absent_vault_flags_stay_unknown() {
        let kv = vault(&fixture("keyvault-vaults-get.json"));
        assert_eq!(kv.name, "sample-vault");
        assert_eq!(kv.enable_soft_delete, None);
        assert_eq!(kv.enable_purge_protection, None);
        assert_eq!(kv.enable_rbac_authorization, None);
        assert_eq!(kv.access_policies.len(), 1);
        assert!(
            kv.access_policies[0]
                .key_permissions
                .iter()
                .any(|p| p == "unwrapKey")
        );
    }

    #[test]
    fn reads_key_versions() {
        let key = key_version(
            &fixture("keyvault-vaults-keys-getversion.json"),
            "sample-key-name",
            None,
        );
        assert_eq!(
            key.version.as_deref(),
            Some("fd618d9519b74f9aae94ade66b876acc")
        );
        assert_eq!(key.key_size, Some(2048));
        assert_eq!(key.kty.as_deref(), Some("RSA"));
        assert_eq!(key.enabled, Some(true));
        assert_eq!(key.expires, None);
        assert_eq!(
            rotation_policy(&fixture("keyvault-vaults-keys-get.json")),
            None
        );
    }

    #[test]
    fn modulus_bit_length() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), Some(16));
        assert_eq!(modulus_bits(&[0x01, 0xff]), Some(9));
        assert_eq!(modulus_bits(&[0, 0]), None);
        assert_eq!(modulus_bits(&[0xc0; 384]), Some(3072));
    }

    #[test]
    fn reads_endpoints_lists() {
        let list = fixture("machinelearningservices-onlineendpoints-list.json");
        let first = endpoint(&list["value"][0], EndpointKind::Online);
        assert_eq!(first.provisioning_state.as_deref(), Some("Creating"));
    }
}
