//! Event Grid system topics and their event subscriptions (api-version 2022-06-15), and
//! diagnostic settings on any resource (`Microsoft.Insights`, 2021-05-01-preview): what a
//! vault's self-wiring reads and writes. Shapes follow the REST examples
//! `SystemTopics_Get`, `SystemTopicEventSubscriptions_CreateOrUpdate` and
//! `DiagnosticSettings_CreateOrUpdate`. Like Azure, a source has at most one system topic: a
//! second one for the same source, under any name, answers 400.
//!
//! Resources are kept as the JSON Azure would answer with (`GenericResource`), built from the
//! request's properties at PUT. An event subscription keeps its `filter` whole (subject and
//! advanced filters included), its `expirationTimeUtc`, and a `provisioningState` given in the
//! body (Azure would set that itself; the simulator lets a story seed a failed one).
//!
//! Linked resources are authorised like Azure does (403 `LinkedAuthorizationFailed`): an event
//! subscription needs `Microsoft.EventGrid/eventSubscriptions/write` on the topic's source and
//! `Microsoft.Web/sites/functions/write` on an `AzureFunction` destination; a diagnostic
//! setting streaming to an event hub needs `…/authorizationRules/listkeys/action` on the rule.

use super::{authorize_linked, bad_body, error};
use crate::http::{Ctx, Reply};
use crate::ids::eq_ci;
use crate::model::{GenericResource, Tenant};
use serde_json::{Map, Value, json};

/// The event types a wired vault's scenario subscription delivers (cmk-guard's own).
pub const WIRED_EVENT_TYPES: &[&str] = &[
    "Microsoft.KeyVault.KeyNewVersionCreated",
    "Microsoft.KeyVault.KeyNearExpiry",
    "Microsoft.KeyVault.KeyExpired",
    "Microsoft.KeyVault.VaultAccessPolicyChanged",
];

fn path(ctx: &Ctx) -> String {
    format!("/{}", ctx.segs.join("/"))
}

fn items_under(resources: &[GenericResource], parent: &str, child_type: &str) -> Vec<Value> {
    let prefix = format!("{parent}/{child_type}/").to_ascii_lowercase();
    resources
        .iter()
        .filter(|r| {
            let id = r.id.to_ascii_lowercase();
            id.starts_with(&prefix) && !id[prefix.len()..].contains('/')
        })
        .map(|r| r.body.clone())
        .collect()
}

fn find<'a>(resources: &'a [GenericResource], id: &str) -> Option<&'a GenericResource> {
    resources.iter().find(|r| eq_ci(&r.id, id))
}

fn upsert(resources: &mut Vec<GenericResource>, id: &str, body: Value) -> bool {
    match resources.iter_mut().find(|r| eq_ci(&r.id, id)) {
        Some(existing) => {
            existing.body = body;
            false
        }
        None => {
            resources.push(GenericResource {
                id: id.to_owned(),
                body,
            });
            true
        }
    }
}

fn saved(created: bool, body: Value) -> Reply {
    Reply::json(if created { 201 } else { 200 }, body)
}

fn properties(ctx: &Ctx) -> Result<(Value, Map<String, Value>), Reply> {
    let body = ctx.json().map_err(|e| bad_body(&e))?;
    let properties = match body.get("properties") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(bad_body("properties must be an object")),
    };
    Ok((body, properties))
}

fn not_found(kind: &str, id: &str) -> Reply {
    error(
        404,
        "ResourceNotFound",
        &format!("The {kind} '{id}' was not found."),
    )
}

/// The JSON of a system topic, as `SystemTopics_Get` answers.
pub(crate) fn system_topic_json(id: &str, location: &str, source: &str, topic_type: &str) -> Value {
    json!({
        "properties": {
            "provisioningState": "Succeeded",
            "source": source,
            "topicType": topic_type,
            "metricResourceId": crate::ids::stable_uuid(&format!("metric {}", id.to_ascii_lowercase())),
        },
        "location": location,
        "tags": null,
        "id": id,
        "name": id.rsplit('/').next().unwrap_or_default(),
        "type": "Microsoft.EventGrid/systemTopics",
    })
}

/// The JSON of an event subscription on a system topic delivering to an Azure Function.
pub(crate) fn function_subscription_json(
    topic: &str,
    name: &str,
    function: &str,
    types: &[&str],
) -> Value {
    let destination = json!({
        "endpointType": "AzureFunction",
        "properties": {"resourceId": function, "maxEventsPerBatch": 1, "preferredBatchSizeInKilobytes": 64}
    });
    let filter = json!({"includedEventTypes": types, "isSubjectCaseSensitive": false});
    subscription_json(topic, name, destination, filter)
}

fn subscription_json(topic: &str, name: &str, destination: Value, filter: Value) -> Value {
    json!({
        "properties": {
            "destination": destination,
            "filter": filter,
            "labels": null,
            "eventDeliverySchema": "EventGridSchema",
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
            "provisioningState": "Succeeded",
            "topic": topic,
        },
        "id": format!("{topic}/eventSubscriptions/{name}"),
        "name": name,
        "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions",
    })
}

/// The JSON of a diagnostic setting, as `DiagnosticSettings_CreateOrUpdate` answers.
pub(crate) fn diagnostic_setting_json(
    resource: &str,
    name: &str,
    properties: Map<String, Value>,
) -> Value {
    json!({
        "id": format!("{resource}/providers/microsoft.insights/diagnosticSettings/{name}"),
        "type": "Microsoft.Insights/diagnosticSettings",
        "name": name,
        "properties": properties,
    })
}

/// Adds a vault's wiring to cmk-guard to the tenant (scenarios): a system topic named
/// `{vault}-events` in the vault's group, with an event subscription `cmk-guard` to
/// `events_target`, and a diagnostic setting `cmk-guard-audit` streaming `AuditEvent` to the hub.
pub(crate) fn wire(
    tenant: &mut Tenant,
    vault_id: &str,
    location: &str,
    events_target: Option<&str>,
    audit: Option<(&str, &str)>,
) {
    if let Some(function) = events_target {
        let (prefix, name) = vault_id
            .rsplit_once("/providers/")
            .unwrap_or((vault_id, ""));
        let vault_name = name.rsplit('/').next().unwrap_or_default();
        let topic =
            format!("{prefix}/providers/Microsoft.EventGrid/systemTopics/{vault_name}-events");
        let body = system_topic_json(&topic, location, vault_id, "Microsoft.KeyVault.vaults");
        upsert(&mut tenant.system_topics, &topic, body);
        let body = function_subscription_json(&topic, "cmk-guard", function, WIRED_EVENT_TYPES);
        upsert(
            &mut tenant.event_subscriptions,
            &format!("{topic}/eventSubscriptions/cmk-guard"),
            body,
        );
    }
    if let Some((rule, hub)) = audit {
        let mut properties = Map::new();
        properties.insert("eventHubAuthorizationRuleId".into(), json!(rule));
        properties.insert("eventHubName".into(), json!(hub));
        properties.insert("logs".into(), json!([{"category": "AuditEvent", "enabled": true, "retentionPolicy": {"enabled": false, "days": 0}}]));
        properties.insert("metrics".into(), json!([]));
        let body = diagnostic_setting_json(vault_id, "cmk-guard-audit", properties);
        let id =
            format!("{vault_id}/providers/microsoft.insights/diagnosticSettings/cmk-guard-audit");
        upsert(&mut tenant.diagnostic_settings, &id, body);
    }
}

/// `SystemTopics_ListBySubscription` / `SystemTopics_ListByResourceGroup`.
pub(crate) fn list_topics(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let rg = ctx
        .seg_is(2, "resourceGroups")
        .then(|| ctx.segs.get(3).cloned().unwrap_or_default());
    let prefix = match &rg {
        Some(rg) => format!("/subscriptions/{sub}/resourcegroups/{rg}/"),
        None => format!("/subscriptions/{sub}/"),
    }
    .to_ascii_lowercase();
    let tenant = ctx.tenant();
    let value: Vec<Value> = tenant
        .system_topics
        .iter()
        .filter(|t| t.id.to_ascii_lowercase().starts_with(&prefix))
        .map(|t| t.body.clone())
        .collect();
    Reply::ok(json!({ "value": value }))
}

/// `SystemTopics_Get`.
pub(crate) fn get_topic(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let tenant = ctx.tenant();
    match find(&tenant.system_topics, &id) {
        Some(topic) => Reply::ok(topic.body.clone()),
        None => not_found("system topic", &id),
    }
}

/// `SystemTopics_CreateOrUpdate`: the source must exist, and may have no other system topic.
pub(crate) fn put_topic(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let (body, properties) = match properties(ctx) {
        Ok(parts) => parts,
        Err(reply) => return reply,
    };
    let text = |key: &str| {
        properties
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (source, topic_type) = (text("source"), text("topicType"));
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if source.is_empty() || topic_type.is_empty() || location.is_empty() {
        return bad_body("location, properties.source and properties.topicType are required");
    }
    let mut tenant = ctx.tenant();
    if topic_type.eq_ignore_ascii_case("Microsoft.KeyVault.vaults")
        && tenant.vault_by_id(&source).is_none()
    {
        return error(
            400,
            "InvalidRequest",
            &format!("The source resource '{source}' does not exist."),
        );
    }
    let other = tenant.system_topics.iter().find(|t| {
        !eq_ci(&t.id, &id)
            && t.body
                .pointer("/properties/source")
                .and_then(Value::as_str)
                .is_some_and(|s| eq_ci(s, &source))
    });
    if let Some(other) = other {
        return error(
            400,
            "InvalidRequest",
            &format!(
                "Only one system topic is allowed per source. A system topic '{}' already exists for source '{source}'.",
                other.id
            ),
        );
    }
    let json = system_topic_json(&id, location, &source, &topic_type);
    let created = upsert(&mut tenant.system_topics, &id, json.clone());
    saved(created, json)
}

/// `SystemTopics_Delete`: the topic and its event subscriptions.
pub(crate) fn delete_topic(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let mut tenant = ctx.tenant();
    let before = tenant.system_topics.len();
    tenant.system_topics.retain(|t| !eq_ci(&t.id, &id));
    if tenant.system_topics.len() == before {
        return Reply::empty(204);
    }
    let prefix = format!("{}/", id.to_ascii_lowercase());
    tenant
        .event_subscriptions
        .retain(|s| !s.id.to_ascii_lowercase().starts_with(&prefix));
    Reply::empty(200)
}

/// The system topic an event subscription request is under (`…/systemTopics/{t}`).
fn topic_of(ctx: &Ctx) -> String {
    let n = ctx
        .segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("eventSubscriptions"))
        .unwrap_or(ctx.segs.len());
    format!("/{}", ctx.segs[..n].join("/"))
}

/// `SystemTopicEventSubscriptions_ListBySystemTopic`.
pub(crate) fn list_subscriptions(ctx: &mut Ctx) -> Reply {
    let topic = topic_of(ctx);
    let tenant = ctx.tenant();
    if find(&tenant.system_topics, &topic).is_none() {
        return not_found("system topic", &topic);
    }
    let value = items_under(&tenant.event_subscriptions, &topic, "eventSubscriptions");
    Reply::ok(json!({ "value": value }))
}

/// `SystemTopicEventSubscriptions_Get`.
pub(crate) fn get_subscription(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let tenant = ctx.tenant();
    match find(&tenant.event_subscriptions, &id) {
        Some(subscription) => Reply::ok(subscription.body.clone()),
        None => not_found("event subscription", &id),
    }
}

/// `SystemTopicEventSubscriptions_CreateOrUpdate`: on an existing topic, with a destination.
pub(crate) fn put_subscription(ctx: &mut Ctx) -> Reply {
    let topic = topic_of(ctx);
    let name = ctx.segs.last().cloned().unwrap_or_default();
    let (_, properties) = match properties(ctx) {
        Ok(parts) => parts,
        Err(reply) => return reply,
    };
    let Some(destination) = properties
        .get("destination")
        .filter(|d| d.is_object())
        .cloned()
    else {
        return bad_body("properties.destination is required");
    };
    if destination
        .get("endpointType")
        .and_then(Value::as_str)
        .is_none()
    {
        return bad_body("properties.destination.endpointType is required");
    }
    let filter = properties
        .get("filter")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Err(reply) = authorize_subscription_links(ctx, &topic, &destination) {
        return reply;
    }
    let mut tenant = ctx.tenant();
    let Some(topic_id) = find(&tenant.system_topics, &topic).map(|t| t.id.clone()) else {
        return not_found("system topic", &topic);
    };
    let mut json = subscription_json(&topic_id, &name, destination, filter);
    // Kept as given, so a story can seed a subscription that delivers nothing: the expiry, and
    // (a liberty: Azure sets it) a provisioning state other than `Succeeded`.
    for key in ["expirationTimeUtc", "provisioningState"] {
        if let Some(value) = properties.get(key).filter(|v| !v.is_null()) {
            json["properties"][key] = value.clone();
        }
    }
    let id = format!("{topic_id}/eventSubscriptions/{name}");
    let created = upsert(&mut tenant.event_subscriptions, &id, json.clone());
    saved(created, json)
}

/// Event Grid's checks beyond the event subscription itself ("Permissions for event
/// subscriptions"): `Microsoft.EventGrid/eventSubscriptions/write` on the topic's source, and
/// write access to an `AzureFunction` destination (checked as
/// `Microsoft.Web/sites/functions/write` on the function).
fn authorize_subscription_links(ctx: &Ctx, topic: &str, destination: &Value) -> Result<(), Reply> {
    let source = {
        let tenant = ctx.tenant();
        find(&tenant.system_topics, topic)
            .and_then(|t| t.body["properties"]["source"].as_str().map(str::to_owned))
    };
    if let Some(source) = source {
        authorize_linked(ctx, "Microsoft.EventGrid/eventSubscriptions/write", &source)?;
    }
    let function = destination
        .get("endpointType")
        .and_then(Value::as_str)
        .filter(|t| t.eq_ignore_ascii_case("AzureFunction"))
        .and_then(|_| destination["properties"]["resourceId"].as_str());
    if let Some(function) = function {
        authorize_linked(ctx, "Microsoft.Web/sites/functions/write", function)?;
    }
    Ok(())
}

/// `SystemTopicEventSubscriptions_Delete`.
pub(crate) fn delete_subscription(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let mut tenant = ctx.tenant();
    let before = tenant.event_subscriptions.len();
    tenant.event_subscriptions.retain(|s| !eq_ci(&s.id, &id));
    Reply::empty(if tenant.event_subscriptions.len() == before {
        204
    } else {
        200
    })
}

/// The resource a diagnostic setting request is about (before `/providers/microsoft.insights`).
fn resource_of(ctx: &Ctx) -> String {
    let n = ctx
        .segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .unwrap_or(0);
    format!("/{}", ctx.segs[..n].join("/"))
}

/// 404 when the resource is a key vault that does not exist (other resources are not modelled).
fn check_resource(tenant: &Tenant, resource: &str) -> Result<(), Reply> {
    let is_vault = resource
        .to_ascii_lowercase()
        .contains("/providers/microsoft.keyvault/vaults/");
    if is_vault && tenant.vault_by_id(resource).is_none() {
        return Err(not_found("resource", resource));
    }
    Ok(())
}

/// `DiagnosticSettings_List`.
pub(crate) fn list_settings(ctx: &mut Ctx) -> Reply {
    let resource = resource_of(ctx);
    let tenant = ctx.tenant();
    if let Err(reply) = check_resource(&tenant, &resource) {
        return reply;
    }
    let value = items_under(
        &tenant.diagnostic_settings,
        &format!("{resource}/providers/microsoft.insights"),
        "diagnosticSettings",
    );
    Reply::ok(json!({ "value": value }))
}

/// `DiagnosticSettings_Get`.
pub(crate) fn get_setting(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let tenant = ctx.tenant();
    match find(&tenant.diagnostic_settings, &id) {
        Some(setting) => Reply::ok(setting.body.clone()),
        None => not_found("diagnostic setting", &id),
    }
}

/// `DiagnosticSettings_CreateOrUpdate`: needs a destination; log entries need `enabled`.
pub(crate) fn put_setting(ctx: &mut Ctx) -> Reply {
    let resource = resource_of(ctx);
    let id = path(ctx);
    let name = ctx.segs.last().cloned().unwrap_or_default();
    let (_, properties) = match properties(ctx) {
        Ok(parts) => parts,
        Err(reply) => return reply,
    };
    let has = |key: &str| {
        properties
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if ![
        "eventHubAuthorizationRuleId",
        "workspaceId",
        "storageAccountId",
        "marketplacePartnerId",
    ]
    .iter()
    .any(|key| has(key))
    {
        return error(
            400,
            "BadRequest",
            "At least one destination (storage account, Log Analytics workspace, event hub or partner) is required.",
        );
    }
    let logs_ok = match properties.get("logs") {
        None | Some(Value::Null) => true,
        Some(Value::Array(logs)) => logs
            .iter()
            .all(|l| l.get("enabled").is_some_and(Value::is_boolean)),
        Some(_) => false,
    };
    if !logs_ok {
        return bad_body("logs must be a list of entries with a boolean `enabled`");
    }
    // Azure Monitor lets only a caller who can list the rule's keys stream to it.
    if let Some(rule) = properties
        .get("eventHubAuthorizationRuleId")
        .and_then(Value::as_str)
        && let Err(reply) = authorize_linked(
            ctx,
            "Microsoft.EventHub/namespaces/authorizationRules/listkeys/action",
            rule,
        )
    {
        return reply;
    }
    let mut tenant = ctx.tenant();
    if let Err(reply) = check_resource(&tenant, &resource) {
        return reply;
    }
    let json = diagnostic_setting_json(&resource, &name, properties);
    upsert(&mut tenant.diagnostic_settings, &id, json.clone());
    Reply::ok(json)
}

/// `DiagnosticSettings_Delete`.
pub(crate) fn delete_setting(ctx: &mut Ctx) -> Reply {
    let id = path(ctx);
    let mut tenant = ctx.tenant();
    let before = tenant.diagnostic_settings.len();
    tenant.diagnostic_settings.retain(|s| !eq_ci(&s.id, &id));
    Reply::empty(if tenant.diagnostic_settings.len() == before {
        204
    } else {
        200
    })
}
