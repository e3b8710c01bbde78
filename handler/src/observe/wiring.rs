//! Self-wiring reads (`vault.events-wired`): for each CMK vault, its Event Grid system topic
//! with the topic's event subscriptions, and its diagnostic settings.
//!
//! Read by the sweep and the scan only, never on events: a vault's wiring changes rarely, and
//! an event answers faster without three more reads. The system topics of a subscription are
//! listed once (Azure allows one system topic per source, in any resource group), and each
//! vault is read once per [`WiringReads`], however many workspaces share it. The reads go
//! straight to ARM, not through the observe cache: a sweep outlives the cache's few seconds,
//! and the remediation must see fresh state.

use std::collections::HashMap;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use super::parse::at;
use super::read_failure;
use crate::azure::{ArmClient, AzureError};
use crate::ids::ArmResourceId;
use crate::snapshot::{
    DiagnosticSetting, EventSubscription, Read, Snapshot, SystemTopic, VaultWiring, WiringTargets,
};

/// The wiring reads of one sweep or scan: each subscription's system topics and each vault's
/// wiring, remembered for the rest of it.
pub struct WiringReads<'a> {
    arm: &'a ArmClient,
    targets: &'a WiringTargets,
    /// System topics by subscription id (lower-case).
    topics: HashMap<String, Read<Vec<Value>>>,
    /// Wiring by vault id (lower-case).
    vaults: HashMap<String, Read<VaultWiring>>,
}

impl<'a> WiringReads<'a> {
    /// The reads for `targets`; `None` when self-wiring is not configured (nothing to read).
    pub fn new(arm: &'a ArmClient, targets: &'a WiringTargets) -> Option<Self> {
        targets.is_configured().then(|| Self {
            arm,
            targets,
            topics: HashMap::new(),
            vaults: HashMap::new(),
        })
    }

    /// Sets `wiring` on every snapshot whose CMK vault was read, reading what is not yet known:
    /// first the system topics of new subscriptions, then each new vault, concurrently.
    pub async fn fill(&mut self, snapshots: &mut [Snapshot], deadline: Instant) {
        let mut new_vaults: Vec<ArmResourceId> = Vec::new();
        for id in snapshots.iter().filter_map(vault_id) {
            let key = id.as_str().to_ascii_lowercase();
            if !self.vaults.contains_key(&key)
                && !new_vaults
                    .iter()
                    .any(|v| v.as_str().eq_ignore_ascii_case(&key))
            {
                new_vaults.push(id);
            }
        }
        if self.targets.events_target.is_some() {
            let mut subscriptions: Vec<String> = new_vaults
                .iter()
                .map(|v| v.subscription().as_str().to_ascii_lowercase())
                .filter(|s| !self.topics.contains_key(s))
                .collect();
            subscriptions.sort();
            subscriptions.dedup();
            let listed = join_all(
                subscriptions
                    .iter()
                    .map(|s| self.system_topics(s, deadline)),
            )
            .await;
            self.topics.extend(subscriptions.into_iter().zip(listed));
        }
        let read = join_all(new_vaults.iter().map(|v| self.read(v, deadline))).await;
        for (id, wiring) in new_vaults.iter().zip(read) {
            self.vaults.insert(id.as_str().to_ascii_lowercase(), wiring);
        }
        for snapshot in snapshots.iter_mut() {
            if let Some(id) = vault_id(snapshot) {
                snapshot.wiring = self.vaults.get(&id.as_str().to_ascii_lowercase()).cloned();
            }
        }
    }

    /// One vault's wiring, read now (the remediation's fresh read).
    pub async fn read_one(
        &mut self,
        vault: &ArmResourceId,
        deadline: Instant,
    ) -> Read<VaultWiring> {
        self.topics.clear();
        self.vaults.clear();
        if self.targets.events_target.is_some() {
            let subscription = vault.subscription().as_str().to_ascii_lowercase();
            let topics = self.system_topics(&subscription, deadline).await;
            self.topics.insert(subscription, topics);
        }
        self.read(vault, deadline).await
    }

    async fn system_topics(&self, subscription: &str, deadline: Instant) -> Read<Vec<Value>> {
        let path =
            format!("/subscriptions/{subscription}/providers/Microsoft.EventGrid/systemTopics");
        match self.list(&path, "Microsoft.EventGrid", deadline).await {
            Ok(items) => Read::Found(items),
            Err(error) if error.is_not_found() => Read::Found(Vec::new()),
            Err(error) => Read::Failed(read_failure("Event Grid system topics", &path, &error)),
        }
    }

    async fn list(
        &self,
        path: &str,
        namespace: &str,
        deadline: Instant,
    ) -> Result<Vec<Value>, AzureError> {
        let version = self.arm.api_versions().get(namespace);
        self.arm.list(path, version, &[], deadline).await
    }

    async fn read(&self, vault: &ArmResourceId, deadline: Instant) -> Read<VaultWiring> {
        let mut wiring = VaultWiring {
            targets: self.targets.clone(),
            ..VaultWiring::default()
        };
        if self.targets.events_target.is_some() {
            let subscription = vault.subscription().as_str().to_ascii_lowercase();
            let topics = match self.topics.get(&subscription) {
                Some(Read::Found(topics)) => topics.as_slice(),
                Some(Read::Failed(failure)) => return Read::Failed(failure.clone()),
                _ => &[],
            };
            if let Some(topic) = topics.iter().find(|t| is_topic_of(t, vault)) {
                let id = text(topic, "/id").unwrap_or_default();
                let topic_id = match ArmResourceId::parse(&id) {
                    Ok(id) if id.is_type("Microsoft.EventGrid/systemTopics") => id,
                    _ => {
                        return Read::Failed(unusable(
                            "Event Grid system topic",
                            vault.as_str(),
                            format!(
                                "the system topic of the vault has no usable id (`{}`)",
                                crate::ids::truncate(&id)
                            ),
                        ));
                    }
                };
                let path = format!("{topic_id}/eventSubscriptions");
                let subscriptions = match self.list(&path, "Microsoft.EventGrid", deadline).await {
                    Ok(items) => items.iter().map(event_subscription).collect(),
                    Err(error) if error.is_not_found() => Vec::new(),
                    Err(error) => {
                        return Read::Failed(read_failure("event subscriptions", &path, &error));
                    }
                };
                wiring.topic = Some(SystemTopic {
                    id: topic_id.to_string(),
                    name: topic_id.name().to_owned(),
                    subscriptions,
                });
            }
        }
        if self.targets.audit.is_some() {
            let path = format!("{vault}/providers/Microsoft.Insights/diagnosticSettings");
            match self.list(&path, "Microsoft.Insights", deadline).await {
                Ok(items) => {
                    wiring.diagnostic_settings = items.iter().map(diagnostic_setting).collect()
                }
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Read::Failed(read_failure("diagnostic settings", &path, &error));
                }
            }
        }
        Read::Found(wiring)
    }
}

/// The CMK vault a snapshot read, by the id ARM gave it; `None` unless the workspace uses CMK
/// (a vault named by a workspace with encryption off is nobody's CMK vault).
fn vault_id(snapshot: &Snapshot) -> Option<ArmResourceId> {
    let uses_cmk = snapshot
        .workspace
        .found()?
        .encryption
        .as_ref()?
        .status
        .as_deref()?
        .eq_ignore_ascii_case("Enabled");
    if !uses_cmk {
        return None;
    }
    let vault = snapshot.vault.as_ref()?.found()?;
    ArmResourceId::parse(&vault.id)
        .ok()
        .filter(|id| id.is_type("Microsoft.KeyVault/vaults"))
}

fn unusable(what: &str, resource: &str, message: String) -> crate::snapshot::ReadFailure {
    crate::snapshot::ReadFailure {
        what: what.to_owned(),
        resource: resource.to_owned(),
        status: None,
        code: None,
        message,
        transient: false,
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    at(value, pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// True when a listed system topic's `properties.source` is the vault (ids compare
/// case-insensitively: ARM answers with the casing it pleases).
pub(crate) fn is_topic_of(topic: &Value, vault: &ArmResourceId) -> bool {
    text(topic, "/properties/source").is_some_and(|source| {
        source
            .trim_end_matches('/')
            .eq_ignore_ascii_case(vault.as_str())
    })
}

/// One event subscription as listed. An `includedEventTypes` that is not a list of strings is
/// read as an empty list, so a malformed filter never counts as "every event type"; likewise a
/// subject filter, expiry or provisioning state of an odd type counts as set, and an
/// `advancedFilters` that is not a list as one filter.
pub(crate) fn event_subscription(item: &Value) -> EventSubscription {
    let included_event_types = match at(item, "/properties/filter/includedEventTypes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(_) => Some(Vec::new()),
    };
    let subject_filters = ["subjectBeginsWith", "subjectEndsWith"]
        .iter()
        .filter_map(|key| {
            let value = set(item, &format!("/properties/filter/{key}"))?;
            Some(format!("{key} {}", crate::ids::truncate(&value)))
        })
        .collect();
    let advanced_filters = match at(item, "/properties/filter/advancedFilters") {
        None | Some(Value::Null) => 0,
        Some(Value::Array(filters)) => filters.len(),
        Some(_) => 1,
    };
    EventSubscription {
        name: text(item, "/name").unwrap_or_default(),
        endpoint_type: text(item, "/properties/destination/endpointType"),
        resource_id: text(item, "/properties/destination/properties/resourceId"),
        included_event_types,
        subject_filters,
        advanced_filters,
        expiration_time: set(item, "/properties/expirationTimeUtc"),
        provisioning_state: set(item, "/properties/provisioningState"),
    }
}

/// A property that is set: its text, or the JSON of a value that is not a string (so an odd
/// type still counts as set, never as absent); `None` when absent, `null` or empty.
fn set(item: &Value, pointer: &str) -> Option<String> {
    match at(item, pointer)? {
        Value::Null => None,
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// One diagnostic setting as listed: only log entries whose `enabled` is `true` count.
pub(crate) fn diagnostic_setting(item: &Value) -> DiagnosticSetting {
    let enabled_logs = at(item, "/properties/logs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|log| log.get("enabled").and_then(Value::as_bool) == Some(true))
        .filter_map(|log| {
            log.get("category")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .or_else(|| log.get("categoryGroup").and_then(Value::as_str))
        })
        .map(str::to_owned)
        .collect();
    DiagnosticSetting {
        name: text(item, "/name").unwrap_or_default(),
        event_hub_authorization_rule_id: text(item, "/properties/eventHubAuthorizationRuleId"),
        event_hub_name: text(item, "/properties/eventHubName"),
        enabled_logs,
        other_destinations: ["workspaceId", "storageAccountId", "marketplacePartnerId"]
            .iter()
            .filter(|key| set(item, &format!("/properties/{key}")).is_some())
            .map(|key| (*key).to_owned())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";

    #[test]
    fn a_topic_is_the_vaults_whatever_the_casing_of_its_source() {
        let vault = ArmResourceId::parse(VAULT).unwrap();
        let topic = |source: Value| json!({"id": "x", "properties": {"source": source}});
        assert!(is_topic_of(&topic(json!(VAULT.to_uppercase())), &vault));
        assert!(is_topic_of(&topic(json!(format!("{VAULT}/"))), &vault));
        assert!(!is_topic_of(&topic(json!(format!("{VAULT}2"))), &vault));
        assert!(!is_topic_of(&topic(json!(42)), &vault));
        assert!(!is_topic_of(&json!({"properties": null}), &vault));
        assert!(!is_topic_of(&json!("not an object"), &vault));
    }

    #[test]
    fn event_subscriptions_read_hostile_answers_without_guessing() {
        let full = event_subscription(&json!({
            "name": "cmk-guard",
            "properties": {
                "destination": {"endpointType": "AzureFunction", "properties": {"resourceId": "/x/functions/OnKeyVaultEvent"}},
                "filter": {"includedEventTypes": ["Microsoft.KeyVault.KeyExpired", 7, null]}
            }
        }));
        assert_eq!(full.endpoint_type.as_deref(), Some("AzureFunction"));
        assert_eq!(
            full.resource_id.as_deref(),
            Some("/x/functions/OnKeyVaultEvent")
        );
        assert_eq!(
            full.included_event_types,
            Some(vec!["Microsoft.KeyVault.KeyExpired".to_owned()])
        );
        let every_type = event_subscription(
            &json!({"name": "all", "properties": {"filter": {"includedEventTypes": null}}}),
        );
        assert_eq!(every_type.included_event_types, None);
        let wrong_type = event_subscription(
            &json!({"properties": {"filter": {"includedEventTypes": "all"}, "destination": {"endpointType": 3}}}),
        );
        assert_eq!(wrong_type.included_event_types, Some(Vec::new()));
        assert_eq!(wrong_type.endpoint_type, None);
        assert_eq!(
            event_subscription(&json!(null)),
            EventSubscription::default()
        );
    }

    #[test]
    fn diagnostic_settings_count_only_enabled_logs() {
        let setting = diagnostic_setting(&json!({
            "name": "cmk-guard-audit",
            "properties": {
                "eventHubAuthorizationRuleId": "/rule",
                "eventHubName": "hub",
                "logs": [
                    {"category": "AuditEvent", "enabled": true},
                    {"category": "AzurePolicyEvaluationDetails", "enabled": false},
                    {"category": null, "categoryGroup": "allLogs", "enabled": true},
                    {"categoryGroup": "audit", "enabled": "true"},
                    "junk"
                ]
            }
        }));
        assert_eq!(setting.enabled_logs, ["AuditEvent", "allLogs"]);
        assert_eq!(setting.event_hub_name.as_deref(), Some("hub"));
        let bare = diagnostic_setting(
            &json!({"name": "s", "properties": {"logs": {"category": "AuditEvent"}}}),
        );
        assert!(bare.enabled_logs.is_empty());
        assert_eq!(bare.event_hub_authorization_rule_id, None);
    }

    #[test]
    fn what_narrows_a_subscription_is_read_and_odd_types_count_as_set() {
        let narrowed = event_subscription(&json!({
            "name": "cmk-guard",
            "properties": {
                "provisioningState": "Failed",
                "expirationTimeUtc": "2026-01-01T00:00:00Z",
                "filter": {
                    "subjectBeginsWith": "/blobServices/default/containers/none",
                    "subjectEndsWith": "",
                    "advancedFilters": [{"operatorType": "StringIn", "key": "data.VaultName", "values": ["other"]}, {}]
                }
            }
        }));
        assert_eq!(
            narrowed.subject_filters,
            ["subjectBeginsWith /blobServices/default/containers/none"]
        );
        assert_eq!(narrowed.advanced_filters, 2);
        assert_eq!(
            narrowed.expiration_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(narrowed.provisioning_state.as_deref(), Some("Failed"));
        let odd = event_subscription(&json!({"properties": {
            "provisioningState": 1,
            "expirationTimeUtc": {"at": "never"},
            "filter": {"subjectBeginsWith": false, "subjectEndsWith": ["x"], "advancedFilters": {"key": "k"}}
        }}));
        assert_eq!(
            odd.subject_filters,
            ["subjectBeginsWith false", "subjectEndsWith [\"x\"]"]
        );
        assert_eq!(odd.advanced_filters, 1);
        assert_eq!(odd.expiration_time.as_deref(), Some(r#"{"at":"never"}"#));
        assert_eq!(odd.provisioning_state.as_deref(), Some("1"));
        let plain = event_subscription(&json!({"properties": {
            "expirationTimeUtc": null,
            "filter": {"subjectBeginsWith": null, "advancedFilters": []}
        }}));
        assert!(plain.subject_filters.is_empty());
        assert_eq!(plain.advanced_filters, 0);
        assert_eq!(plain.expiration_time, None);
        assert_eq!(plain.provisioning_state, None);
    }

    #[test]
    fn diagnostic_settings_name_their_other_destinations() {
        let setting = diagnostic_setting(&json!({"properties": {
            "eventHubAuthorizationRuleId": "/rule",
            "workspaceId": "/workspace",
            "storageAccountId": "",
            "marketplacePartnerId": null
        }}));
        assert_eq!(setting.other_destinations, ["workspaceId"]);
        assert!(
            diagnostic_setting(&json!({"properties": {"storageAccountId": 5}}))
                .other_destinations
                .contains(&"storageAccountId".to_owned())
        );
    }
}
