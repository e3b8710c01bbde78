//! Scenarios: the JSON format the binary loads and the Rust builder tests use are the same
//! types, so a scenario file and a builder chain describe a tenant in the same words.
//! Every field has a default that produces a realistic, compliant tenant; a test changes only
//! what its story is about (purge protection off, key expired, role missing, …).
//!
//! Flags that Azure may omit are `Option<bool>`: in JSON a missing field takes the default,
//! `null` makes the property absent from responses (azure-notes Trap T16), `true`/`false` set it.

use crate::clock::{DAY, now_unix};
use crate::ids::{self, eq_ci, stable_hex32, stable_uuid};
use crate::model::*;
use crate::roles;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Tenant id of the default scenario.
pub const DEFAULT_TENANT_ID: &str = "8c2a7f31-5d4e-4b9a-9f1e-6a3b2c1d0e9f";
/// Subscription of the default scenario (matches the derived Key Vault event fixtures).
pub const DEFAULT_SUBSCRIPTION: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
/// A second subscription, for "vault in another subscription" stories.
pub const OTHER_SUBSCRIPTION: &str = "5b9e0c2a-7d41-4f3e-8a6b-1c2d3e4f5a6b";
/// Resource group of the default scenario.
pub const DEFAULT_RESOURCE_GROUP: &str = "rg-mlw-prod";
/// CMK vault of the default scenario.
pub const DEFAULT_VAULT: &str = "kv-mlw-cmk-prod";
/// CMK key of the default scenario.
pub const DEFAULT_KEY: &str = "mlw-cmk-key";
/// Current version of the default key: the version the derived Key Vault event fixtures name,
/// so replaying them against the default tenant addresses an existing key version.
pub const DEFAULT_KEY_VERSION: &str = "4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9";
/// Workspace of the default scenario.
pub const DEFAULT_WORKSPACE: &str = "mlw-prod";
/// Default region.
pub const DEFAULT_LOCATION: &str = "westeurope";

/// Resource provider namespaces every subscription knows.
pub const PROVIDER_NAMESPACES: &[&str] = &[
    "Microsoft.MachineLearningServices",
    "Microsoft.Storage",
    "Microsoft.KeyVault",
    "Microsoft.DocumentDB",
    "Microsoft.Search",
    "Microsoft.ManagedIdentity",
    "Microsoft.ContainerRegistry",
    "Microsoft.Insights",
    "Microsoft.Authorization",
    "Microsoft.Resources",
];

/// Why a scenario could not be turned into a tenant.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The JSON did not parse or had unknown fields.
    #[error("invalid scenario JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The scenario refers to something that does not exist or is contradictory.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// A whole tenant description (the `--scenario` file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Scenario {
    /// Entra tenant id.
    pub tenant_id: String,
    /// The identity cmk-guard runs as.
    pub app: AppSpec,
    /// Object id that admin-API changes are attributed to.
    pub operator_principal_id: String,
    /// Subscriptions (those referenced by resources are added automatically).
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Entra groups.
    pub groups: Vec<GroupSpec>,
    /// Management groups (`parent` links them into a tree; their subscriptions are added).
    pub management_groups: Vec<ManagementGroup>,
    /// Key vaults.
    pub vaults: Vec<VaultSpec>,
    /// ML workspaces.
    pub workspaces: Vec<WorkspaceSpec>,
    /// Extra role assignments.
    pub role_assignments: Vec<RoleAssignmentSpec>,
    /// Other resources served verbatim.
    pub resources: Vec<ResourceSpec>,
    /// Authorise ARM requests with Azure RBAC (default true, as Azure does).
    pub enforce_management_rbac: bool,
    /// Answer workspace PATCH with 202 + `Location` (default false: 200 with the body).
    pub async_workspace_updates: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            app: AppSpec::default(),
            operator_principal_id: stable_uuid("principal:operator"),
            subscriptions: Vec::new(),
            groups: Vec::new(),
            management_groups: Vec::new(),
            vaults: Vec::new(),
            workspaces: Vec::new(),
            role_assignments: Vec::new(),
            resources: Vec::new(),
            enforce_management_rbac: true,
            async_workspace_updates: false,
        }
    }
}

/// The Function app's managed identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AppSpec {
    /// System-assigned principal id; `null` = no system identity.
    pub principal_id: Option<String>,
    /// System-assigned client id.
    pub client_id: String,
    /// ARM id of the Function app.
    pub resource_id: String,
    /// User-assigned identities attached to the app.
    pub user_assigned: Vec<UserAssignedSpec>,
    /// Give the app Contributor, Role Based Access Control Administrator and Key Vault Crypto
    /// Officer on every subscription (and an access policy on access-policy vaults with
    /// `appAccess`), enough to read and remediate.
    pub roles: bool,
}

impl Default for AppSpec {
    fn default() -> Self {
        Self {
            principal_id: Some(stable_uuid("principal:cmk-guard")),
            client_id: stable_uuid("client:cmk-guard"),
            resource_id: format!(
                "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-cmk-guard/providers/Microsoft.Web/sites/func-cmk-guard"
            ),
            user_assigned: Vec::new(),
            roles: true,
        }
    }
}

/// A user-assigned identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAssignedSpec {
    /// ARM id.
    pub resource_id: String,
    /// Client id (derived from the resource id when omitted).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Principal id (derived from the resource id when omitted).
    #[serde(default)]
    pub principal_id: Option<String>,
}

impl UserAssignedSpec {
    /// A UAI in `subscription`/`resource_group` with derived, stable client and principal ids.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            resource_id: format!(
                "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
                ids::resource_group_id(subscription, resource_group)
            ),
            client_id: None,
            principal_id: None,
        }
    }

    fn resolve(&self) -> UserAssignedIdentity {
        let seed = self.resource_id.to_ascii_lowercase();
        UserAssignedIdentity {
            resource_id: self.resource_id.clone(),
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| stable_uuid(&format!("client:{seed}"))),
            principal_id: self
                .principal_id
                .clone()
                .unwrap_or_else(|| stable_uuid(&format!("principal:{seed}"))),
        }
    }

    /// The principal id this identity will have.
    pub fn principal_id(&self) -> String {
        self.resolve().principal_id
    }
}

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Subscription id.
    pub id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Namespaces that are `NotRegistered`.
    pub unregistered_providers: Vec<String>,
}

/// An Entra group.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GroupSpec {
    /// Group object id.
    pub object_id: String,
    /// Member object ids.
    pub members: Vec<String>,
}

/// A key vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct VaultSpec {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Vault name.
    pub name: String,
    /// Region.
    pub location: String,
    /// Tenant id (defaults to the scenario's).
    pub tenant_id: Option<String>,
    /// `standard` or `premium`.
    pub sku: String,
    /// `enableSoftDelete` (`null` = absent).
    pub soft_delete: Option<bool>,
    /// `softDeleteRetentionInDays` (`null` = absent).
    pub soft_delete_retention_in_days: Option<u32>,
    /// `enablePurgeProtection` (`null` = absent, i.e. never enabled).
    pub purge_protection: Option<bool>,
    /// `enableRbacAuthorization` (`null` = absent).
    pub rbac: Option<bool>,
    /// `publicNetworkAccess`.
    pub public_network_access: String,
    /// `networkAcls`, verbatim.
    pub network_acls: Option<Value>,
    /// Access policies.
    pub access_policies: Vec<AccessPolicySpec>,
    /// Give the app identity full key permissions on an access-policy vault.
    pub app_access: bool,
    /// The vault is soft-deleted.
    pub deleted: bool,
    /// Keys.
    pub keys: Vec<KeySpec>,
    /// Tags.
    pub tags: Map<String, Value>,
    /// The vault's wiring to cmk-guard (Event Grid system topic and subscription, `AuditEvent`
    /// diagnostic setting); `null` = not wired.
    pub wiring: Option<WiringSpec>,
}

/// Where a wired vault's events and audit logs go; each part is created only when named.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WiringSpec {
    /// ARM id of the Azure Function the system topic's `cmk-guard` subscription delivers to.
    pub events_target: Option<String>,
    /// Event Hub authorization rule id of the `cmk-guard-audit` diagnostic setting.
    pub audit_rule_id: Option<String>,
    /// Event Hub name of that setting.
    pub audit_hub: Option<String>,
}

impl Default for VaultSpec {
    fn default() -> Self {
        Self {
            subscription: DEFAULT_SUBSCRIPTION.to_owned(),
            resource_group: DEFAULT_RESOURCE_GROUP.to_owned(),
            name: DEFAULT_VAULT.to_owned(),
            location: DEFAULT_LOCATION.to_owned(),
            tenant_id: None,
            sku: "standard".to_owned(),
            soft_delete: Some(true),
            soft_delete_retention_in_days: Some(90),
            purge_protection: Some(true),
            rbac: Some(true),
            public_network_access: "Enabled".to_owned(),
            network_acls: None,
            access_policies: Vec::new(),
            app_access: true,
            deleted: false,
            keys: Vec::new(),
            tags: Map::new(),
            wiring: None,
        }
    }
}

impl VaultSpec {
    /// A compliant RBAC vault (soft delete and purge protection on) with no keys.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            ..Self::default()
        }
    }
    /// Wires the vault to cmk-guard: a system topic with an event subscription to
    /// `events_target`, and a diagnostic setting streaming `AuditEvent` to `hub` through `rule`.
    pub fn wired(mut self, events_target: &str, rule: &str, hub: &str) -> Self {
        self.wiring = Some(WiringSpec {
            events_target: Some(events_target.to_owned()),
            audit_rule_id: Some(rule.to_owned()),
            audit_hub: Some(hub.to_owned()),
        });
        self
    }
    /// Sets `enablePurgeProtection` (`None` = absent).
    pub fn purge_protection(mut self, value: Option<bool>) -> Self {
        self.purge_protection = value;
        self
    }
    /// Sets `enableSoftDelete` (`None` = absent).
    pub fn soft_delete(mut self, value: Option<bool>) -> Self {
        self.soft_delete = value;
        self
    }
    /// Sets `enableRbacAuthorization` (`None` = absent).
    pub fn rbac(mut self, value: Option<bool>) -> Self {
        self.rbac = value;
        self
    }
    /// Makes this an access-policy vault (`enableRbacAuthorization: false`).
    pub fn access_policy_model(self) -> Self {
        self.rbac(Some(false))
    }
    /// Adds an access policy with key permissions.
    pub fn access_policy(mut self, object_id: &str, key_permissions: &[&str]) -> Self {
        self.access_policies.push(AccessPolicySpec {
            object_id: object_id.to_owned(),
            keys: key_permissions.iter().map(|s| (*s).to_owned()).collect(),
            ..AccessPolicySpec::default()
        });
        self
    }
    /// Marks the vault soft-deleted.
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }
    /// Sets the region.
    pub fn location(mut self, location: &str) -> Self {
        self.location = location.to_owned();
        self
    }
    /// Adds a key.
    pub fn key(mut self, key: KeySpec) -> Self {
        self.keys.push(key);
        self
    }
    /// The vault's ARM id.
    pub fn id(&self) -> String {
        ids::vault_id(&self.subscription, &self.resource_group, &self.name)
    }
}

/// An access policy.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AccessPolicySpec {
    /// Object id.
    pub object_id: String,
    /// Tenant (defaults to the vault's).
    pub tenant_id: Option<String>,
    /// Key permissions.
    pub keys: Vec<String>,
    /// Secret permissions.
    pub secrets: Vec<String>,
    /// Certificate permissions.
    pub certificates: Vec<String>,
}

/// A key with its current version and optional older versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KeySpec {
    /// Key name.
    pub name: String,
    /// `RSA`, `RSA-HSM`, `EC` or `EC-HSM`.
    pub kty: String,
    /// RSA modulus bits.
    pub size: Option<u32>,
    /// EC curve (`P-256`, `P-384`, `P-521`, `P-256K`).
    pub curve: Option<String>,
    /// Current version enabled.
    pub enabled: bool,
    /// Current version expires this many days from now (negative = already expired; `null` = no expiry).
    pub expires_in_days: Option<i64>,
    /// Current version's absolute `exp` (unix seconds); overrides `expiresInDays`.
    pub exp: Option<i64>,
    /// Current version's `nbf` (unix seconds).
    pub nbf: Option<i64>,
    /// Current version was created this many days ago.
    pub created_days_ago: i64,
    /// Explicit id of the current version (32 hex); derived when omitted.
    pub version: Option<String>,
    /// Key operations.
    pub key_ops: Vec<String>,
    /// Older versions, oldest first.
    pub older_versions: Vec<KeyVersionSpec>,
    /// Rotation policy (`null` = none).
    pub rotation_policy: Option<RotationPolicySpec>,
    /// Tags.
    pub tags: Map<String, Value>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self {
            name: DEFAULT_KEY.to_owned(),
            kty: "RSA".to_owned(),
            size: Some(3072),
            curve: None,
            enabled: true,
            expires_in_days: Some(365),
            exp: None,
            nbf: None,
            created_days_ago: 0,
            version: None,
            key_ops: [
                "wrapKey",
                "unwrapKey",
                "encrypt",
                "decrypt",
                "sign",
                "verify",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            older_versions: Vec::new(),
            rotation_policy: Some(RotationPolicySpec::default()),
            tags: Map::new(),
        }
    }
}

impl KeySpec {
    /// An enabled RSA key expiring in 365 days with a rotation policy.
    pub fn rsa(name: &str, bits: u32) -> Self {
        Self {
            name: name.to_owned(),
            size: Some(bits),
            ..Self::default()
        }
    }
    /// An EC key on `curve`.
    pub fn ec(name: &str, curve: &str) -> Self {
        Self {
            name: name.to_owned(),
            kty: "EC".to_owned(),
            size: None,
            curve: Some(curve.to_owned()),
            ..Self::default()
        }
    }
    /// Makes it an HSM key (`RSA-HSM` / `EC-HSM`).
    pub fn hsm(mut self) -> Self {
        if !self.kty.ends_with("-HSM") {
            self.kty.push_str("-HSM");
        }
        self
    }
    /// Current version expires in `days` (negative: expired `-days` ago).
    pub fn expires_in_days(mut self, days: i64) -> Self {
        self.expires_in_days = Some(days);
        self.exp = None;
        self
    }
    /// Current version has no expiry.
    pub fn no_expiry(mut self) -> Self {
        self.expires_in_days = None;
        self.exp = None;
        self
    }
    /// Current version disabled.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
    /// No rotation policy.
    pub fn no_rotation_policy(mut self) -> Self {
        self.rotation_policy = None;
        self
    }
    /// Adds an older version (they are kept oldest first).
    pub fn older_version(mut self, version: KeyVersionSpec) -> Self {
        self.older_versions.push(version);
        self
    }
}

/// An older key version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KeyVersionSpec {
    /// Explicit version id (32 hex); derived when omitted.
    pub version: Option<String>,
    /// Enabled.
    pub enabled: bool,
    /// Expires this many days from now (`null` = no expiry).
    pub expires_in_days: Option<i64>,
    /// Absolute `exp`; overrides `expiresInDays`.
    pub exp: Option<i64>,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// Created this many days ago (default: 90 days per step back).
    pub created_days_ago: Option<i64>,
}

impl Default for KeyVersionSpec {
    fn default() -> Self {
        Self {
            version: None,
            enabled: true,
            expires_in_days: Some(365),
            exp: None,
            nbf: None,
            created_days_ago: None,
        }
    }
}

impl KeyVersionSpec {
    /// An enabled older version expiring in `days`.
    pub fn expiring_in_days(days: i64) -> Self {
        Self {
            expires_in_days: Some(days),
            ..Self::default()
        }
    }
}

/// A rotation policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RotationPolicySpec {
    /// `expiryTime` (ISO-8601 duration).
    pub expiry_time: Option<String>,
    /// Lifetime actions.
    pub lifetime_actions: Vec<LifetimeActionSpec>,
}

impl Default for RotationPolicySpec {
    fn default() -> Self {
        Self {
            expiry_time: Some("P1Y".to_owned()),
            lifetime_actions: vec![
                LifetimeActionSpec {
                    action: "Rotate".to_owned(),
                    time_after_create: None,
                    time_before_expiry: Some("P30D".to_owned()),
                },
                LifetimeActionSpec {
                    action: "Notify".to_owned(),
                    time_after_create: None,
                    time_before_expiry: Some("P30D".to_owned()),
                },
            ],
        }
    }
}

/// One lifetime action.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LifetimeActionSpec {
    /// `Rotate` or `Notify`.
    pub action: String,
    /// ISO-8601 duration after creation.
    pub time_after_create: Option<String>,
    /// ISO-8601 duration before expiry.
    pub time_before_expiry: Option<String>,
}

/// An ML workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Workspace name.
    pub name: String,
    /// Region.
    pub location: String,
    /// `Default`, `Hub`, `Project`, `FeatureStore`.
    pub kind: String,
    /// Has a system-assigned identity.
    pub system_identity: bool,
    /// System identity principal id (derived when omitted).
    pub principal_id: Option<String>,
    /// Attached user-assigned identities.
    pub user_assigned: Vec<UserAssignedSpec>,
    /// `primaryUserAssignedIdentity`.
    pub primary_user_assigned_identity: Option<String>,
    /// CMK settings (`null` = Microsoft-managed keys).
    pub cmk: Option<CmkSpec>,
    /// Names of v2 online endpoints.
    pub online_endpoints: Vec<String>,
    /// Names of batch endpoints.
    pub batch_endpoints: Vec<String>,
    /// `publicNetworkAccess`.
    pub public_network_access: String,
    /// Tags.
    pub tags: Map<String, Value>,
}

impl Default for WorkspaceSpec {
    fn default() -> Self {
        Self {
            subscription: DEFAULT_SUBSCRIPTION.to_owned(),
            resource_group: DEFAULT_RESOURCE_GROUP.to_owned(),
            name: DEFAULT_WORKSPACE.to_owned(),
            location: DEFAULT_LOCATION.to_owned(),
            kind: "Default".to_owned(),
            system_identity: true,
            principal_id: None,
            user_assigned: Vec::new(),
            primary_user_assigned_identity: None,
            cmk: None,
            online_endpoints: Vec::new(),
            batch_endpoints: Vec::new(),
            public_network_access: "Enabled".to_owned(),
            tags: Map::new(),
        }
    }
}

impl WorkspaceSpec {
    /// A workspace with a system identity and no CMK.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            ..Self::default()
        }
    }
    /// Uses key `key` in vault `vault` (a vault name, or an ARM id for a vault the tenant lacks)
    /// as CMK, pinned to the latest version, with the access granted automatically.
    pub fn cmk(mut self, vault: &str, key: &str) -> Self {
        self.cmk = Some(CmkSpec {
            vault: vault.to_owned(),
            key: key.to_owned(),
            ..CmkSpec::default()
        });
        self
    }
    /// Changes the CMK settings (no-op without [`WorkspaceSpec::cmk`]).
    pub fn with_cmk(mut self, f: impl FnOnce(&mut CmkSpec)) -> Self {
        if let Some(cmk) = self.cmk.as_mut() {
            f(cmk);
        }
        self
    }
    /// Adds a user-assigned identity and makes it the CMK encryption identity.
    pub fn user_assigned_encryption_identity(mut self, uai: UserAssignedSpec) -> Self {
        let id = uai.resource_id.clone();
        self.user_assigned.push(uai);
        if let Some(cmk) = self.cmk.as_mut() {
            cmk.encryption_identity = Some(id);
        }
        self
    }
    /// Adds a v2 online endpoint.
    pub fn online_endpoint(mut self, name: &str) -> Self {
        self.online_endpoints.push(name.to_owned());
        self
    }
    /// Adds a batch endpoint.
    pub fn batch_endpoint(mut self, name: &str) -> Self {
        self.batch_endpoints.push(name.to_owned());
        self
    }
    /// The system identity's principal id this workspace will have.
    pub fn system_principal_id(&self) -> String {
        self.principal_id.clone().unwrap_or_else(|| {
            stable_uuid(&format!(
                "principal:{}",
                ids::workspace_id(&self.subscription, &self.resource_group, &self.name)
                    .to_ascii_lowercase()
            ))
        })
    }
    /// The workspace's ARM id.
    pub fn id(&self) -> String {
        ids::workspace_id(&self.subscription, &self.resource_group, &self.name)
    }
}

/// Which key version the workspace's `keyIdentifier` names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum VersionPin {
    /// Index into the key's versions, 0 = oldest.
    Index(usize),
    /// `latest`, `versionless`, `oldest`, or an explicit 32-hex version id.
    Named(String),
}

impl Default for VersionPin {
    fn default() -> Self {
        VersionPin::Named("latest".to_owned())
    }
}

/// How the CMK identity gets access to the key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Grant {
    /// Role assignment at vault scope (RBAC vault) or an access policy (access-policy vault).
    #[default]
    Auto,
    /// No access at all.
    None,
    /// Through a group the identity belongs to.
    ViaGroup,
    /// Role assignment at the key's scope.
    KeyScope,
    /// Role assignment at the vault's resource group.
    ResourceGroupScope,
    /// Role assignment at the vault's subscription.
    SubscriptionScope,
}

/// Workspace CMK settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CmkSpec {
    /// Vault name, or ARM id of a vault (which may not exist).
    pub vault: String,
    /// Key name (which may not exist).
    pub key: String,
    /// Version pin.
    pub version: VersionPin,
    /// UAI resource id used for CMK (`encryption.identity.userAssignedIdentity`).
    pub encryption_identity: Option<String>,
    /// `encryption.status`.
    pub status: String,
    /// How the identity gets access.
    pub grant: Grant,
    /// Role granted on RBAC vaults (default Key Vault Crypto Service Encryption User).
    pub grant_role: Option<String>,
    /// Key permissions granted on access-policy vaults (default get, wrapKey, unwrapKey).
    pub grant_key_permissions: Option<Vec<String>>,
}

impl Default for CmkSpec {
    fn default() -> Self {
        Self {
            vault: DEFAULT_VAULT.to_owned(),
            key: DEFAULT_KEY.to_owned(),
            version: VersionPin::default(),
            encryption_identity: None,
            status: "Enabled".to_owned(),
            grant: Grant::Auto,
            grant_role: None,
            grant_key_permissions: None,
        }
    }
}

/// A role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RoleAssignmentSpec {
    /// Assignment name (GUID; derived when omitted).
    pub name: Option<String>,
    /// Scope (ARM id, `/` for root).
    pub scope: String,
    /// Role GUID, role definition id, or role name.
    pub role: String,
    /// Principal object id.
    pub principal_id: String,
    /// `ServicePrincipal` (default), `User`, `Group`.
    pub principal_type: Option<String>,
    /// ABAC condition.
    pub condition: Option<String>,
}

impl RoleAssignmentSpec {
    /// `role` (GUID or name) for `principal_id` at `scope`.
    pub fn new(scope: &str, role: &str, principal_id: &str) -> Self {
        Self {
            scope: scope.to_owned(),
            role: role.to_owned(),
            principal_id: principal_id.to_owned(),
            ..Self::default()
        }
    }
}

/// A resource served verbatim.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ResourceSpec {
    /// ARM id.
    pub id: String,
    /// GET body (`id`, `name`, `type` are filled in when missing).
    pub body: Value,
}

impl Scenario {
    /// Parses a scenario file.
    pub fn from_json(text: &str) -> Result<Self, ScenarioError> {
        Ok(serde_json::from_str(text)?)
    }

    /// A realistic compliant tenant: one subscription, an RBAC vault with soft delete and purge
    /// protection, an RSA-3072 key with expiry and rotation policy, and a CMK workspace whose
    /// system identity holds Key Vault Crypto Service Encryption User on the vault.
    pub fn compliant() -> Self {
        let mut scenario = Self::default();
        scenario.subscriptions.push(SubscriptionSpec {
            id: DEFAULT_SUBSCRIPTION.to_owned(),
            display_name: Some("ml-production".to_owned()),
            unregistered_providers: Vec::new(),
        });
        scenario
            .vaults
            .push(VaultSpec::default().key(KeySpec::default()));
        scenario
            .workspaces
            .push(WorkspaceSpec::default().cmk(DEFAULT_VAULT, DEFAULT_KEY));
        scenario
    }

    /// Builds the tenant state.
    pub fn build(&self) -> Result<Tenant, ScenarioError> {
        Builder::new(self).run()
    }
}

/// Fluent construction of a [`Tenant`]; a thin layer over [`Scenario`].
#[derive(Debug, Clone, Default)]
pub struct TenantBuilder {
    scenario: Scenario,
}

impl Tenant {
    /// An empty tenant (no subscriptions or resources) to build on.
    pub fn builder() -> TenantBuilder {
        TenantBuilder::default()
    }

    /// Starts from the compliant default scenario ([`Scenario::compliant`]).
    pub fn compliant_builder() -> TenantBuilder {
        TenantBuilder {
            scenario: Scenario::compliant(),
        }
    }

    /// The compliant default tenant.
    pub fn compliant() -> Result<Tenant, ScenarioError> {
        Scenario::compliant().build()
    }
}

impl TenantBuilder {
    /// Sets the tenant id.
    pub fn tenant_id(mut self, id: &str) -> Self {
        self.scenario.tenant_id = id.to_owned();
        self
    }
    /// Sets the app's system identity (`None` principal = no system identity).
    pub fn app_identity(mut self, principal_id: Option<&str>, client_id: &str) -> Self {
        self.scenario.app.principal_id = principal_id.map(str::to_owned);
        self.scenario.app.client_id = client_id.to_owned();
        self
    }
    /// Attaches a user-assigned identity to the app.
    pub fn app_user_assigned(mut self, uai: UserAssignedSpec) -> Self {
        self.scenario.app.user_assigned.push(uai);
        self
    }
    /// Turns ARM authorisation off: any valid token may read and write anything.
    pub fn without_management_rbac(mut self) -> Self {
        self.scenario.enforce_management_rbac = false;
        self
    }
    /// Do not give the app any roles or access policies.
    pub fn no_app_roles(mut self) -> Self {
        self.scenario.app.roles = false;
        self
    }
    /// Adds a subscription with every provider registered.
    pub fn subscription(mut self, id: &str) -> Self {
        self.scenario.subscriptions.push(SubscriptionSpec {
            id: id.to_owned(),
            ..SubscriptionSpec::default()
        });
        self
    }
    /// Marks a provider namespace `NotRegistered` in a subscription (added if needed).
    pub fn unregistered_provider(mut self, subscription: &str, namespace: &str) -> Self {
        match self
            .scenario
            .subscriptions
            .iter_mut()
            .find(|s| eq_ci(&s.id, subscription))
        {
            Some(s) => s.unregistered_providers.push(namespace.to_owned()),
            None => self.scenario.subscriptions.push(SubscriptionSpec {
                id: subscription.to_owned(),
                display_name: None,
                unregistered_providers: vec![namespace.to_owned()],
            }),
        }
        self
    }
    /// Adds a group.
    pub fn group(mut self, object_id: &str, members: &[&str]) -> Self {
        self.scenario.groups.push(GroupSpec {
            object_id: object_id.to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        });
        self
    }
    /// Adds a management group under `parent` (`None`: the tenant root) holding
    /// `subscriptions` (added to the tenant).
    pub fn management_group(
        mut self,
        name: &str,
        parent: Option<&str>,
        subscriptions: &[&str],
    ) -> Self {
        self.scenario
            .management_groups
            .push(ManagementGroup::new(name, parent, subscriptions));
        self
    }
    /// Adds a vault.
    pub fn vault(mut self, vault: VaultSpec) -> Self {
        self.scenario.vaults.push(vault);
        self
    }
    /// Changes a vault already in the builder (no-op if absent).
    pub fn with_vault(mut self, name: &str, f: impl FnOnce(&mut VaultSpec)) -> Self {
        if let Some(v) = self
            .scenario
            .vaults
            .iter_mut()
            .find(|v| eq_ci(&v.name, name))
        {
            f(v);
        }
        self
    }
    /// Changes a key already in the builder (no-op if absent).
    pub fn with_key(mut self, vault: &str, key: &str, f: impl FnOnce(&mut KeySpec)) -> Self {
        if let Some(k) = self
            .scenario
            .vaults
            .iter_mut()
            .find(|v| eq_ci(&v.name, vault))
            .and_then(|v| v.keys.iter_mut().find(|k| eq_ci(&k.name, key)))
        {
            f(k);
        }
        self
    }
    /// Adds a workspace.
    pub fn workspace(mut self, workspace: WorkspaceSpec) -> Self {
        self.scenario.workspaces.push(workspace);
        self
    }
    /// Changes a workspace already in the builder (no-op if absent).
    pub fn with_workspace(mut self, name: &str, f: impl FnOnce(&mut WorkspaceSpec)) -> Self {
        if let Some(w) = self
            .scenario
            .workspaces
            .iter_mut()
            .find(|w| eq_ci(&w.name, name))
        {
            f(w);
        }
        self
    }
    /// Adds a role assignment.
    pub fn role_assignment(mut self, assignment: RoleAssignmentSpec) -> Self {
        self.scenario.role_assignments.push(assignment);
        self
    }
    /// Adds a resource served verbatim.
    pub fn resource(mut self, id: &str, body: Value) -> Self {
        self.scenario.resources.push(ResourceSpec {
            id: id.to_owned(),
            body,
        });
        self
    }
    /// The scenario so far (e.g. to write it as a file).
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }
    /// Builds the tenant.
    pub fn build(self) -> Result<Tenant, ScenarioError> {
        self.scenario.build()
    }
}

struct Builder<'a> {
    scenario: &'a Scenario,
    now: i64,
    tenant: Tenant,
}

impl<'a> Builder<'a> {
    fn new(scenario: &'a Scenario) -> Self {
        let app = &scenario.app;
        Self {
            scenario,
            now: now_unix(),
            tenant: Tenant {
                tenant_id: scenario.tenant_id.clone(),
                app: AppIdentity {
                    principal_id: app.principal_id.clone(),
                    client_id: app.client_id.clone(),
                    resource_id: app.resource_id.clone(),
                    user_assigned: app
                        .user_assigned
                        .iter()
                        .map(UserAssignedSpec::resolve)
                        .collect(),
                },
                operator_principal_id: scenario.operator_principal_id.clone(),
                subscriptions: Vec::new(),
                groups: scenario
                    .groups
                    .iter()
                    .map(|g| Group {
                        object_id: g.object_id.clone(),
                        members: g.members.clone(),
                    })
                    .collect(),
                management_groups: scenario.management_groups.clone(),
                vaults: Vec::new(),
                deleted_vaults: Vec::new(),
                workspaces: Vec::new(),
                role_assignments: Vec::new(),
                custom_roles: Vec::new(),
                resources: Vec::new(),
                system_topics: Vec::new(),
                event_subscriptions: Vec::new(),
                diagnostic_settings: Vec::new(),
                enforce_management_rbac: scenario.enforce_management_rbac,
                async_workspace_updates: scenario.async_workspace_updates,
                next_serial: 0,
                federated_apps: Vec::new(),
            },
        }
    }

    fn run(mut self) -> Result<Tenant, ScenarioError> {
        self.management_groups()?;
        self.subscriptions();
        for spec in &self.scenario.vaults {
            self.vault(spec)?;
        }
        for spec in &self.scenario.vaults {
            if let (Some(wiring), false) = (&spec.wiring, spec.deleted) {
                let vault_id = ids::vault_id(&spec.subscription, &spec.resource_group, &spec.name);
                let audit = wiring
                    .audit_rule_id
                    .as_deref()
                    .zip(wiring.audit_hub.as_deref());
                crate::arm::wire(
                    &mut self.tenant,
                    &vault_id,
                    &spec.location,
                    wiring.events_target.as_deref(),
                    audit,
                );
            }
        }
        self.app_access();
        for spec in &self.scenario.workspaces {
            self.workspace(spec)?;
        }
        for spec in &self.scenario.role_assignments {
            let principal_type = spec
                .principal_type
                .clone()
                .unwrap_or_else(|| "ServicePrincipal".to_owned());
            self.assign(
                spec.name.clone(),
                &spec.scope,
                &spec.role,
                &spec.principal_id,
                &principal_type,
                spec.condition.clone(),
            )?;
        }
        for spec in &self.scenario.resources {
            let mut body = spec.body.clone();
            if let (Some(obj), Some(parts)) =
                (body.as_object_mut(), ids::ArmIdParts::parse(&spec.id))
            {
                obj.entry("id").or_insert_with(|| json!(spec.id));
                obj.entry("name").or_insert_with(|| json!(parts.name()));
                let type_path: Vec<&str> = parts.segments.iter().map(|(t, _)| t.as_str()).collect();
                obj.entry("type").or_insert_with(|| {
                    json!(format!("{}/{}", parts.namespace, type_path.join("/")))
                });
            }
            self.tenant.resources.push(GenericResource {
                id: spec.id.clone(),
                body,
            });
        }
        Ok(self.tenant)
    }

    fn subscriptions(&mut self) {
        let mut wanted: Vec<SubscriptionSpec> = self.scenario.subscriptions.clone();
        let referenced = self
            .scenario
            .vaults
            .iter()
            .map(|v| v.subscription.clone())
            .chain(
                self.scenario
                    .workspaces
                    .iter()
                    .map(|w| w.subscription.clone()),
            )
            .chain(
                self.scenario
                    .resources
                    .iter()
                    .filter_map(|r| ids::ArmIdParts::parse(&r.id).map(|p| p.subscription)),
            )
            .chain(
                self.scenario
                    .management_groups
                    .iter()
                    .flat_map(|g| g.subscriptions.iter().cloned()),
            );
        for id in referenced {
            if !wanted.iter().any(|s| eq_ci(&s.id, &id)) {
                wanted.push(SubscriptionSpec {
                    id,
                    ..SubscriptionSpec::default()
                });
            }
        }
        for spec in wanted {
            if self.tenant.subscription(&spec.id).is_some() {
                continue;
            }
            let providers = PROVIDER_NAMESPACES
                .iter()
                .map(|ns| ProviderRegistration {
                    namespace: (*ns).to_owned(),
                    registration_state: if spec.unregistered_providers.iter().any(|u| eq_ci(u, ns))
                    {
                        "NotRegistered".to_owned()
                    } else {
                        "Registered".to_owned()
                    },
                })
                .collect();
            self.tenant.subscriptions.push(Subscription {
                display_name: spec.display_name.clone().unwrap_or_else(|| {
                    format!("subscription-{}", &spec.id[..spec.id.len().min(8)])
                }),
                id: spec.id,
                providers,
            });
        }
        if self.scenario.app.roles {
            let Some(app) = self.tenant.app.principal_id.clone() else {
                return;
            };
            let subscriptions: Vec<String> = self
                .tenant
                .subscriptions
                .iter()
                .map(|s| s.id.clone())
                .collect();
            for sub in subscriptions {
                let scope = format!("/subscriptions/{sub}");
                for role in [
                    roles::CONTRIBUTOR,
                    roles::RBAC_ADMINISTRATOR,
                    roles::CRYPTO_OFFICER,
                ] {
                    self.push_assignment(None, &scope, role, &app, "ServicePrincipal", None);
                }
            }
            // Reader at each management group: what listing its descendants needs.
            let groups: Vec<String> = self
                .scenario
                .management_groups
                .iter()
                .map(ManagementGroup::id)
                .collect();
            for scope in groups {
                self.push_assignment(None, &scope, roles::READER, &app, "ServicePrincipal", None);
            }
        }
    }

    /// Management group names are unique and valid, and every parent exists.
    fn management_groups(&self) -> Result<(), ScenarioError> {
        let groups = &self.scenario.management_groups;
        for (i, group) in groups.iter().enumerate() {
            let valid = (1..=90).contains(&group.name.len())
                && group
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_().".contains(&b));
            if !valid {
                return Err(ScenarioError::Invalid(format!(
                    "management group name '{}' is not 1-90 letters, digits, -, _, (, ) or .",
                    group.name
                )));
            }
            if groups[..i].iter().any(|g| eq_ci(&g.name, &group.name)) {
                return Err(ScenarioError::Invalid(format!(
                    "management group '{}' is listed twice",
                    group.name
                )));
            }
            if let Some(parent) = &group.parent
                && !groups.iter().any(|g| eq_ci(&g.name, parent))
            {
                return Err(ScenarioError::Invalid(format!(
                    "management group '{}' names an unknown parent '{parent}'",
                    group.name
                )));
            }
        }
        Ok(())
    }

    fn vault(&mut self, spec: &VaultSpec) -> Result<(), ScenarioError> {
        if spec.name.len() < 3
            || spec.name.len() > 24
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ScenarioError::Invalid(format!(
                "vault name '{}' must match ^[a-zA-Z0-9-]{{3,24}}$",
                spec.name
            )));
        }
        if self.tenant.vault(&spec.name).is_some()
            || self
                .tenant
                .deleted_vaults
                .iter()
                .any(|d| eq_ci(&d.vault.name, &spec.name))
        {
            return Err(ScenarioError::Invalid(format!(
                "vault '{}' is defined twice",
                spec.name
            )));
        }
        let tenant_id = spec
            .tenant_id
            .clone()
            .unwrap_or_else(|| self.tenant.tenant_id.clone());
        let mut keys = Vec::new();
        for key in &spec.keys {
            keys.push(self.key(&spec.name, key)?);
        }
        let vault = Vault {
            subscription: spec.subscription.clone(),
            resource_group: spec.resource_group.clone(),
            name: spec.name.clone(),
            location: spec.location.clone(),
            tenant_id: tenant_id.clone(),
            sku: spec.sku.clone(),
            enable_soft_delete: spec.soft_delete,
            soft_delete_retention_days: spec.soft_delete_retention_in_days,
            enable_purge_protection: spec.purge_protection,
            enable_rbac_authorization: spec.rbac,
            public_network_access: spec.public_network_access.clone(),
            network_acls: spec.network_acls.clone(),
            access_policies: spec
                .access_policies
                .iter()
                .map(|p| AccessPolicy {
                    tenant_id: p.tenant_id.clone().unwrap_or_else(|| tenant_id.clone()),
                    object_id: p.object_id.clone(),
                    application_id: None,
                    keys: p.keys.clone(),
                    secrets: p.secrets.clone(),
                    certificates: p.certificates.clone(),
                })
                .collect(),
            tags: spec.tags.clone(),
            keys,
            created: self.now - 400 * DAY,
            updated: self.now - 30 * DAY,
            last_modified_by: self.tenant.operator_principal_id.clone(),
        };
        if spec.deleted {
            let retention = i64::from(vault.soft_delete_retention_days.unwrap_or(90));
            self.tenant.deleted_vaults.push(DeletedVault {
                vault,
                deletion_date: self.now - DAY,
                scheduled_purge_date: self.now - DAY + retention * DAY,
            });
        } else {
            self.tenant.vaults.push(vault);
        }
        Ok(())
    }

    fn key(&self, vault: &str, spec: &KeySpec) -> Result<Key, ScenarioError> {
        let kty = KeyType::parse(&spec.kty).ok_or_else(|| {
            ScenarioError::Invalid(format!("key '{}': unknown kty '{}'", spec.name, spec.kty))
        })?;
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ScenarioError::Invalid(format!(
                "key name '{}' must match ^[a-zA-Z0-9-]{{1,127}}$",
                spec.name
            )));
        }
        let (key_size, curve) = if kty.is_rsa() {
            let size = spec.size.unwrap_or(2048);
            if !matches!(size, 1024 | 2048 | 3072 | 4096) {
                return Err(ScenarioError::Invalid(format!(
                    "key '{}': RSA size {size} is not one Key Vault offers (2048, 3072, 4096)",
                    spec.name
                )));
            }
            (Some(size), None)
        } else {
            let curve = spec.curve.clone().unwrap_or_else(|| "P-256".to_owned());
            if !["P-256", "P-384", "P-521", "P-256K"]
                .iter()
                .any(|c| eq_ci(c, &curve))
            {
                return Err(ScenarioError::Invalid(format!(
                    "key '{}': unknown curve '{curve}'",
                    spec.name
                )));
            }
            (None, Some(curve))
        };
        let total = spec.older_versions.len();
        let seed = format!(
            "{}/{}",
            vault.to_ascii_lowercase(),
            spec.name.to_ascii_lowercase()
        );
        let mut versions = Vec::new();
        for (i, older) in spec.older_versions.iter().enumerate() {
            let created =
                self.now - older.created_days_ago.unwrap_or(90 * (total - i) as i64) * DAY;
            versions.push(KeyVersion {
                version: older
                    .version
                    .clone()
                    .unwrap_or_else(|| stable_hex32(&format!("{seed}/{i}"))),
                enabled: older.enabled,
                nbf: older.nbf,
                exp: older
                    .exp
                    .or_else(|| older.expires_in_days.map(|d| self.now + d * DAY)),
                created,
                updated: created,
                key_ops: None,
                tags: Map::new(),
            });
        }
        let created = self.now - spec.created_days_ago * DAY - 60;
        versions.push(KeyVersion {
            version: spec
                .version
                .clone()
                .unwrap_or_else(|| stable_hex32(&format!("{seed}/{total}"))),
            enabled: spec.enabled,
            nbf: spec.nbf,
            exp: spec
                .exp
                .or_else(|| spec.expires_in_days.map(|d| self.now + d * DAY)),
            created,
            updated: created,
            key_ops: None,
            tags: Map::new(),
        });
        for v in &versions {
            if v.version.len() != 32 || !v.version.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ScenarioError::Invalid(format!(
                    "key '{}': version '{}' must be 32 hex digits",
                    spec.name, v.version
                )));
            }
        }
        let rotation_policy = spec.rotation_policy.as_ref().map(|p| RotationPolicy {
            lifetime_actions: p
                .lifetime_actions
                .iter()
                .map(|a| LifetimeAction {
                    action: a.action.clone(),
                    time_after_create: a.time_after_create.clone(),
                    time_before_expiry: a.time_before_expiry.clone(),
                })
                .collect(),
            expiry_time: p.expiry_time.clone(),
            created,
            updated: created,
        });
        Ok(Key {
            name: spec.name.clone(),
            kty,
            key_size,
            curve,
            key_ops: spec.key_ops.clone(),
            versions,
            rotation_policy,
            tags: spec.tags.clone(),
        })
    }

    fn app_access(&mut self) {
        if !self.scenario.app.roles {
            return;
        }
        let Some(app) = self.tenant.app.principal_id.clone() else {
            return;
        };
        let wanted: Vec<String> = self
            .scenario
            .vaults
            .iter()
            .filter(|v| v.app_access)
            .map(|v| v.name.clone())
            .collect();
        for vault in self.tenant.vaults.iter_mut() {
            if vault.rbac_effective() || !wanted.iter().any(|w| eq_ci(w, &vault.name)) {
                continue;
            }
            if vault
                .access_policies
                .iter()
                .any(|p| eq_ci(&p.object_id, &app))
            {
                continue;
            }
            vault.access_policies.push(AccessPolicy {
                tenant_id: vault.tenant_id.clone(),
                object_id: app.clone(),
                application_id: None,
                keys: [
                    "get",
                    "list",
                    "update",
                    "create",
                    "rotate",
                    "getrotationpolicy",
                    "setrotationpolicy",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
                secrets: Vec::new(),
                certificates: Vec::new(),
            });
        }
    }

    fn workspace(&mut self, spec: &WorkspaceSpec) -> Result<(), ScenarioError> {
        let user_assigned: Vec<UserAssignedIdentity> = spec
            .user_assigned
            .iter()
            .map(UserAssignedSpec::resolve)
            .collect();
        let system_principal_id = spec.system_identity.then(|| spec.system_principal_id());
        let rg_id = ids::resource_group_id(&spec.subscription, &spec.resource_group);
        let ws_id = spec.id();
        let short = stable_hex32(&ws_id.to_ascii_lowercase());
        let mut encryption = None;
        let mut managed_rg = None;
        if let Some(cmk) = &spec.cmk {
            let (vault_id, vault_name) = self.resolve_vault_ref(&cmk.vault);
            let key_identifier = self.key_identifier(&vault_name, &cmk.key, &cmk.version)?;
            if let Some(uai) = &cmk.encryption_identity
                && !user_assigned.iter().any(|u| eq_ci(&u.resource_id, uai))
            {
                return Err(ScenarioError::Invalid(format!(
                    "workspace '{}': encryption identity '{uai}' is not in userAssigned",
                    spec.name
                )));
            }
            encryption = Some(WorkspaceEncryption {
                status: cmk.status.clone(),
                key_vault_arm_id: vault_id,
                key_identifier,
                user_assigned_identity: cmk.encryption_identity.clone(),
            });
            managed_rg = Some(format!("azureml-rg-{}_{}", spec.name, &short[..8]));
        }
        let endpoint = |name: &String, kind: &str| Endpoint {
            name: name.clone(),
            auth_mode: "Key".to_owned(),
            principal_id: stable_uuid(&format!(
                "principal:{}/{kind}/{}",
                ws_id.to_ascii_lowercase(),
                name.to_ascii_lowercase()
            )),
        };
        let workspace = Workspace {
            subscription: spec.subscription.clone(),
            resource_group: spec.resource_group.clone(),
            name: spec.name.clone(),
            location: spec.location.clone(),
            kind: spec.kind.clone(),
            system_principal_id,
            user_assigned,
            primary_user_assigned_identity: spec.primary_user_assigned_identity.clone(),
            encryption,
            service_provisioned_resource_group: managed_rg,
            storage_account: format!(
                "{rg_id}/providers/Microsoft.Storage/storageAccounts/st{}",
                &short[..12]
            ),
            key_vault: format!(
                "{rg_id}/providers/Microsoft.KeyVault/vaults/kv-ws-{}",
                &short[..8]
            ),
            application_insights: format!(
                "{rg_id}/providers/microsoft.insights/components/appi-{}",
                spec.name
            ),
            container_registry: Some(format!(
                "{rg_id}/providers/Microsoft.ContainerRegistry/registries/cr{}",
                &short[..12]
            )),
            description: format!("{} workspace", spec.name),
            friendly_name: spec.name.clone(),
            public_network_access: spec.public_network_access.clone(),
            online_endpoints: spec
                .online_endpoints
                .iter()
                .map(|n| endpoint(n, "onlineEndpoints"))
                .collect(),
            batch_endpoints: spec
                .batch_endpoints
                .iter()
                .map(|n| endpoint(n, "batchEndpoints"))
                .collect(),
            tags: spec.tags.clone(),
            workspace_guid: stable_uuid(&format!("workspace:{}", ws_id.to_ascii_lowercase())),
            updated: self.now - 10 * DAY,
            last_modified_by: self.tenant.operator_principal_id.clone(),
        };
        if let Some(cmk) = &spec.cmk
            && let Some(principal) = workspace.cmk_principal_id()
        {
            self.grant(&workspace, cmk, &principal)?;
        }
        self.tenant.workspaces.push(workspace);
        Ok(())
    }

    /// A vault reference is a vault name, or the ARM id of a vault that may not exist.
    fn resolve_vault_ref(&self, reference: &str) -> (String, String) {
        if reference.starts_with('/') {
            let name = ids::ArmIdParts::parse(reference)
                .map(|p| p.name().to_owned())
                .unwrap_or_default();
            return (reference.to_owned(), name);
        }
        let live = self.tenant.vault(reference).map(Vault::id);
        let deleted = self
            .tenant
            .deleted_vaults
            .iter()
            .find(|d| eq_ci(&d.vault.name, reference))
            .map(|d| d.vault.id());
        let id = live.or(deleted).unwrap_or_else(|| {
            ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, reference)
        });
        (id, reference.to_owned())
    }

    fn key_identifier(
        &self,
        vault: &str,
        key: &str,
        pin: &VersionPin,
    ) -> Result<String, ScenarioError> {
        let base = format!("{}/keys/{key}", ids::vault_uri(vault));
        let versions: Vec<String> = self
            .tenant
            .vault(vault)
            .or_else(|| {
                self.tenant
                    .deleted_vaults
                    .iter()
                    .find(|d| eq_ci(&d.vault.name, vault))
                    .map(|d| &d.vault)
            })
            .and_then(|v| v.key(key))
            .map(|k| k.versions.iter().map(|v| v.version.clone()).collect())
            .unwrap_or_default();
        let version = match pin {
            VersionPin::Index(i) => Some(versions.get(*i).cloned().ok_or_else(|| {
                ScenarioError::Invalid(format!("key '{key}' has no version index {i}"))
            })?),
            VersionPin::Named(n) if eq_ci(n, "versionless") => None,
            VersionPin::Named(n) if eq_ci(n, "latest") => versions
                .last()
                .cloned()
                .or_else(|| Some(stable_hex32(&format!("missing/{vault}/{key}")))),
            VersionPin::Named(n) if eq_ci(n, "oldest") => versions.first().cloned(),
            VersionPin::Named(n) => Some(n.clone()),
        };
        Ok(match version {
            Some(v) => format!("{base}/{v}"),
            None => base,
        })
    }

    fn grant(
        &mut self,
        workspace: &Workspace,
        cmk: &CmkSpec,
        principal: &str,
    ) -> Result<(), ScenarioError> {
        if cmk.grant == Grant::None {
            return Ok(());
        }
        let Some(vault) = self
            .tenant
            .vault(&self.resolve_vault_ref(&cmk.vault).1)
            .cloned()
        else {
            return Ok(());
        };
        let grantee = if cmk.grant == Grant::ViaGroup {
            let group = stable_uuid(&format!("group:{}", workspace.id().to_ascii_lowercase()));
            self.tenant.groups.push(Group {
                object_id: group.clone(),
                members: vec![principal.to_owned()],
            });
            group
        } else {
            principal.to_owned()
        };
        let principal_type = if cmk.grant == Grant::ViaGroup {
            "Group"
        } else {
            "ServicePrincipal"
        };
        if vault.rbac_effective() {
            let scope = match cmk.grant {
                Grant::KeyScope => format!("{}/keys/{}", vault.id(), cmk.key),
                Grant::ResourceGroupScope => {
                    ids::resource_group_id(&vault.subscription, &vault.resource_group)
                }
                Grant::SubscriptionScope => format!("/subscriptions/{}", vault.subscription),
                _ => vault.id(),
            };
            let role = cmk
                .grant_role
                .clone()
                .unwrap_or_else(|| roles::CRYPTO_SERVICE_ENCRYPTION_USER.to_owned());
            self.assign(None, &scope, &role, &grantee, principal_type, None)?;
        } else {
            let permissions = cmk.grant_key_permissions.clone().unwrap_or_else(|| {
                vec![
                    "get".to_owned(),
                    "wrapKey".to_owned(),
                    "unwrapKey".to_owned(),
                ]
            });
            if let Some(v) = self.tenant.vault_mut(&vault.name) {
                v.access_policies.push(AccessPolicy {
                    tenant_id: v.tenant_id.clone(),
                    object_id: grantee,
                    application_id: None,
                    keys: permissions,
                    secrets: Vec::new(),
                    certificates: Vec::new(),
                });
            }
        }
        Ok(())
    }

    fn assign(
        &mut self,
        name: Option<String>,
        scope: &str,
        role: &str,
        principal: &str,
        principal_type: &str,
        condition: Option<String>,
    ) -> Result<(), ScenarioError> {
        let def = roles::find(role)
            .ok_or_else(|| ScenarioError::Invalid(format!("unknown role '{role}'")))?;
        self.push_assignment(name, scope, def.guid, principal, principal_type, condition);
        Ok(())
    }

    fn push_assignment(
        &mut self,
        name: Option<String>,
        scope: &str,
        guid: &str,
        principal: &str,
        principal_type: &str,
        condition: Option<String>,
    ) {
        let name = name.unwrap_or_else(|| {
            stable_uuid(&format!(
                "assignment:{}:{}:{}",
                ids::norm(scope),
                guid,
                principal.to_ascii_lowercase()
            ))
        });
        self.tenant.role_assignments.push(RoleAssignment {
            name,
            scope: if scope.is_empty() {
                "/".to_owned()
            } else {
                scope.to_owned()
            },
            role_definition_guid: guid.to_owned(),
            principal_id: principal.to_owned(),
            principal_type: principal_type.to_owned(),
            condition,
            created: self.now - 20 * DAY,
            created_by: self.tenant.operator_principal_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliant_default_is_consistent() {
        let tenant = Tenant::compliant().unwrap();
        let ws = tenant.workspace(DEFAULT_WORKSPACE).unwrap();
        let enc = ws.encryption.as_ref().unwrap();
        let vault = tenant.vault_by_id(&enc.key_vault_arm_id).unwrap();
        let key = vault.key(DEFAULT_KEY).unwrap();
        assert!(enc.key_identifier.ends_with(&key.latest().unwrap().version));
        let principal = ws.cmk_principal_id().unwrap();
        let grants =
            tenant.assignments_applying(&principal, &format!("{}/keys/{}", vault.id(), key.name));
        assert!(
            grants
                .iter()
                .any(|a| a.role_definition_guid == roles::CRYPTO_SERVICE_ENCRYPTION_USER)
        );
        assert!(ws.service_provisioned_resource_group.is_some());
    }

    #[test]
    fn management_groups_come_from_json_with_their_subscriptions_and_reader_for_the_app() {
        let scenario = Scenario::from_json(
            r#"{"managementGroups": [
                {"name": "mg-ml", "subscriptions": ["00000000-0000-0000-0000-0000000000a1"]},
                {"name": "mg-ml-teams", "parent": "MG-ML", "subscriptions": ["00000000-0000-0000-0000-0000000000a2"]}
            ]}"#,
        )
        .unwrap();
        let tenant = scenario.build().unwrap();
        assert_eq!(tenant.management_groups.len(), 2);
        assert!(
            tenant
                .subscription("00000000-0000-0000-0000-0000000000a2")
                .is_some()
        );
        let app = tenant.app.principal_id.clone().unwrap();
        assert!(tenant.can(
            &app,
            "Microsoft.Management/managementGroups/descendants/read",
            "/providers/Microsoft.Management/managementGroups/mg-ml-teams"
        ));
        for bad in [
            r#"{"managementGroups": [{"name": "mg", "parent": "nowhere"}]}"#,
            r#"{"managementGroups": [{"name": "mg"}, {"name": "MG"}]}"#,
            r#"{"managementGroups": [{"name": "mg/x"}]}"#,
        ] {
            let error = Scenario::from_json(bad).unwrap().build().unwrap_err();
            assert!(
                error.to_string().contains("management group"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn json_null_makes_flags_absent_and_missing_keeps_defaults() {
        let s = Scenario::from_json(
            r#"{"vaults":[{"name":"kv-a","purgeProtection":null,"softDelete":false,"keys":[{"name":"k","expiresInDays":null}]}]}"#,
        )
        .unwrap();
        let t = s.build().unwrap();
        let v = t.vault("kv-a").unwrap();
        assert_eq!(v.enable_purge_protection, None);
        assert_eq!(v.enable_soft_delete, Some(false));
        assert_eq!(v.enable_rbac_authorization, Some(true));
        assert_eq!(v.key("k").unwrap().latest().unwrap().exp, None);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Scenario::from_json(r#"{"vaults":[{"name":"kv-a","purgeProtecton":false}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("purgeProtecton"), "{err}");
    }

    #[test]
    fn pins_group_grants_and_access_policies() {
        let t = Tenant::compliant_builder()
            .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| {
                k.older_versions.push(KeyVersionSpec::expiring_in_days(3));
            })
            .with_workspace(DEFAULT_WORKSPACE, |w| {
                if let Some(c) = w.cmk.as_mut() {
                    c.version = VersionPin::Named("oldest".into());
                    c.grant = Grant::ViaGroup;
                }
            })
            .vault(
                VaultSpec::new(OTHER_SUBSCRIPTION, "rg-ap", "kv-ap")
                    .access_policy_model()
                    .key(KeySpec::rsa("k2", 2048)),
            )
            .workspace(
                WorkspaceSpec::new(DEFAULT_SUBSCRIPTION, "rg-2", "ws-ap")
                    .cmk("kv-ap", "k2")
                    .with_cmk(|c| {
                        c.grant_key_permissions = Some(vec!["get".into(), "wrapKey".into()]);
                    }),
            )
            .build()
            .unwrap();
        let ws = t.workspace(DEFAULT_WORKSPACE).unwrap();
        let key = t.vault(DEFAULT_VAULT).unwrap().key(DEFAULT_KEY).unwrap();
        assert!(
            ws.encryption
                .as_ref()
                .unwrap()
                .key_identifier
                .ends_with(&key.versions[0].version)
        );
        let principal = ws.cmk_principal_id().unwrap();
        assert_eq!(t.groups_of(&principal).len(), 1);
        let ap_vault = t.vault("kv-ap").unwrap();
        let ws_ap = t.workspace("ws-ap").unwrap();
        let policy = ap_vault
            .access_policies
            .iter()
            .find(|p| p.object_id == ws_ap.cmk_principal_id().unwrap())
            .unwrap();
        assert!(policy.grants_key("wrapKey") && !policy.grants_key("unwrapKey"));
    }
}
