//! Built-in Azure role definitions the CMK chain depends on, with their real permissions
//! (MicrosoftDocs `built-in-roles/security.md` and `general.md`), and wildcard action matching
//! so data-plane checks evaluate definitions instead of comparing GUIDs (azure-notes Trap T8).

use crate::ids::eq_ci;
use serde::Serialize;
use serde_json::{Value, json};

/// One built-in role definition.
#[derive(Debug, Clone, Copy)]
pub struct RoleDefinition {
    /// GUID (the definition's `name`).
    pub guid: &'static str,
    /// `roleName`.
    pub role_name: &'static str,
    /// `description`.
    pub description: &'static str,
    /// `permissions[0].actions`.
    pub actions: &'static [&'static str],
    /// `permissions[0].notActions`.
    pub not_actions: &'static [&'static str],
    /// `permissions[0].dataActions`.
    pub data_actions: &'static [&'static str],
    /// `permissions[0].notDataActions`.
    pub not_data_actions: &'static [&'static str],
}

const KV_READ_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
];

/// Key Vault Crypto Service Encryption User: what a CMK consumer needs on RBAC vaults.
pub const CRYPTO_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
/// Key Vault Crypto Officer.
pub const CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";
/// Key Vault Administrator.
pub const ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
/// Key Vault Reader.
pub const KEY_VAULT_READER: &str = "21090545-7ca7-4776-b22c-e363652d74d2";
/// Reader.
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
/// Key Vault Crypto User.
pub const CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
/// Key Vault Contributor (management plane only).
pub const KEY_VAULT_CONTRIBUTOR: &str = "f25e0fa2-a7c8-4377-a976-54943a77a395";

/// Owner.
pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
/// Contributor.
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
/// User Access Administrator.
pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
/// Role Based Access Control Administrator.
pub const RBAC_ADMINISTRATOR: &str = "f58310d9-a9f6-439a-9e8d-f62e7b41a168";

/// The built-in roles the simulator knows.
pub const BUILT_IN: &[RoleDefinition] = &[
    RoleDefinition {
        guid: CRYPTO_SERVICE_ENCRYPTION_USER,
        role_name: "Key Vault Crypto Service Encryption User",
        description: "Read metadata of keys and perform wrap/unwrap operations. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/read",
            "Microsoft.EventGrid/eventSubscriptions/delete",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: CRYPTO_OFFICER,
        role_name: "Key Vault Crypto Officer",
        description: "Perform any action on the keys of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: ADMINISTRATOR,
        role_name: "Key Vault Administrator",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: KEY_VAULT_READER,
        role_name: "Key Vault Reader",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: CRYPTO_USER,
        role_name: "Key Vault Crypto User",
        description: "Perform cryptographic operations using keys. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: KEY_VAULT_CONTRIBUTOR,
        role_name: "Key Vault Contributor",
        description: "Lets you manage key vaults, but not access to them.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.KeyVault/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            "Microsoft.KeyVault/hsmPools/*",
            "Microsoft.KeyVault/managedHsms/*",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: OWNER,
        role_name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: CONTRIBUTOR,
        role_name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: USER_ACCESS_ADMINISTRATOR,
        role_name: "User Access Administrator",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: RBAC_ADMINISTRATOR,
        role_name: "Role Based Access Control Administrator",
        description: "Manage access to Azure resources by assigning roles using Azure RBAC. This role does not allow you to manage access using other ways, such as Azure Policy.",
        actions: &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        guid: READER,
        role_name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
];

/// A custom role definition (what a deployment creates, like infra/'s least-privilege roles).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRole {
    /// GUID (the definition's `name`).
    pub guid: String,
    /// `roleName`.
    pub role_name: String,
    /// `permissions[0].actions`.
    pub actions: Vec<String>,
    /// `permissions[0].dataActions`.
    pub data_actions: Vec<String>,
}

impl CustomRole {
    /// Whether the definition grants a management action.
    pub fn grants_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
    }

    /// Whether the definition grants a data action.
    pub fn grants_data_action(&self, action: &str) -> bool {
        self.data_actions.iter().any(|p| action_matches(p, action))
    }
}

/// Finds a built-in role by GUID or by role name, case-insensitively.
pub fn find(guid_or_name: &str) -> Option<&'static RoleDefinition> {
    let key = guid_or_name.rsplit('/').next().unwrap_or(guid_or_name);
    BUILT_IN
        .iter()
        .find(|r| eq_ci(r.guid, key) || eq_ci(r.role_name, guid_or_name))
}

/// Azure wildcard matching: `*` matches any run of characters, case-insensitively.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    glob(p.as_bytes(), a.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

impl RoleDefinition {
    /// Whether the definition grants a data action (dataActions minus notDataActions).
    pub fn grants_data_action(&self, action: &str) -> bool {
        self.data_actions.iter().any(|p| action_matches(p, action))
            && !self
                .not_data_actions
                .iter()
                .any(|p| action_matches(p, action))
    }

    /// Whether the definition grants a management action.
    pub fn grants_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
            && !self.not_actions.iter().any(|p| action_matches(p, action))
    }

    /// The ARM `roleDefinitions` GET body; `subscription` scopes the id like ARM does when
    /// the definition is read under a subscription.
    pub fn to_json(&self, subscription: Option<&str>) -> Value {
        let id = match subscription {
            Some(s) => format!(
                "/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
            None => format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
        };
        json!({
            "id": id,
            "name": self.guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.role_name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": self.not_data_actions,
                }],
                "createdOn": "2020-05-19T17:52:46.2349235Z",
                "updatedOn": "2021-11-11T20:14:30.0000000Z",
                "createdBy": null,
                "updatedBy": null,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_azure() {
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keys/unwrap/action"
        ));
        assert!(action_matches(
            "microsoft.keyvault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/unwrap/action"
        ));
        assert!(action_matches("*/read", "Microsoft.KeyVault/vaults/read"));
    }

    #[test]
    fn roles_grant_the_cmk_data_actions_they_should() {
        let unwrap = "Microsoft.KeyVault/vaults/keys/unwrap/action";
        for guid in [
            CRYPTO_SERVICE_ENCRYPTION_USER,
            CRYPTO_OFFICER,
            ADMINISTRATOR,
            CRYPTO_USER,
        ] {
            assert!(find(guid).unwrap().grants_data_action(unwrap), "{guid}");
        }
        for guid in [KEY_VAULT_READER, READER, KEY_VAULT_CONTRIBUTOR] {
            assert!(!find(guid).unwrap().grants_data_action(unwrap), "{guid}");
        }
        assert!(
            find(KEY_VAULT_READER)
                .unwrap()
                .grants_data_action("Microsoft.KeyVault/vaults/keys/read")
        );
        assert_eq!(
            find("key vault crypto officer").unwrap().guid,
            CRYPTO_OFFICER
        );
        assert_eq!(
            find("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6").unwrap().guid,
            CRYPTO_SERVICE_ENCRYPTION_USER
        );
    }
}
