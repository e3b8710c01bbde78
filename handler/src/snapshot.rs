//! The Snapshot: everything observe read about one workspace's CMK chain, in plain types.
//! Rules read only this (plus the time and the policy); they never call Azure.
//!
//! Absent fields stay `None` (azure-notes Trap T16: absent is unknown, not false), and every read
//! that can fail is a [`Read`], so a rule can tell "not there" from "could not look".

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::ids::{ArmResourceId, KeyUrl};

/// The GUID of "Key Vault Crypto Service Encryption User", the built-in role that lets a CMK
/// consumer get, wrap and unwrap keys on RBAC vaults (azure-notes §5).
pub const CMK_CONSUMER_ROLE: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";

/// The result of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// The resource was read.
    Found(T),
    /// Azure answered 404: the resource does not exist.
    NotFound,
    /// The read failed (403, throttled past the deadline, 5xx, …): the state is unknown.
    Failed(ReadFailure),
}

impl<T> Read<T> {
    /// The value, when found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Read::Found(value) => Some(value),
            _ => None,
        }
    }

    /// The failure, when the read failed.
    pub fn failure(&self) -> Option<&ReadFailure> {
        match self {
            Read::Failed(failure) => Some(failure),
            _ => None,
        }
    }
}

/// Why a read failed, for `guard.visibility` findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    /// What was being read, e.g. `vault`, `key version`, `role assignments`.
    pub what: String,
    /// The ARM id or URL that was read.
    pub resource: String,
    /// The HTTP status, when Azure answered.
    pub status: Option<u16>,
    /// The ARM error code, when Azure gave one (`AuthorizationFailed`, …).
    pub code: Option<String>,
    /// A short description without secrets.
    pub message: String,
    /// True when a later attempt may succeed (throttling, 5xx, timeouts): an event invocation
    /// then fails so that Event Grid redelivers.
    pub transient: bool,
}

/// One workspace's CMK chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub workspace_id: ArmResourceId,
    pub workspace: Read<Workspace>,
    /// The CMK vault named by the workspace; `None` when the workspace names none or could not
    /// be read.
    pub vault: Option<Read<Vault>>,
    /// Looked up only when the vault is not found: a soft-deleted vault of that name.
    pub deleted_vault: Option<Read<DeletedVault>>,
    /// The key version the workspace uses (the pinned version, else the latest).
    pub key: Option<Read<KeyVersion>>,
    /// The latest version of the key (the version-less GET).
    pub latest_key: Option<Read<KeyVersion>>,
    /// The key's rotation policy; `Found(None)` when the key has none.
    pub rotation_policy: Option<Read<Option<RotationPolicy>>>,
    /// Role assignments of the CMK principal at or above the key (RBAC vaults only).
    pub role_assignments: Option<Read<Vec<RoleAssignment>>>,
    /// Online and batch endpoints of the workspace.
    pub endpoints: Option<Read<Vec<Endpoint>>>,
    /// Registration state of the resource providers CMK needs, in the workspace's subscription.
    pub providers: Option<Read<Vec<ProviderRegistration>>>,
    /// How the CMK vault is wired to cmk-guard (Event Grid, `AuditEvent` logs); read by the
    /// sweep and scan only, when self-wiring is configured; `None` otherwise.
    pub wiring: Option<Read<VaultWiring>>,
}

impl Snapshot {
    /// Every read of the chain that failed, role definitions included: what `guard.visibility`
    /// reports, what makes an event fail for redelivery (the transient ones), and what keeps a
    /// snapshot out of the event path's memo.
    pub fn read_failures(&self) -> impl Iterator<Item = &ReadFailure> {
        let reads = [
            self.workspace.failure(),
            self.vault.as_ref().and_then(Read::failure),
            self.deleted_vault.as_ref().and_then(Read::failure),
            self.key.as_ref().and_then(Read::failure),
            self.latest_key.as_ref().and_then(Read::failure),
            self.rotation_policy.as_ref().and_then(Read::failure),
            self.role_assignments.as_ref().and_then(Read::failure),
            self.endpoints.as_ref().and_then(Read::failure),
            self.providers.as_ref().and_then(Read::failure),
            self.wiring.as_ref().and_then(Read::failure),
        ];
        let assignments = match &self.role_assignments {
            Some(Read::Found(assignments)) => assignments.as_slice(),
            _ => &[],
        };
        let definitions = assignments.iter().filter_map(|a| a.definition.failure());
        reads.into_iter().flatten().chain(definitions)
    }
}

/// The Azure ML workspace, as far as CMK is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub location: Option<String>,
    /// `Default`, `Hub`, `Project`, `FeatureStore`.
    pub kind: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub identity: Option<ManagedIdentity>,
    pub encryption: Option<Encryption>,
    pub primary_user_assigned_identity: Option<String>,
    /// The Microsoft-managed resource group of a CMK workspace (`azureml-rg-…`).
    pub service_provisioned_resource_group: Option<String>,
}

impl Workspace {
    /// The identity that reaches the key: the encryption identity when set, else the system
    /// identity (azure-notes Trap T21). `None` when that identity's principal id is unknown.
    pub fn cmk_principal(&self) -> Option<CmkPrincipal> {
        let identity = self.identity.as_ref()?;
        let encryption_identity = self
            .encryption
            .as_ref()
            .and_then(|e| e.user_assigned_identity.as_deref());
        match encryption_identity {
            Some(uai) => identity
                .user_assigned
                .iter()
                .find(|u| u.resource_id.eq_ignore_ascii_case(uai))
                .and_then(|u| u.principal_id.clone())
                .map(|principal_id| CmkPrincipal {
                    principal_id,
                    tenant_id: identity.tenant_id.clone(),
                    user_assigned_identity: Some(uai.to_owned()),
                }),
            None => identity
                .principal_id
                .clone()
                .map(|principal_id| CmkPrincipal {
                    principal_id,
                    tenant_id: identity.tenant_id.clone(),
                    user_assigned_identity: None,
                }),
        }
    }
}

/// The principal that must be able to get, wrap and unwrap the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmkPrincipal {
    pub principal_id: String,
    pub tenant_id: Option<String>,
    /// The user-assigned identity's ARM id, or `None` for the system identity.
    pub user_assigned_identity: Option<String>,
}

impl CmkPrincipal {
    /// Who this is, for findings, remediation details and their descriptions.
    pub fn describe(&self) -> String {
        let principal = &self.principal_id;
        match &self.user_assigned_identity {
            Some(uai) => [
                "user-assigned identity ",
                uai,
                " (principal ",
                principal,
                ")",
            ]
            .concat(),
            None => ["system identity (principal ", principal, ")"].concat(),
        }
    }
}

/// `identity` of an ARM resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned,UserAssigned` or `None`.
    pub identity_type: Option<String>,
    /// The system identity's principal id.
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub user_assigned: Vec<UserAssignedIdentity>,
}

/// One entry of `identity.userAssignedIdentities`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAssignedIdentity {
    pub resource_id: String,
    pub principal_id: Option<String>,
    pub client_id: Option<String>,
}

/// `properties.encryption` of a workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encryption {
    /// `Enabled` or `Disabled`.
    pub status: Option<String>,
    pub key_vault_arm_id: Option<String>,
    /// The key URL, often with a pinned version.
    pub key_identifier: Option<String>,
    /// `encryption.identity.userAssignedIdentity`.
    pub user_assigned_identity: Option<String>,
}

/// A key vault (ARM `Microsoft.KeyVault/vaults`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vault {
    pub id: String,
    pub name: String,
    pub location: Option<String>,
    pub tenant_id: Option<String>,
    pub vault_uri: Option<String>,
    pub enable_soft_delete: Option<bool>,
    pub soft_delete_retention_days: Option<i64>,
    pub enable_purge_protection: Option<bool>,
    pub enable_rbac_authorization: Option<bool>,
    pub access_policies: Vec<AccessPolicy>,
    pub public_network_access: Option<String>,
}

impl Vault {
    /// True when the vault answers at `key`'s host: its `vaultUri` names that host. A key whose
    /// host is another vault's was not checked by the vault rules, and cmk-guard sends nothing
    /// to it on this vault's account (reads of it would leave the allowlist unchecked).
    pub fn serves(&self, key: &KeyUrl) -> bool {
        self.vault_uri
            .as_deref()
            .and_then(crate::ids::https::host)
            .is_some_and(|host| host == key.host())
    }
}

/// One access policy entry of an access-policy vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub tenant_id: Option<String>,
    pub object_id: String,
    pub application_id: Option<String>,
    /// `permissions.keys`, as written (compare case-insensitively).
    pub key_permissions: Vec<String>,
}

/// A soft-deleted vault (`locations/{loc}/deletedVaults/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedVault {
    pub id: String,
    pub vault_id: Option<String>,
    pub deletion_date: Option<String>,
    pub scheduled_purge_date: Option<String>,
    pub purge_protection_enabled: Option<bool>,
}

/// One version of a key, from ARM (`vaults/keys` or `vaults/keys/versions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyVersion {
    /// The ARM id read.
    pub id: String,
    pub key_name: String,
    /// The version (32 hex digits), when known.
    pub version: Option<String>,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: Option<String>,
    /// The modulus size in bits: ARM `keySize`, else from the JWK modulus.
    pub key_size: Option<u32>,
    pub curve_name: Option<String>,
    pub enabled: Option<bool>,
    /// Seconds since 1970.
    pub not_before: Option<i64>,
    /// Seconds since 1970.
    pub expires: Option<i64>,
    pub created: Option<i64>,
    pub key_ops: Vec<String>,
    pub key_uri: Option<String>,
    pub key_uri_with_version: Option<String>,
}

/// A key rotation policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    /// ISO-8601 duration, e.g. `P2Y`.
    pub expiry_time: Option<String>,
    pub lifetime_actions: Vec<LifetimeAction>,
}

/// One lifetime action of a rotation policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifetimeAction {
    /// `Rotate` or `Notify` (compare case-insensitively; ARM writes them lower-case).
    pub action: String,
    pub time_after_create: Option<String>,
    pub time_before_expiry: Option<String>,
}

/// A role assignment with its role definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    pub id: String,
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal`, `ForeignGroup`.
    pub principal_type: Option<String>,
    pub scope: String,
    pub role_definition_id: String,
    /// An ABAC condition that may narrow the grant.
    pub condition: Option<String>,
    pub definition: Read<RoleDefinition>,
}

/// A role definition's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDefinition {
    pub id: String,
    pub role_name: Option<String>,
    pub permissions: Vec<Permission>,
}

/// One permission block of a role definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

/// Which kind of ML endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    Online,
    Batch,
}

/// An online or batch endpoint of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub kind: EndpointKind,
    pub provisioning_state: Option<String>,
}

/// A resource provider's registration in the subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderRegistration {
    pub namespace: String,
    /// `Registered`, `NotRegistered`, `Registering`, `Unregistering`.
    pub registration_state: Option<String>,
}

/// Where cmk-guard wants a CMK vault's events and audit logs delivered
/// (`CMKGUARD_KEYVAULT_EVENTS_TARGET`, `CMKGUARD_AUDIT_EVENTHUB_RULE_ID`,
/// `CMKGUARD_AUDIT_EVENTHUB_NAME`). Each part is checked only when it is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WiringTargets {
    /// The `OnKeyVaultEvent` function, the Event Grid destination.
    pub events_target: Option<ArmResourceId>,
    /// The Event Hub that diagnostic settings stream `AuditEvent` to.
    pub audit: Option<AuditHub>,
}

impl WiringTargets {
    /// True when at least one part of self-wiring is configured.
    pub fn is_configured(&self) -> bool {
        self.events_target.is_some() || self.audit.is_some()
    }
}

/// An Event Hub as diagnostic settings name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHub {
    /// The namespace's `authorizationRules/{rule}` ARM id.
    pub rule_id: ArmResourceId,
    /// The hub's name in that namespace.
    pub hub: String,
}

/// The Key Vault event types cmk-guard acts on; its event subscription must include them all.
pub const WIRED_EVENT_TYPES: &[&str] = &[
    "Microsoft.KeyVault.KeyNewVersionCreated",
    "Microsoft.KeyVault.KeyNearExpiry",
    "Microsoft.KeyVault.KeyExpired",
    "Microsoft.KeyVault.VaultAccessPolicyChanged",
];

/// What was read of one vault's wiring, with the targets it was read against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultWiring {
    pub targets: WiringTargets,
    /// The vault's Event Grid system topic, when one exists (read only with an events target).
    pub topic: Option<SystemTopic>,
    /// The vault's diagnostic settings (read only with an audit hub).
    pub diagnostic_settings: Vec<DiagnosticSetting>,
}

/// An Event Grid system topic whose source is the vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemTopic {
    pub id: String,
    pub name: String,
    pub subscriptions: Vec<EventSubscription>,
}

/// One event subscription of a system topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSubscription {
    pub name: String,
    /// `destination.endpointType`: `AzureFunction`, `WebHook`, `EventHub`, …
    pub endpoint_type: Option<String>,
    /// `destination.properties.resourceId`, for Azure Function destinations.
    pub resource_id: Option<String>,
    /// `filter.includedEventTypes`; `None` when absent, which means every event type.
    pub included_event_types: Option<Vec<String>>,
    /// The subject filters set (`subjectBeginsWith …`, `subjectEndsWith …`); empty when none.
    pub subject_filters: Vec<String>,
    /// How many `filter.advancedFilters` there are.
    pub advanced_filters: usize,
    /// `expirationTimeUtc` as written; `None` when the subscription never expires.
    pub expiration_time: Option<String>,
    /// `provisioningState`; `None` when absent.
    pub provisioning_state: Option<String>,
}

impl EventSubscription {
    /// True when the subscription's destination is cmk-guard's function `target` (an Azure
    /// Function destination; ids compare case-insensitively), whatever it filters.
    pub fn is_to(&self, target: &ArmResourceId) -> bool {
        self.endpoint_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("AzureFunction"))
            && self
                .resource_id
                .as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(target.as_str()))
    }

    /// For a subscription delivering to cmk-guard's function (`target`), the wired event types
    /// it leaves out, short names (empty when it has them all); `None` when it delivers
    /// elsewhere. Event types compare case-insensitively.
    pub fn missing_types(&self, target: &ArmResourceId) -> Option<Vec<String>> {
        if !self.is_to(target) {
            return None;
        }
        let Some(included) = &self.included_event_types else {
            return Some(Vec::new());
        };
        Some(
            WIRED_EVENT_TYPES
                .iter()
                .filter(|wanted| !included.iter().any(|t| t.eq_ignore_ascii_case(wanted)))
                .map(|wanted| wanted.trim_start_matches("Microsoft.KeyVault.").to_owned())
                .collect(),
        )
    }

    /// For a subscription to `target`, why it does not deliver every wired event at `now`, as
    /// phrases (empty when it does); `None` when it delivers elsewhere. It counts only when it
    /// is provisioned (`Succeeded`, or no state given), has not expired, filters no subjects,
    /// has no advanced filters (cmk-guard writes none of these) and includes every wired type.
    /// An expiry that cannot be read is not taken as "never".
    pub fn shortfalls(&self, target: &ArmResourceId, now: OffsetDateTime) -> Option<Vec<String>> {
        let missing = self.missing_types(target)?;
        let mut why = Vec::new();
        if let Some(state) = &self.provisioning_state
            && !state.eq_ignore_ascii_case("Succeeded")
        {
            why.push(format!("is in provisioning state {state}"));
        }
        if let Some(expiry) = &self.expiration_time {
            match parse_utc(expiry) {
                Some(at) if at > now => {}
                Some(_) => why.push(format!("expired at {expiry}")),
                None => why.push(format!(
                    "has an unreadable expirationTimeUtc ({})",
                    crate::ids::truncate(expiry)
                )),
            }
        }
        if !self.subject_filters.is_empty() {
            why.push(format!(
                "filters subjects ({})",
                self.subject_filters.join(", ")
            ));
        }
        if self.advanced_filters > 0 {
            why.push(format!("has {} advanced filter(s)", self.advanced_filters));
        }
        if !missing.is_empty() {
            why.push(format!("does not include {}", missing.join(", ")));
        }
        Some(why)
    }

    /// True when this subscription delivers every wired event type to `target` at `now`.
    pub fn delivers(&self, target: &ArmResourceId, now: OffsetDateTime) -> bool {
        self.shortfalls(target, now)
            .is_some_and(|why| why.is_empty())
    }
}

/// An RFC 3339 time, or one without an offset read as UTC (`2026-12-31T00:00:00`).
fn parse_utc(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    const LOCAL: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        time::PrimitiveDateTime::parse(text, LOCAL)
            .ok()
            .map(time::PrimitiveDateTime::assume_utc)
    })
}

impl SystemTopic {
    /// True when one of the topic's subscriptions delivers every wired event type to `target`
    /// at `now`.
    pub fn delivers_to(&self, target: &ArmResourceId, now: OffsetDateTime) -> bool {
        self.subscriptions.iter().any(|s| s.delivers(target, now))
    }
}

impl DiagnosticSetting {
    /// True when the setting streams `AuditEvent` (itself, or through the `audit` or `allLogs`
    /// group) to `hub`'s authorization rule and hub name.
    pub fn streams_audit(&self, hub: &AuditHub) -> bool {
        self.is_to(hub)
            && self.enabled_logs.iter().any(|log| {
                ["AuditEvent", "audit", "allLogs"]
                    .iter()
                    .any(|c| log.eq_ignore_ascii_case(c))
            })
    }

    /// True when the setting sends to `hub`'s authorization rule and hub name.
    pub fn is_to(&self, hub: &AuditHub) -> bool {
        let same = |value: &Option<String>, wanted: &str| {
            value
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(wanted))
        };
        same(&self.event_hub_authorization_rule_id, hub.rule_id.as_str())
            && same(&self.event_hub_name, &hub.hub)
    }

    /// True when the setting is one cmk-guard may rewrite: it sends to `hub` and nowhere else
    /// (whatever its logs), as the setting cmk-guard writes does.
    pub fn is_only_to(&self, hub: &AuditHub) -> bool {
        self.is_to(hub) && self.other_destinations.is_empty()
    }
}

/// One diagnostic setting of the vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagnosticSetting {
    pub name: String,
    pub event_hub_authorization_rule_id: Option<String>,
    pub event_hub_name: Option<String>,
    /// The enabled log entries: categories and category groups as written.
    pub enabled_logs: Vec<String>,
    /// The destinations set besides the Event Hub (`workspaceId`, `storageAccountId`,
    /// `marketplacePartnerId`), by property name.
    pub other_destinations: Vec<String>,
}

/// The resource providers a CMK workspace needs registered (Azure ML CMK guide).
pub const REQUIRED_PROVIDERS: &[&str] = &[
    "Microsoft.MachineLearningServices",
    "Microsoft.Storage",
    "Microsoft.KeyVault",
    "Microsoft.DocumentDB",
    "Microsoft.Search",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(encryption_uai: Option<&str>) -> Workspace {
        Workspace {
            identity: Some(ManagedIdentity {
                identity_type: Some("SystemAssigned,UserAssigned".into()),
                principal_id: Some("system-principal".into()),
                tenant_id: Some("tenant".into()),
                user_assigned: vec![UserAssignedIdentity {
                    resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/UAI".into(),
                    principal_id: Some("uai-principal".into()),
                    client_id: Some("uai-client".into()),
                }],
            }),
            encryption: Some(Encryption { user_assigned_identity: encryption_uai.map(str::to_owned), ..Encryption::default() }),
            ..Workspace::default()
        }
    }

    #[test]
    fn the_encryption_identity_wins_over_the_system_identity() {
        let uai = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uai";
        assert_eq!(
            workspace(Some(uai)).cmk_principal().unwrap().principal_id,
            "uai-principal"
        );
        assert_eq!(
            workspace(None).cmk_principal().unwrap().principal_id,
            "system-principal"
        );
        assert_eq!(workspace(Some("/other")).cmk_principal(), None);
    }
}
