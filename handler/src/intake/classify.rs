//! Decides, without any I/O, whether an event can affect a workspace's CMK chain, and turns the
//! relevant ones into a [`Trigger`]. The operation table here is also what the Event Grid filter
//! in `infra/` must list, so it is public.

use super::data::{KeyVaultEventData, ResourceEventData};
use super::event::{RawEvent, deserialize_ref};
use super::{ChangeKind, IntakeSettings, Rejection, ResourceKind, Target, Trigger};
use crate::ids::{ArmResourceId, KeyUrl, Membership, SubscriptionId};
use time::OffsetDateTime;

/// ARM operations that can change something in a CMK chain, with the kind of resource they
/// touch. Matched case-insensitively against `data.operationName`.
pub const RELEVANT_OPERATIONS: &[(&str, ResourceKind)] = &[
    ("Microsoft.KeyVault/vaults/write", ResourceKind::Vault),
    ("Microsoft.KeyVault/vaults/delete", ResourceKind::Vault),
    (
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        ResourceKind::Vault,
    ),
    (
        "Microsoft.KeyVault/vaults/keys/write",
        ResourceKind::VaultKey,
    ),
    (
        "Microsoft.KeyVault/locations/deletedVaults/purge/action",
        ResourceKind::DeletedVault,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/write",
        ResourceKind::Workspace,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/delete",
        ResourceKind::Workspace,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/write",
        ResourceKind::OnlineEndpoint,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/delete",
        ResourceKind::OnlineEndpoint,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/batchEndpoints/write",
        ResourceKind::BatchEndpoint,
    ),
    (
        "Microsoft.MachineLearningServices/workspaces/batchEndpoints/delete",
        ResourceKind::BatchEndpoint,
    ),
    (
        "Microsoft.Authorization/roleAssignments/write",
        ResourceKind::RoleAssignment,
    ),
    (
        "Microsoft.Authorization/roleAssignments/delete",
        ResourceKind::RoleAssignment,
    ),
    (
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        ResourceKind::ResourceGroup,
    ),
    (
        "Microsoft.Resources/subscriptions/resourceGroups/delete",
        ResourceKind::ResourceGroup,
    ),
    (
        "Microsoft.MachineLearningServices/register/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.MachineLearningServices/unregister/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.Storage/register/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.Storage/unregister/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.KeyVault/register/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.KeyVault/unregister/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.DocumentDB/register/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.DocumentDB/unregister/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.Search/register/action",
        ResourceKind::ProviderRegistration,
    ),
    (
        "Microsoft.Search/unregister/action",
        ResourceKind::ProviderRegistration,
    ),
];

/// Azure ML names the resource group it provisions for a CMK workspace `azureml-rg-…`
/// (azure-notes Trap T21). Writes and deletes inside it are relevant whatever their operation;
/// so are those inside any group a workspace named in `serviceProvisionedResourceGroup` as seen
/// by an evaluation or a sweep (`IntakeSettings::managed_groups`), whatever its name.
pub const MANAGED_RESOURCE_GROUP_PREFIX: &str = "azureml-rg-";

/// The verdict on one event.
#[derive(Debug)]
pub enum Classified {
    Relevant(Box<Trigger>),
    Ignored(String),
}

/// The event's own fields that classification reads, however the event was parsed: from a
/// [`RawEvent`], or borrowed from the request body by the typed read of the hot path.
pub(super) struct EventFields<'e> {
    pub id: &'e str,
    pub event_type: &'e str,
    pub subject: Option<&'e str>,
    pub source: Option<&'e str>,
    pub time: Option<OffsetDateTime>,
}

impl RawEvent {
    fn fields(&self) -> EventFields<'_> {
        EventFields {
            id: &self.id,
            event_type: &self.event_type,
            subject: self.subject.as_deref(),
            source: self.source.as_deref(),
            time: self.time,
        }
    }
}

/// What classification reads of a `Microsoft.Resources.*` event's `data`.
pub(super) trait ResourceData {
    fn subscription_id(&self) -> Option<&str>;
    fn operation_name(&self) -> Option<&str>;
    fn resource_uri(&self) -> Option<&str>;
    fn correlation_id(&self) -> Option<&str>;
    fn caller_object_id(&self) -> Option<&str>;
    fn caller_app_id(&self) -> Option<&str>;
    fn caller_name(&self) -> Option<&str>;
}

/// What classification reads of a `Microsoft.KeyVault.*` event's `data`: the object's URL.
pub(super) trait KeyVaultData {
    fn object_id(&self) -> &str;
}

impl ResourceData for ResourceEventData {
    fn subscription_id(&self) -> Option<&str> {
        self.subscription_id.as_deref()
    }
    fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }
    fn resource_uri(&self) -> Option<&str> {
        self.resource_uri.as_deref()
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    fn caller_object_id(&self) -> Option<&str> {
        ResourceEventData::caller_object_id(self)
    }
    fn caller_app_id(&self) -> Option<&str> {
        ResourceEventData::caller_app_id(self)
    }
    fn caller_name(&self) -> Option<&str> {
        ResourceEventData::caller_name(self)
    }
}

impl KeyVaultData for KeyVaultEventData {
    fn object_id(&self) -> &str {
        &self.id
    }
}

/// Classifies one event. `Err` means the event was malformed or out of scope.
pub fn classify(event: &RawEvent, settings: &IntakeSettings) -> Result<Classified, Rejection> {
    classify_fields(
        &event.fields(),
        || deserialize_ref::<ResourceEventData>("data", &event.data),
        || deserialize_ref::<KeyVaultEventData>("data", &event.data),
        settings,
    )
}

/// [`classify`] over the event's fields; `data` is read as the event's type needs, by
/// `resource` or `key_vault`, only when classification gets that far.
pub(super) fn classify_fields<R: ResourceData, K: KeyVaultData>(
    event: &EventFields<'_>,
    resource: impl FnOnce() -> Result<R, Rejection>,
    key_vault: impl FnOnce() -> Result<K, Rejection>,
    settings: &IntakeSettings,
) -> Result<Classified, Rejection> {
    let event_type = event.event_type;
    if let Some(rest) = strip_prefix_ignore_case(event_type, "Microsoft.Resources.Resource") {
        return classify_resource_event(event, rest, resource, settings);
    }
    if let Some(rest) = strip_prefix_ignore_case(event_type, "Microsoft.KeyVault.") {
        return classify_key_vault_event(event, rest, key_vault, settings);
    }
    if event_type.eq_ignore_ascii_case("Microsoft.EventGrid.SubscriptionValidationEvent") {
        return Ok(Classified::Ignored(
            "subscription validation is answered by the Functions host's Event Grid extension"
                .into(),
        ));
    }
    if strip_prefix_ignore_case(event_type, "Microsoft.MachineLearningServices.").is_some() {
        return Ok(Classified::Ignored(format!(
            "{} is about models and runs, not the workspace's encryption",
            crate::text::field(event_type)
        )));
    }
    Ok(Classified::Ignored(format!(
        "event type {} is not one cmk-guard acts on",
        crate::text::field(event_type)
    )))
}

fn classify_resource_event<R: ResourceData>(
    event: &EventFields<'_>,
    rest: &str,
    data: impl FnOnce() -> Result<R, Rejection>,
    settings: &IntakeSettings,
) -> Result<Classified, Rejection> {
    let (change, outcome) = ["Write", "Delete", "Action"]
        .iter()
        .find_map(|verb| strip_prefix_ignore_case(rest, verb).map(|outcome| (*verb, outcome)))
        .ok_or_else(|| {
            Rejection::new(format!(
                "event type {}: unknown Microsoft.Resources event",
                crate::text::field(event.event_type)
            ))
        })?;
    let data = data()?;
    check_scope(event, data.subscription_id(), settings)?;
    if outcome.eq_ignore_ascii_case("failure") {
        return Ok(Classified::Ignored(
            "the operation failed; nothing changed".into(),
        ));
    }
    if outcome.eq_ignore_ascii_case("cancel") {
        return Ok(Classified::Ignored(
            "the operation was cancelled; nothing changed".into(),
        ));
    }
    if !outcome.eq_ignore_ascii_case("success") {
        return Err(Rejection::new(format!(
            "event type {}: unknown Microsoft.Resources event",
            crate::text::field(event.event_type)
        )));
    }
    let operation = data.operation_name().ok_or_else(|| {
        Rejection::new("data.operationName: missing; Microsoft.Resources events always carry it")
    })?;
    let resource_text = data
        .resource_uri()
        .or(event.subject)
        .ok_or_else(|| Rejection::new("data.resourceUri: missing, and the event has no subject"))?;

    let listed = RELEVANT_OPERATIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(operation))
        .map(|(_, kind)| *kind)
        // A write or delete of a service-provisioned group itself (learned, or by its prefix)
        // is one in that group: resolve then finds the workspace that owns it.
        .map(|kind| match kind {
            ResourceKind::ResourceGroup if managed_resource_group(resource_text, settings) => {
                ResourceKind::ManagedResourceGroupMember
            }
            kind => kind,
        });
    let Some(kind) = listed.or_else(|| {
        (change != "Action" && managed_resource_group(resource_text, settings))
            .then_some(ResourceKind::ManagedResourceGroupMember)
    }) else {
        return Ok(Classified::Ignored(format!(
            "operation {} cannot change a CMK chain",
            crate::text::field(operation)
        )));
    };
    let resource = ArmResourceId::parse(resource_text)
        .map_err(|e| Rejection::new(format!("data.resourceUri: {e}")))?;
    check_subscription(resource.subscription(), settings)?;
    let target_id = match kind {
        // `…/vaults/kv/accessPolicies/add`: the vault is what changed.
        ResourceKind::Vault => resource
            .top_level_resource()
            .unwrap_or_else(|| resource.clone()),
        _ => resource,
    };
    let change = match change {
        "Write" => ChangeKind::Write,
        "Delete" => ChangeKind::Delete,
        _ => ChangeKind::Action,
    };
    Ok(Classified::Relevant(Box::new(Trigger {
        event_id: event.id.to_owned(),
        event_type: event.event_type.to_owned(),
        change,
        subscription: target_id.subscription().clone(),
        target: Target::Arm {
            id: target_id,
            kind,
        },
        operation: Some(operation.to_owned()),
        caller_object_id: data.caller_object_id().map(str::to_owned),
        caller_app_id: data.caller_app_id().map(str::to_owned),
        caller_name: data
            .caller_name()
            .map(|name| crate::text::field(name).into_owned()),
        correlation_id: data.correlation_id().map(str::to_owned),
        time: event.time,
        uses: Vec::new(),
    })))
}

fn classify_key_vault_event<K: KeyVaultData>(
    event: &EventFields<'_>,
    rest: &str,
    data: impl FnOnce() -> Result<K, Rejection>,
    settings: &IntakeSettings,
) -> Result<Classified, Rejection> {
    let data = data()?;
    let change = match rest.to_ascii_lowercase().as_str() {
        "keynewversioncreated" => ChangeKind::KeyNewVersionCreated,
        "keynearexpiry" => ChangeKind::KeyNearExpiry,
        "keyexpired" => ChangeKind::KeyExpired,
        "vaultaccesspolicychanged" => ChangeKind::VaultAccessPolicyChanged,
        other if other.starts_with("secret") || other.starts_with("certificate") => {
            check_scope(event, None, settings)?;
            return Ok(Classified::Ignored(
                "secrets and certificates are not customer-managed keys".into(),
            ));
        }
        _ => {
            check_scope(event, None, settings)?;
            return Ok(Classified::Ignored(format!(
                "event type {} is not one cmk-guard acts on",
                crate::text::field(event.event_type)
            )));
        }
    };
    let source = event.source.ok_or_else(|| {
        Rejection::new("event.topic: missing; Key Vault events name their vault there")
    })?;
    let vault =
        ArmResourceId::parse(source).map_err(|e| Rejection::new(format!("event.topic: {e}")))?;
    if !vault.is_type("Microsoft.KeyVault/vaults") {
        return Err(Rejection::new(format!(
            "event.topic: `{}` is not a key vault",
            crate::text::field(&vault.to_string())
        )));
    }
    check_subscription(vault.subscription(), settings)?;
    let target = if change == ChangeKind::VaultAccessPolicyChanged {
        Target::Arm {
            id: vault.clone(),
            kind: ResourceKind::Vault,
        }
    } else {
        let key =
            KeyUrl::parse(data.object_id()).map_err(|e| Rejection::new(format!("data.Id: {e}")))?;
        if !key.is_under(&settings.keyvault_dns_suffix) {
            return Err(Rejection::new(format!(
                "data.Id: key host {} is not under the Key Vault DNS suffix {} (CMKGUARD_KEYVAULT_DNS_SUFFIX); it will not be contacted",
                crate::text::field(key.host()),
                settings.keyvault_dns_suffix
            )));
        }
        if !key.vault_name().eq_ignore_ascii_case(vault.name()) {
            return Err(Rejection::new(format!(
                "data.Id: key vault {} does not match the topic's vault {}",
                key.vault_name(),
                crate::text::field(vault.name())
            )));
        }
        Target::Key {
            key,
            vault: vault.clone(),
        }
    };
    Ok(Classified::Relevant(Box::new(Trigger {
        event_id: event.id.to_owned(),
        event_type: event.event_type.to_owned(),
        change,
        subscription: vault.subscription().clone(),
        target,
        operation: None,
        caller_object_id: None,
        caller_app_id: None,
        caller_name: None,
        correlation_id: None,
        time: event.time,
        uses: Vec::new(),
    })))
}

/// Refuses events from subscriptions outside `CMKGUARD_SUBSCRIPTIONS`, before anything else is
/// looked at, so a misrouted Event Grid subscription is visible at once.
fn check_scope(
    event: &EventFields<'_>,
    data_subscription: Option<&str>,
    settings: &IntakeSettings,
) -> Result<(), Rejection> {
    if !settings.subscriptions.is_limited() {
        return Ok(());
    }
    let candidates = [data_subscription, event.source, event.subject];
    let subscription = candidates.iter().flatten().find_map(|text| {
        SubscriptionId::parse(text).ok().or_else(|| {
            ArmResourceId::parse(text)
                .ok()
                .map(|id| id.subscription().clone())
        })
    });
    match subscription {
        Some(subscription) => check_subscription(&subscription, settings),
        None => Err(Rejection::new(
            "the event names no subscription (data.subscriptionId, topic or subject), and CMKGUARD_SUBSCRIPTIONS or CMKGUARD_MANAGEMENT_GROUPS limits the scope",
        )),
    }
}

pub(super) fn check_subscription(
    subscription: &SubscriptionId,
    settings: &IntakeSettings,
) -> Result<(), Rejection> {
    match settings.subscriptions.membership(subscription) {
        Membership::In => Ok(()),
        Membership::Out => Err(Rejection::new(format!(
            "subscription {subscription} is not in CMKGUARD_SUBSCRIPTIONS or under CMKGUARD_MANAGEMENT_GROUPS"
        ))),
        Membership::NotYetKnown => Err(Rejection::not_yet_in_scope(format!(
            "subscription {subscription} is not in CMKGUARD_SUBSCRIPTIONS, and the subscriptions under CMKGUARD_MANAGEMENT_GROUPS are not known yet"
        ))),
    }
}

fn managed_resource_group(resource: &str, settings: &IntakeSettings) -> bool {
    // Most resources are not in one: unless names have been learned, a text whose group
    // segment (`/subscriptions/{id}/resourceGroups/{group}/…`) does not start with the prefix
    // needs no parsing.
    let prefix = MANAGED_RESOURCE_GROUP_PREFIX.as_bytes();
    let learned = settings.managed_groups.names_known();
    if !learned
        && !resource.split('/').nth(4).is_some_and(|group| {
            group
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
    {
        return false;
    }
    ArmResourceId::parse(resource)
        .ok()
        .and_then(|id| {
            id.resource_group().map(|rg| {
                rg.to_ascii_lowercase()
                    .starts_with(MANAGED_RESOURCE_GROUP_PREFIX)
                    || (learned && settings.managed_groups.contains(rg))
            })
        })
        .unwrap_or(false)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests;
