//! Intake: the host envelope and the Event Grid / CloudEvents payloads become a [`Trigger`] —
//! or an immediate `ignored`/`rejected` answer, with no I/O.
//!
//! Real payloads are untidy (azure-notes, part H *Traps*): the event may arrive as an object or
//! as JSON text, Key Vault times may be numbers or strings, ARM sub-objects may be JSON text.
//! All of that is absorbed here, so the rest of cmk-guard sees one clean type.

mod audit;
mod check;
mod classify;
mod data;
mod envelope;
mod event;
mod fast;

use std::fmt;

use serde_json::Value;
use time::OffsetDateTime;

pub use audit::{
    AUDIT_EVENT_TYPE, AuditBatch, CHAIN_OPERATIONS, Caller, ChainChange, KeyUse, UseOperation,
    VaultActivity, one_caller, same_key,
};
pub use check::{CheckRequest, EVALUATE_EVENT_TYPE};
pub use classify::{Classified, MANAGED_RESOURCE_GROUP_PREFIX, RELEVANT_OPERATIONS, classify};
pub use data::{KeyVaultEventData, ResourceEventData};
pub use envelope::{BindingSource, Invocation, Metadata, RetryContext, Sys};
pub use event::{RawEvent, Schema, deserialize as deserialize_at};
pub use fast::{ReadEvent, read_event};

use crate::ids::{Allowlist, ArmResourceId, KeyUrl, ManagedGroups, SubscriptionId};

/// Why input was refused. The message names the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(String, bool);

impl Rejection {
    /// A rejection with a reason a person can act on. Reasons quote input, so each is made
    /// safe here, once: controls escaped and the length bounded ([`crate::text::REASON`]).
    pub fn new(reason: impl Into<String>) -> Self {
        Self(
            crate::text::clean_owned(reason.into(), crate::text::REASON),
            false,
        )
    }

    /// A subscription outside the allowlist as known so far, while the management groups'
    /// subscriptions were never discovered: the engine asks for the event again instead.
    pub fn not_yet_in_scope(reason: impl Into<String>) -> Self {
        Self(
            crate::text::clean_owned(reason.into(), crate::text::REASON),
            true,
        )
    }

    /// True for [`Rejection::not_yet_in_scope`].
    pub fn awaits_discovery(&self) -> bool {
        self.1
    }

    /// A deserializer's message at a JSON path. Both quote input — a key of any length as the
    /// path, a whole string value in `invalid type: string "…"` — so each is bounded on its own.
    pub fn at_path(prefix: &str, path: &str, message: &str) -> Self {
        let message = crate::text::field(message);
        if path == "." {
            Self::new(format!("{prefix}: {message}"))
        } else {
            Self::new(format!("{prefix}.{}: {message}", crate::text::field(path)))
        }
    }
}

/// A short name for the JSON type of a value, for error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What intake needs from the configuration.
#[derive(Debug, Clone)]
pub struct IntakeSettings {
    /// `CMKGUARD_SUBSCRIPTIONS` and the subscriptions discovered under
    /// `CMKGUARD_MANAGEMENT_GROUPS`, shared with the scope guard and the sweep.
    pub subscriptions: Allowlist,
    /// The service-provisioned resource groups learned from evaluations, whatever their name.
    pub managed_groups: ManagedGroups,
    /// `CMKGUARD_KEYVAULT_DNS_SUFFIX`; key URLs on other hosts are refused.
    pub keyvault_dns_suffix: String,
}

/// What kind of change the event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Write,
    Delete,
    Action,
    KeyNewVersionCreated,
    KeyNearExpiry,
    KeyExpired,
    VaultAccessPolicyChanged,
    /// Key Vault audit log records (`OnKeyVaultAudit`): changes and uses of a vault's keys.
    AuditLog,
}

/// The kind of ARM resource a trigger points at; resolve maps each to the workspaces it affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Vault,
    VaultKey,
    DeletedVault,
    Workspace,
    OnlineEndpoint,
    BatchEndpoint,
    RoleAssignment,
    ResourceGroup,
    ProviderRegistration,
    /// An Azure ML service-provisioned resource group (`azureml-rg-…`, or a group a workspace
    /// names in `serviceProvisionedResourceGroup`) or anything inside it.
    ManagedResourceGroupMember,
}

/// What the trigger points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An ARM resource (for access-policy writes, the vault itself).
    Arm {
        id: ArmResourceId,
        kind: ResourceKind,
    },
    /// A Key Vault key named by a Key Vault event, with the vault from the event's topic.
    Key { key: KeyUrl, vault: ArmResourceId },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Arm { id, .. } => id.fmt(f),
            Target::Key { key, .. } => key.fmt(f),
        }
    }
}

/// A relevant event, normalised: what happened, to which resource, by whom, when.
/// The event is only a hint; the resource is always read again before deciding.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub event_id: String,
    pub event_type: String,
    pub change: ChangeKind,
    pub subscription: SubscriptionId,
    pub target: Target,
    /// `data.operationName` of ARM events.
    pub operation: Option<String>,
    /// The caller's object id from the event's claims (ARM events only).
    pub caller_object_id: Option<String>,
    /// The caller's application id (`appid`, or `azp` in v2 tokens) from the claims: tells a
    /// first-party service such as Azure ML from a person.
    pub caller_app_id: Option<String>,
    /// The caller's sign-in name (or display name) from the claims, for the audit trail; input,
    /// cleaned and bounded where it is shown.
    pub caller_name: Option<String>,
    pub correlation_id: Option<String>,
    pub time: Option<OffsetDateTime>,
    /// Uses of the vault's keys by services, from the Key Vault audit log (`key.use-failures`);
    /// empty for every other trigger.
    pub uses: Vec<KeyUse>,
}

impl Trigger {
    /// A trigger that knows only what changed and how: no operation, caller, correlation id,
    /// time or key uses (an on-demand check; the parts a batch fills in itself).
    pub fn new(event_id: String, event_type: &str, change: ChangeKind, target: Target) -> Self {
        let subscription = match &target {
            Target::Arm { id, .. } | Target::Key { vault: id, .. } => id.subscription().clone(),
        };
        Self {
            event_id,
            event_type: event_type.to_owned(),
            change,
            subscription,
            target,
            operation: None,
            caller_object_id: None,
            caller_app_id: None,
            caller_name: None,
            correlation_id: None,
            time: None,
            uses: Vec::new(),
        }
    }
}

/// Intake settings for tests: the given subscriptions (all when `None`), the public Key Vault
/// suffix, no learned groups.
#[cfg(test)]
pub(crate) fn test_settings(subscriptions: Option<&[&str]>) -> IntakeSettings {
    IntakeSettings {
        subscriptions: Allowlist::listed(subscriptions.map(|s| {
            s.iter()
                .map(|id| SubscriptionId::parse(id).expect("a subscription id"))
                .collect()
        })),
        keyvault_dns_suffix: "vault.azure.net".into(),
        managed_groups: ManagedGroups::default(),
    }
}
