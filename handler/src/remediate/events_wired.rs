//! `vault.events-wired`: creates what is missing of the vault's wiring to cmk-guard, and only
//! that:
//!
//! - no system topic: `PUT /subscriptions/{s}/resourceGroups/{vault's group}/providers/
//!   Microsoft.EventGrid/systemTopics/{vault}-cmk-guard` (the vault's location, `source` the
//!   vault, `topicType` `Microsoft.KeyVault.vaults`);
//! - no event subscription to cmk-guard's function on it: `PUT {topic}/eventSubscriptions/
//!   cmk-guard` (destination `AzureFunction`, one event per batch, the wired event types);
//! - no diagnostic setting streaming `AuditEvent` to cmk-guard's hub: `PUT {vault}/providers/
//!   Microsoft.Insights/diagnosticSettings/cmk-guard-audit` (`AuditEvent` only).
//!
//! Existing topics, subscriptions and settings of others are never changed. A subscription or
//! setting already bearing cmk-guard's name is rewritten only when it is cmk-guard's own: a
//! subscription whose destination is cmk-guard's function (its filters, expiry or event types
//! may be wrong: that is what is being fixed), a setting that sends to cmk-guard's hub and
//! nowhere else. One that is someone else's (another destination, or Log Analytics beside the
//! hub) stays as it is, and cmk-guard's goes under the next free name, `cmk-guard-2` …
//! `cmk-guard-5` (`cmk-guard-audit-2` …): refusing instead would let anyone able to create a
//! resource of that name keep the vault unwired, and a new name removes nobody's destination.
//! When all those names are someone else's, the remediation is `skipped`, naming them. Every
//! write target is checked against the subscription allowlist first. Reversible: deleting the
//! three resources undoes it.

use serde_json::{Value, json};

use super::{Act, Stage, Stop, partial_snapshot, vault_id, writable};
use crate::catalogue::RuleId;
use crate::ids::ArmResourceId;
use crate::observe::wiring::WiringReads;
use crate::snapshot::{
    AuditHub, DiagnosticSetting, Read, Snapshot, SystemTopic, VaultWiring, WIRED_EVENT_TYPES,
};

const RULE: RuleId = RuleId::VaultEventsWired;

/// The name of the event subscription cmk-guard creates.
pub(crate) const SUBSCRIPTION_NAME: &str = "cmk-guard";
/// The name of the diagnostic setting cmk-guard creates.
pub(crate) const SETTING_NAME: &str = "cmk-guard-audit";

/// How many names cmk-guard tries for each resource before giving up: the base name, then
/// `-2` … `-5`.
const NAMES: usize = 5;

/// The name to PUT under: the first of `base`, `base-2` … `base-5` that no existing resource
/// has, or whose resource `ours` accepts (names compare case-insensitively, as ARM's do);
/// `None` when every one is someone else's.
fn free_name<T>(
    base: &str,
    existing: &[T],
    name: impl Fn(&T) -> &str,
    ours: impl Fn(&T) -> bool,
) -> Option<String> {
    (1..=NAMES)
        .map(|n| match n {
            1 => base.to_owned(),
            n => format!("{base}-{n}"),
        })
        .find(|candidate| {
            existing
                .iter()
                .filter(|r| name(r).eq_ignore_ascii_case(candidate))
                .all(&ours)
        })
}

/// The name of cmk-guard's event subscription on `topic` (to `target`); see [`free_name`].
fn subscription_name(topic: Option<&SystemTopic>, target: &ArmResourceId) -> Option<String> {
    let existing = topic
        .map(|t| t.subscriptions.as_slice())
        .unwrap_or_default();
    free_name(
        SUBSCRIPTION_NAME,
        existing,
        |s| &s.name,
        |s| s.is_to(target),
    )
}

/// The name of cmk-guard's diagnostic setting among `settings` (to `hub`); see [`free_name`].
fn setting_name(settings: &[DiagnosticSetting], hub: &AuditHub) -> Option<String> {
    free_name(SETTING_NAME, settings, |s| &s.name, |s| s.is_only_to(hub))
}

/// Why nothing was written: every name cmk-guard may use is someone else's.
fn names_taken(what: &str, base: &str, on: &str) -> Stop {
    Stop::Skipped(format!(
        "every {what} name cmk-guard may use ({base}, {base}-2 … {base}-{NAMES}) on {on} is taken by one that sends elsewhere, which cmk-guard does not overwrite: rename or delete one of them, or wire the vault by hand"
    ))
}

/// The body of a new system topic for `vault` in `location`.
pub(super) fn topic_body(vault: &ArmResourceId, location: &str) -> Value {
    json!({
        "location": location,
        "properties": {"source": vault.as_str(), "topicType": "Microsoft.KeyVault.vaults"}
    })
}

/// The body of cmk-guard's event subscription: one event per invocation, the wired types only.
pub(super) fn subscription_body(target: &ArmResourceId) -> Value {
    json!({
        "properties": {
            "destination": {
                "endpointType": "AzureFunction",
                "properties": {"resourceId": target.as_str(), "maxEventsPerBatch": 1}
            },
            "filter": {"includedEventTypes": WIRED_EVENT_TYPES},
            "eventDeliverySchema": "EventGridSchema"
        }
    })
}

/// The body of cmk-guard's diagnostic setting: `AuditEvent` to the hub, nothing else.
pub(super) fn setting_body(rule_id: &ArmResourceId, hub: &str) -> Value {
    json!({
        "properties": {
            "eventHubAuthorizationRuleId": rule_id.as_str(),
            "eventHubName": hub,
            "logs": [{"category": "AuditEvent", "enabled": true}]
        }
    })
}

/// The system topic cmk-guard creates for a vault: in the vault's resource group, named after it.
fn new_topic_id(vault: &ArmResourceId) -> Stage<ArmResourceId> {
    let group = vault
        .resource_group()
        .ok_or_else(|| Stop::refused(format!("the vault id {vault} names no resource group")))?;
    ArmResourceId::parse(&format!(
        "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.EventGrid/systemTopics/{}-cmk-guard",
        vault.subscription(),
        vault.name()
    ))
    .map_err(|e| Stop::refused(format!("no system topic id can be made for {vault}: {e}")))
}

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let vault_id = vault_id(&workspace, act.arm.scope())?;
    let mut reads = WiringReads::new(act.arm, act.wiring).ok_or_else(|| {
        Stop::Skipped("self-wiring is not configured: nothing to wire the vault to".to_owned())
    })?;
    let mut snapshot = partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault_id).await?);
    snapshot.wiring = Some(reads.read_one(&vault_id, act.deadline).await);
    let observed = act.still_failing(RULE, &snapshot)?;
    let (Some(Read::Found(vault)), Some(Read::Found(wiring))) = (&snapshot.vault, &snapshot.wiring)
    else {
        return Err(Stop::Failed {
            detail: "the vault or its wiring could not be read again".to_owned(),
            transient: false,
        });
    };
    // Both names are settled before anything is written, so a skip writes nothing.
    let events = match &act.wiring.events_target {
        Some(target)
            if !wiring
                .topic
                .as_ref()
                .is_some_and(|t| t.delivers_to(target, act.now)) =>
        {
            let name = subscription_name(wiring.topic.as_ref(), target).ok_or_else(|| {
                let topic = wiring.topic.as_ref().map_or("", |t| t.id.as_str());
                names_taken("event subscription", SUBSCRIPTION_NAME, topic)
            })?;
            Some((target, name))
        }
        _ => None,
    };
    let audit = match &act.wiring.audit {
        Some(hub)
            if !wiring
                .diagnostic_settings
                .iter()
                .any(|s| s.streams_audit(hub)) =>
        {
            let name = setting_name(&wiring.diagnostic_settings, hub).ok_or_else(|| {
                names_taken("diagnostic setting", SETTING_NAME, vault_id.as_str())
            })?;
            Some((hub, name))
        }
        _ => None,
    };
    let mut done = Vec::new();
    if let Some((target, name)) = events {
        let topic_id = match &wiring.topic {
            Some(topic) => ArmResourceId::parse(&topic.id)
                .map_err(|e| Stop::refused(format!("the system topic id is unusable: {e}")))?,
            None => {
                let location = vault.location.as_deref().ok_or_else(|| {
                    Stop::refused(format!("the vault {vault_id} has no location"))
                })?;
                let topic_id = new_topic_id(&vault_id)?;
                writable(act.arm.scope(), &topic_id, "system topic")?;
                put(
                    act,
                    &topic_id,
                    "Microsoft.EventGrid",
                    &topic_body(&vault_id, location),
                )
                .await?;
                done.push(format!("PUT the system topic {topic_id}"));
                topic_id
            }
        };
        writable(act.arm.scope(), &topic_id, "system topic")?;
        let path = format!("{topic_id}/eventSubscriptions/{name}");
        let id = ArmResourceId::parse(&path)
            .map_err(|e| Stop::refused(format!("{path} is not an ARM id: {e}")))?;
        put(act, &id, "Microsoft.EventGrid", &subscription_body(target)).await?;
        done.push(format!("PUT the event subscription {path}"));
    }
    if let Some((hub, name)) = audit {
        let path = format!("{vault_id}/providers/Microsoft.Insights/diagnosticSettings/{name}");
        let id = ArmResourceId::parse(&path)
            .map_err(|e| Stop::refused(format!("{path} is not an ARM id: {e}")))?;
        writable(act.arm.scope(), &id, "diagnostic setting")?;
        put(
            act,
            &id,
            "Microsoft.Insights",
            &setting_body(&hub.rule_id, &hub.hub),
        )
        .await?;
        done.push(format!("PUT the diagnostic setting {path}"));
    }
    snapshot.wiring = Some(reads.read_one(&vault_id, act.deadline).await);
    let verified = act.verified(RULE, &snapshot)?;
    Ok(format!(
        "{} (before: {observed}); verified: {verified}",
        done.join(", ")
    ))
}

async fn put(act: &Act<'_>, id: &ArmResourceId, namespace: &str, body: &Value) -> Stage<()> {
    act.arm
        .put(id.as_str(), act.api_version(namespace), body, act.deadline)
        .await
        .map(drop)
        .map_err(|e| Stop::azure(&format!("PUT {id}"), &e))
}

pub(super) fn describe(snapshot: &Snapshot) -> String {
    let Some(Read::Found(wiring)) = &snapshot.wiring else {
        return "would create the vault's Event Grid subscription and AuditEvent diagnostic setting for cmk-guard".to_owned();
    };
    let vault = snapshot
        .vault
        .as_ref()
        .and_then(Read::found)
        .map(|v| v.id.clone())
        .unwrap_or_else(|| "the vault".to_owned());
    // An alert's sentence has no evaluation time at hand: the clock judges expiry here.
    let writes = planned(wiring, &vault, time::OffsetDateTime::now_utc());
    if writes.is_empty() {
        return format!("would write nothing: {vault} is wired");
    }
    format!("would {}", writes.join(", "))
}

/// What [`apply`] would PUT, from what was read, at `now`; like it, nothing when a name is
/// not free.
fn planned(wiring: &VaultWiring, vault: &str, now: time::OffsetDateTime) -> Vec<String> {
    let mut writes = Vec::new();
    if let Some(target) = &wiring.targets.events_target
        && !wiring
            .topic
            .as_ref()
            .is_some_and(|t| t.delivers_to(target, now))
    {
        let Some(name) = subscription_name(wiring.topic.as_ref(), target) else {
            return vec![format!(
                "write nothing: every event subscription name cmk-guard may use on {vault}'s system topic is taken by one that sends elsewhere"
            )];
        };
        let topic = match &wiring.topic {
            Some(topic) => topic.id.clone(),
            None => {
                writes.push(format!("create an Event Grid system topic for {vault}"));
                "it".to_owned()
            }
        };
        writes.push(format!(
            "PUT the event subscription {name} on {topic} (to {target})"
        ));
    }
    if let Some(hub) = &wiring.targets.audit
        && !wiring
            .diagnostic_settings
            .iter()
            .any(|s| s.streams_audit(hub))
    {
        let Some(name) = setting_name(&wiring.diagnostic_settings, hub) else {
            return vec![format!(
                "write nothing: every diagnostic setting name cmk-guard may use on {vault} is taken by one that sends elsewhere"
            )];
        };
        writes.push(format!(
            "PUT the diagnostic setting {name} on {vault} (AuditEvent to the Event Hub {})",
            hub.hub
        ));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{VAULT_ID, compliant_snapshot};
    use crate::snapshot::{EventSubscription, WiringTargets};

    const FUNCTION: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ops/providers/Microsoft.Web/sites/cmkguard/functions/OnKeyVaultEvent";
    const HUB_RULE: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ops/providers/Microsoft.EventHub/namespaces/cmkguard/authorizationRules/send";

    fn unwired() -> Snapshot {
        let mut snapshot = compliant_snapshot();
        snapshot.wiring = Some(Read::Found(VaultWiring {
            targets: WiringTargets {
                events_target: Some(ArmResourceId::parse(FUNCTION).unwrap()),
                audit: Some(AuditHub {
                    rule_id: ArmResourceId::parse(HUB_RULE).unwrap(),
                    hub: "keyvault-audit".into(),
                }),
            },
            topic: None,
            diagnostic_settings: Vec::new(),
        }));
        snapshot
    }

    #[test]
    fn the_bodies_are_the_narrowest_that_wire_the_vault() {
        let vault = ArmResourceId::parse(VAULT_ID).unwrap();
        assert_eq!(
            new_topic_id(&vault).unwrap().as_str(),
            "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ml-rg/providers/Microsoft.EventGrid/systemTopics/kv1-cmk-guard"
        );
        assert_eq!(
            topic_body(&vault, "westeurope"),
            json!({"location": "westeurope", "properties": {"source": VAULT_ID, "topicType": "Microsoft.KeyVault.vaults"}})
        );
        let subscription = subscription_body(&ArmResourceId::parse(FUNCTION).unwrap());
        let parsed = crate::observe::wiring::event_subscription(&subscription);
        assert_eq!(
            parsed.missing_types(&ArmResourceId::parse(FUNCTION).unwrap()),
            Some(Vec::new()),
            "what cmk-guard writes is what the rule asks for"
        );
        assert_eq!(
            subscription["properties"]["destination"]["properties"]["maxEventsPerBatch"],
            1
        );
        let setting = setting_body(&ArmResourceId::parse(HUB_RULE).unwrap(), "keyvault-audit");
        let parsed = crate::observe::wiring::diagnostic_setting(&setting);
        assert!(parsed.streams_audit(&AuditHub {
            rule_id: ArmResourceId::parse(&HUB_RULE.to_uppercase()).unwrap(),
            hub: "keyvault-audit".into(),
        }));
        assert_eq!(parsed.enabled_logs, ["AuditEvent"]);
    }

    #[test]
    fn describe_names_only_the_missing_writes() {
        let snapshot = unwired();
        assert_eq!(
            describe(&snapshot),
            format!(
                "would create an Event Grid system topic for {VAULT_ID}, PUT the event subscription cmk-guard on it (to {FUNCTION}), PUT the diagnostic setting cmk-guard-audit on {VAULT_ID} (AuditEvent to the Event Hub keyvault-audit)"
            )
        );
        let mut audit_only = unwired();
        if let Some(Read::Found(wiring)) = &mut audit_only.wiring {
            wiring.targets.events_target = None;
        }
        assert_eq!(
            describe(&audit_only),
            format!(
                "would PUT the diagnostic setting cmk-guard-audit on {VAULT_ID} (AuditEvent to the Event Hub keyvault-audit)"
            )
        );
        assert!(describe(&compliant_snapshot()).starts_with("would create"));
    }

    fn subscription(name: &str, to: &str) -> EventSubscription {
        EventSubscription {
            name: name.into(),
            endpoint_type: Some("AzureFunction".into()),
            resource_id: Some(to.into()),
            ..EventSubscription::default()
        }
    }

    fn setting(name: &str, rule: &str, others: &[&str]) -> DiagnosticSetting {
        DiagnosticSetting {
            name: name.into(),
            event_hub_authorization_rule_id: Some(rule.into()),
            event_hub_name: Some("keyvault-audit".into()),
            enabled_logs: Vec::new(),
            other_destinations: others.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn a_same_named_subscription_is_rewritten_only_when_it_is_cmk_guards() {
        let target = ArmResourceId::parse(FUNCTION).unwrap();
        let topic = |subscriptions: Vec<EventSubscription>| SystemTopic {
            id: "t".into(),
            name: "t".into(),
            subscriptions,
        };
        assert_eq!(
            subscription_name(None, &target).as_deref(),
            Some("cmk-guard")
        );
        let mut filtered = subscription("CMK-GUARD", &FUNCTION.to_lowercase());
        filtered.subject_filters = vec!["subjectBeginsWith /x".into()];
        assert_eq!(
            subscription_name(Some(&topic(vec![filtered])), &target).as_deref(),
            Some("cmk-guard"),
            "ours, only filtered: rewritten"
        );
        let elsewhere = subscription("cmk-guard", &format!("{FUNCTION}2"));
        assert_eq!(
            subscription_name(Some(&topic(vec![elsewhere.clone()])), &target).as_deref(),
            Some("cmk-guard-2")
        );
        let webhook = EventSubscription {
            name: "cmk-guard-2".into(),
            endpoint_type: Some("WebHook".into()),
            ..EventSubscription::default()
        };
        let ours_third = subscription("cmk-guard-3", FUNCTION);
        assert_eq!(
            subscription_name(
                Some(&topic(vec![elsewhere.clone(), webhook, ours_third])),
                &target
            )
            .as_deref(),
            Some("cmk-guard-3")
        );
        let all_taken: Vec<EventSubscription> = [
            "cmk-guard",
            "cmk-guard-2",
            "cmk-guard-3",
            "cmk-guard-4",
            "cmk-guard-5",
        ]
        .iter()
        .map(|n| subscription(n, "/elsewhere"))
        .collect();
        assert_eq!(subscription_name(Some(&topic(all_taken)), &target), None);
    }

    #[test]
    fn a_same_named_setting_is_rewritten_only_when_it_sends_only_to_cmk_guards_hub() {
        let hub = AuditHub {
            rule_id: ArmResourceId::parse(HUB_RULE).unwrap(),
            hub: "keyvault-audit".into(),
        };
        let disabled = setting("cmk-guard-audit", &HUB_RULE.to_uppercase(), &[]);
        assert_eq!(
            setting_name(&[disabled], &hub).as_deref(),
            Some("cmk-guard-audit")
        );
        let with_log_analytics = setting("cmk-guard-audit", HUB_RULE, &["workspaceId"]);
        let other_hub = setting("cmk-guard-audit-2", "/other/rule", &[]);
        assert_eq!(
            setting_name(&[with_log_analytics, other_hub], &hub).as_deref(),
            Some("cmk-guard-audit-3")
        );
        let all_taken: Vec<DiagnosticSetting> = (1..=NAMES)
            .map(|n| match n {
                1 => setting("cmk-guard-audit", "/other/rule", &[]),
                n => setting(&format!("CMK-GUARD-AUDIT-{n}"), "/other/rule", &[]),
            })
            .collect();
        assert_eq!(setting_name(&all_taken, &hub), None);
        let mut snapshot = unwired();
        if let Some(Read::Found(wiring)) = &mut snapshot.wiring {
            wiring.targets.events_target = None;
            wiring.diagnostic_settings = all_taken;
        }
        assert_eq!(
            describe(&snapshot),
            format!(
                "would write nothing: every diagnostic setting name cmk-guard may use on {VAULT_ID} is taken by one that sends elsewhere"
            )
        );
    }

    #[test]
    fn describe_names_the_free_name() {
        let mut snapshot = unwired();
        if let Some(Read::Found(wiring)) = &mut snapshot.wiring {
            wiring.targets.audit = None;
            wiring.topic = Some(SystemTopic {
                id: "/topic".into(),
                name: "topic".into(),
                subscriptions: vec![subscription("cmk-guard", "/elsewhere")],
            });
        }
        assert_eq!(
            describe(&snapshot),
            format!("would PUT the event subscription cmk-guard-2 on /topic (to {FUNCTION})")
        );
    }
}
