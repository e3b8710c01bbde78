//! The simulated tenant: the state every surface (ARM, Key Vault, Resource Graph, admin) reads
//! and writes. Fields are public so tests can inspect and adjust state directly through
//! [`crate::Sim::tenant`] / [`crate::Sim::tenant_mut`]; lookups compare ids case-insensitively.

use crate::ids::{self, eq_ci, scope_covers};
use serde::Serialize;
use serde_json::Value;

/// The whole simulated directory and its subscriptions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// Entra tenant id, used in tokens, vault `tenantId` and events.
    pub tenant_id: String,
    /// The identity cmk-guard runs as (what the managed-identity endpoint issues tokens for).
    pub app: AppIdentity,
    /// Object id that admin-API changes are attributed to in events (a human operator).
    pub operator_principal_id: String,
    /// Subscriptions and their resource provider registrations.
    pub subscriptions: Vec<Subscription>,
    /// Entra groups, for `assignedTo()` and RBAC checks through group membership.
    pub groups: Vec<Group>,
    /// Management groups, each naming its parent and the subscriptions directly in it.
    pub management_groups: Vec<ManagementGroup>,
    /// Live key vaults.
    pub vaults: Vec<Vault>,
    /// Soft-deleted vaults (`deletedVaults` proxy resources).
    pub deleted_vaults: Vec<DeletedVault>,
    /// Azure ML workspaces.
    pub workspaces: Vec<Workspace>,
    /// Azure RBAC role assignments at any scope.
    pub role_assignments: Vec<RoleAssignment>,
    /// Custom role definitions, which assignments name by GUID like built-in ones.
    pub custom_roles: Vec<crate::roles::CustomRole>,
    /// Other resources served verbatim (storage accounts, Cosmos DB accounts, Search services…).
    pub resources: Vec<GenericResource>,
    /// Event Grid system topics (`Microsoft.EventGrid/systemTopics`), as served.
    pub system_topics: Vec<GenericResource>,
    /// Event subscriptions of system topics, as served.
    pub event_subscriptions: Vec<GenericResource>,
    /// Diagnostic settings of any resource (`…/providers/Microsoft.Insights/diagnosticSettings`).
    pub diagnostic_settings: Vec<GenericResource>,
    /// Authorise ARM requests with Azure RBAC (actions/notActions at or above the scope), and
    /// show Resource Graph only what the caller can read.
    pub enforce_management_rbac: bool,
    /// Answer workspace PATCH with 202 and a `Location` to poll, like the ML resource provider
    /// may, instead of 200 with the body.
    pub async_workspace_updates: bool,
    /// Counter for deterministic new key versions and assignment names.
    pub next_serial: u64,
    /// App registrations that sign in with workload identity federation (a CI pipeline).
    pub federated_apps: Vec<FederatedApp>,
}

/// An app registration whose service principal signs in with workload identity federation:
/// Entra exchanges an external token (GitHub's, a Kubernetes service account's) that matches
/// one of its federated identity credentials for an access token of the service principal.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedApp {
    /// Application (client) id, the `client_id` of the token request.
    pub client_id: String,
    /// Object id of its service principal: what role assignments name and tokens carry (`oid`).
    pub principal_id: String,
    /// Its federated identity credentials.
    pub credentials: Vec<FederatedCredential>,
}

/// A federated identity credential: the exact issuer, subject and audience an external token
/// must carry (Entra compares them case-sensitively).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    /// The external token's `iss`, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// Its `sub`, e.g. `repo:contoso/ml:ref:refs/heads/main`.
    pub subject: String,
    /// [`TOKEN_EXCHANGE_AUDIENCE`] unless configured otherwise.
    pub audiences: Vec<String>,
}

/// The audience federated identity credentials expect by default.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

impl FederatedCredential {
    /// Trusts tokens of `issuer` about `subject` for the default audience.
    pub fn new(issuer: &str, subject: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        }
    }
}

/// The managed identity of the Function app.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppIdentity {
    /// Object (principal) id of the system-assigned identity; `None` when it is disabled.
    pub principal_id: Option<String>,
    /// Client (application) id of the system-assigned identity.
    pub client_id: String,
    /// ARM id of the Function app, the `xms_mirid` claim.
    pub resource_id: String,
    /// User-assigned identities attached to the app.
    pub user_assigned: Vec<UserAssignedIdentity>,
}

/// A user-assigned managed identity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentity {
    /// ARM id of the `Microsoft.ManagedIdentity/userAssignedIdentities` resource.
    pub resource_id: String,
    /// Client id.
    pub client_id: String,
    /// Object id.
    pub principal_id: String,
}

/// A subscription.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Subscription id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Resource provider namespaces and their registration state.
    pub providers: Vec<ProviderRegistration>,
}

/// Registration state of one resource provider namespace in a subscription.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRegistration {
    /// Namespace, e.g. `Microsoft.KeyVault`.
    pub namespace: String,
    /// `Registered`, `NotRegistered`, `Registering` or `Unregistering`.
    pub registration_state: String,
}

/// A management group: its subscriptions and child groups are its descendants.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ManagementGroup {
    /// The group id (`name`), such as `mg-platform`.
    pub name: String,
    /// Display name (the name when absent).
    pub display_name: Option<String>,
    /// The parent group's name; `None` under the tenant root.
    pub parent: Option<String>,
    /// Subscriptions directly in this group.
    pub subscriptions: Vec<String>,
}

impl ManagementGroup {
    /// A group under `parent` (`None`: the tenant root) holding `subscriptions`.
    pub fn new(name: &str, parent: Option<&str>, subscriptions: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            display_name: None,
            parent: parent.map(str::to_owned),
            subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// `/providers/Microsoft.Management/managementGroups/{name}`.
    pub fn id(&self) -> String {
        format!(
            "/providers/Microsoft.Management/managementGroups/{}",
            self.name
        )
    }
}

/// An Entra group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Object id of the group.
    pub object_id: String,
    /// Object ids of its (transitive) members.
    pub members: Vec<String>,
}

/// A key vault (management-plane properties plus its keys).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Vault name (globally unique, also the data-plane host name).
    pub name: String,
    /// Azure region.
    pub location: String,
    /// Tenant id in `properties.tenantId`.
    pub tenant_id: String,
    /// `standard` or `premium`.
    pub sku: String,
    /// `properties.enableSoftDelete`; `None` = absent from the payload (azure-notes Trap T16).
    pub enable_soft_delete: Option<bool>,
    /// `properties.softDeleteRetentionInDays`.
    pub soft_delete_retention_days: Option<u32>,
    /// `properties.enablePurgeProtection`; `None` = absent (never set).
    pub enable_purge_protection: Option<bool>,
    /// `properties.enableRbacAuthorization`; `None` = absent, which means RBAC on 2026-02-01.
    pub enable_rbac_authorization: Option<bool>,
    /// `properties.publicNetworkAccess`.
    pub public_network_access: String,
    /// `properties.networkAcls`, verbatim.
    pub network_acls: Option<Value>,
    /// Access policies (used when RBAC is off).
    pub access_policies: Vec<AccessPolicy>,
    /// Resource tags.
    pub tags: serde_json::Map<String, Value>,
    /// Keys in the vault.
    pub keys: Vec<Key>,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Last modification time, unix seconds.
    pub updated: i64,
    /// Object id of the last modifier (for `systemData`).
    pub last_modified_by: String,
}

impl Vault {
    /// The vault's ARM id with the scenario's casing.
    pub fn id(&self) -> String {
        ids::vault_id(&self.subscription, &self.resource_group, &self.name)
    }

    /// `https://{name}.vault.azure.net`.
    pub fn uri(&self) -> String {
        ids::vault_uri(&self.name)
    }

    /// Whether data-plane access uses RBAC: absent means true from api-version 2026-02-01
    /// (azure-notes Trap T6).
    pub fn rbac_effective(&self) -> bool {
        self.enable_rbac_authorization.unwrap_or(true)
    }

    /// The `recoveryLevel` Key Vault reports for objects in this vault.
    pub fn recovery_level(&self) -> &'static str {
        match (
            self.enable_soft_delete.unwrap_or(true),
            self.enable_purge_protection.unwrap_or(false),
        ) {
            (false, _) => "Purgeable",
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
        }
    }

    /// Finds a key by name, case-insensitively.
    pub fn key(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| eq_ci(&k.name, name))
    }

    /// Finds a key by name for modification.
    pub fn key_mut(&mut self, name: &str) -> Option<&mut Key> {
        self.keys.iter_mut().find(|k| eq_ci(&k.name, name))
    }
}

/// An access policy entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    /// Tenant of the principal.
    pub tenant_id: String,
    /// Object id of the principal.
    pub object_id: String,
    /// Optional application id (compound identity).
    pub application_id: Option<String>,
    /// Key permissions, e.g. `get`, `wrapKey`, `unwrapKey`.
    pub keys: Vec<String>,
    /// Secret permissions.
    pub secrets: Vec<String>,
    /// Certificate permissions.
    pub certificates: Vec<String>,
}

impl AccessPolicy {
    /// Whether the policy grants a key permission (`all` grants everything).
    pub fn grants_key(&self, permission: &str) -> bool {
        self.keys
            .iter()
            .any(|p| eq_ci(p, permission) || eq_ci(p, "all"))
    }
}

/// The key type as Key Vault names it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum KeyType {
    /// Software RSA key.
    #[serde(rename = "RSA")]
    Rsa,
    /// HSM-protected RSA key.
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    /// Software EC key.
    #[serde(rename = "EC")]
    Ec,
    /// HSM-protected EC key.
    #[serde(rename = "EC-HSM")]
    EcHsm,
}

impl KeyType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::RsaHsm => "RSA-HSM",
            KeyType::Ec => "EC",
            KeyType::EcHsm => "EC-HSM",
        }
    }

    /// Parses a wire name case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        [KeyType::Rsa, KeyType::RsaHsm, KeyType::Ec, KeyType::EcHsm]
            .into_iter()
            .find(|k| eq_ci(k.as_str(), s))
    }

    /// RSA or RSA-HSM.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa | KeyType::RsaHsm)
    }
}

/// A key and all its versions (oldest first; the last one is the current version).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// Key name.
    pub name: String,
    /// Key type.
    pub kty: KeyType,
    /// RSA modulus size in bits (RSA only).
    pub key_size: Option<u32>,
    /// EC curve name (EC only).
    pub curve: Option<String>,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// Versions, oldest first.
    pub versions: Vec<KeyVersion>,
    /// Rotation policy, if one was set.
    pub rotation_policy: Option<RotationPolicy>,
    /// Tags.
    pub tags: serde_json::Map<String, Value>,
}

impl Key {
    /// The current (newest) version.
    pub fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }

    /// Finds a version by id, case-insensitively.
    pub fn version(&self, version: &str) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| eq_ci(&v.version, version))
    }

    /// Finds a version by id for modification.
    pub fn version_mut(&mut self, version: &str) -> Option<&mut KeyVersion> {
        self.versions
            .iter_mut()
            .find(|v| eq_ci(&v.version, version))
    }
}

/// One version of a key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    /// 32 hex digits.
    pub version: String,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`, unix seconds.
    pub nbf: Option<i64>,
    /// `attributes.exp`, unix seconds.
    pub exp: Option<i64>,
    /// `attributes.created`, unix seconds.
    pub created: i64,
    /// `attributes.updated`, unix seconds.
    pub updated: i64,
    /// Per-version key operations (set by a data-plane PATCH); `None` = the key's.
    pub key_ops: Option<Vec<String>>,
    /// Per-version tags.
    pub tags: serde_json::Map<String, Value>,
}

/// A key rotation policy as stored (data-plane casing `Rotate`/`Notify`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// Lifetime actions.
    pub lifetime_actions: Vec<LifetimeAction>,
    /// ISO-8601 duration, e.g. `P2Y`.
    pub expiry_time: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

/// One lifetime action of a rotation policy.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeAction {
    /// `Rotate` or `Notify`.
    pub action: String,
    /// ISO-8601 duration after creation.
    pub time_after_create: Option<String>,
    /// ISO-8601 duration before expiry.
    pub time_before_expiry: Option<String>,
}

/// A soft-deleted vault.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedVault {
    /// The vault as it was when deleted.
    pub vault: Vault,
    /// Deletion time, unix seconds.
    pub deletion_date: i64,
    /// Scheduled purge time, unix seconds.
    pub scheduled_purge_date: i64,
}

/// An Azure ML workspace.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Workspace name.
    pub name: String,
    /// Region.
    pub location: String,
    /// `Default`, `Hub`, `Project` or `FeatureStore`.
    pub kind: String,
    /// System-assigned identity principal id, if enabled.
    pub system_principal_id: Option<String>,
    /// Attached user-assigned identities.
    pub user_assigned: Vec<UserAssignedIdentity>,
    /// `properties.primaryUserAssignedIdentity`.
    pub primary_user_assigned_identity: Option<String>,
    /// CMK settings; `None` = Microsoft-managed keys.
    pub encryption: Option<WorkspaceEncryption>,
    /// `properties.serviceProvisionedResourceGroup` (CMK workspaces).
    pub service_provisioned_resource_group: Option<String>,
    /// Dependent resources (ARM ids).
    pub storage_account: String,
    /// The workspace's own (non-CMK) key vault.
    pub key_vault: String,
    /// Application Insights id.
    pub application_insights: String,
    /// Container registry id.
    pub container_registry: Option<String>,
    /// Description.
    pub description: String,
    /// Friendly name.
    pub friendly_name: String,
    /// `Enabled` / `Disabled`.
    pub public_network_access: String,
    /// Online endpoints (v2).
    pub online_endpoints: Vec<Endpoint>,
    /// Batch endpoints.
    pub batch_endpoints: Vec<Endpoint>,
    /// Tags.
    pub tags: serde_json::Map<String, Value>,
    /// Stable workspace id (GUID).
    pub workspace_guid: String,
    /// Last modification time, unix seconds.
    pub updated: i64,
    /// Object id of the last modifier.
    pub last_modified_by: String,
}

impl Workspace {
    /// ARM id with the scenario's casing.
    pub fn id(&self) -> String {
        ids::workspace_id(&self.subscription, &self.resource_group, &self.name)
    }

    /// `identity.type` as ARM reports it.
    pub fn identity_type(&self) -> &'static str {
        match (
            self.system_principal_id.is_some(),
            !self.user_assigned.is_empty(),
        ) {
            (true, true) => "SystemAssigned,UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => "None",
        }
    }

    /// The principal that uses the CMK: the encryption identity if set, else the system identity
    /// (azure-notes Trap T21).
    pub fn cmk_principal_id(&self) -> Option<String> {
        if let Some(uai) = self
            .encryption
            .as_ref()
            .and_then(|e| e.user_assigned_identity.as_ref())
        {
            return self
                .user_assigned
                .iter()
                .find(|u| eq_ci(&u.resource_id, uai))
                .map(|u| u.principal_id.clone());
        }
        self.system_principal_id.clone()
    }
}

/// Workspace CMK settings (`properties.encryption`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceEncryption {
    /// `Enabled` or `Disabled`.
    pub status: String,
    /// ARM id of the CMK vault.
    pub key_vault_arm_id: String,
    /// Key URL, with or without a version.
    pub key_identifier: String,
    /// `encryption.identity.userAssignedIdentity`.
    pub user_assigned_identity: Option<String>,
}

/// An online or batch endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Endpoint name.
    pub name: String,
    /// Auth mode (`Key`, `AMLToken`, `AADToken`).
    pub auth_mode: String,
    /// Principal of the endpoint's system identity.
    pub principal_id: String,
}

/// An Azure RBAC role assignment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Assignment name (a GUID).
    pub name: String,
    /// Scope it is assigned at.
    pub scope: String,
    /// Role definition GUID.
    pub role_definition_guid: String,
    /// Object id of the principal (user, group or service principal).
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal` or `ForeignGroup`.
    pub principal_type: String,
    /// ABAC condition, if any.
    pub condition: Option<String>,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Who created it.
    pub created_by: String,
}

impl RoleAssignment {
    /// The assignment's ARM id.
    pub fn id(&self) -> String {
        let scope = self.scope.trim_end_matches('/');
        format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            self.name
        )
    }
}

/// A resource served verbatim (GET returns `body`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericResource {
    /// ARM id.
    pub id: String,
    /// Full GET body.
    pub body: Value,
}

impl Tenant {
    /// Finds a live vault by name (vault names are globally unique).
    pub fn vault(&self, name: &str) -> Option<&Vault> {
        self.vaults.iter().find(|v| eq_ci(&v.name, name))
    }

    /// Finds a live vault by name for modification.
    pub fn vault_mut(&mut self, name: &str) -> Option<&mut Vault> {
        self.vaults.iter_mut().find(|v| eq_ci(&v.name, name))
    }

    /// Finds a live vault by ARM id.
    pub fn vault_by_id(&self, id: &str) -> Option<&Vault> {
        self.vaults
            .iter()
            .find(|v| eq_ci(&v.id(), id.trim_end_matches('/')))
    }

    /// Finds a workspace by name (first match across subscriptions).
    pub fn workspace(&self, name: &str) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| eq_ci(&w.name, name))
    }

    /// Finds a workspace by name for modification.
    pub fn workspace_mut(&mut self, name: &str) -> Option<&mut Workspace> {
        self.workspaces.iter_mut().find(|w| eq_ci(&w.name, name))
    }

    /// Finds a subscription.
    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| eq_ci(&s.id, id))
    }

    /// The groups (transitively listed) that a principal belongs to.
    pub fn groups_of(&self, principal_id: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| eq_ci(m, principal_id)))
            .map(|g| g.object_id.clone())
            .collect()
    }

    /// Role assignments that apply to `principal_id` (directly or through a group) at `scope`,
    /// including those inherited from ancestor scopes.
    pub fn assignments_applying(&self, principal_id: &str, scope: &str) -> Vec<&RoleAssignment> {
        let groups = self.groups_of(principal_id);
        self.role_assignments
            .iter()
            .filter(|a| {
                (eq_ci(&a.principal_id, principal_id)
                    || groups.iter().any(|g| eq_ci(g, &a.principal_id)))
                    && scope_covers(&a.scope, scope)
            })
            .collect()
    }

    /// Whether `principal_id` holds a role granting the management `action` at `scope`.
    pub fn can(&self, principal_id: &str, action: &str, scope: &str) -> bool {
        self.assignments_applying(principal_id, scope)
            .iter()
            .any(|a| self.role_grants(&a.role_definition_guid, action, false))
    }

    /// Whether the built-in or custom role `guid` grants `action`: a data action when `data`,
    /// a management action otherwise.
    pub fn role_grants(&self, guid: &str, action: &str, data: bool) -> bool {
        if let Some(role) = crate::roles::find(guid) {
            return if data {
                role.grants_data_action(action)
            } else {
                role.grants_action(action)
            };
        }
        let key = guid.rsplit('/').next().unwrap_or(guid);
        self.custom_roles
            .iter()
            .filter(|r| eq_ci(&r.guid, key))
            .any(|r| {
                if data {
                    r.grants_data_action(action)
                } else {
                    r.grants_action(action)
                }
            })
    }

    /// A fresh deterministic serial, for new key versions and assignment names.
    pub fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}

impl Tenant {
    /// Adds a new version to a key, as Key Vault's rotate does: same type and size, enabled,
    /// expiring per the rotation policy's `expiryTime` (no expiry without one). Returns the
    /// vault id and the new version.
    pub fn rotate_key(&mut self, vault: &str, key: &str, now: i64) -> Option<(String, KeyVersion)> {
        let serial = self.serial();
        let vault = self.vault_mut(vault)?;
        let vault_id = vault.id();
        let seed = format!(
            "{}/{}/rotated/{serial}/{now}",
            vault.name.to_ascii_lowercase(),
            key.to_ascii_lowercase()
        );
        let key = vault.key_mut(key)?;
        let exp = key
            .rotation_policy
            .as_ref()
            .and_then(|p| p.expiry_time.as_deref())
            .and_then(crate::clock::parse_iso_duration)
            .map(|d| now + d);
        let version = KeyVersion {
            version: ids::stable_hex32(&seed),
            enabled: true,
            nbf: None,
            exp,
            created: now,
            updated: now,
            key_ops: None,
            tags: serde_json::Map::new(),
        };
        key.versions.push(version.clone());
        Some((vault_id, version))
    }
}
