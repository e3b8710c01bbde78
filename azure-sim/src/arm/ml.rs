//! `Microsoft.MachineLearningServices/workspaces` and their online/batch endpoints. The only
//! encryption change PATCH accepts is `keyIdentifier`, and only to a key in the same vault
//! (azure-notes Trap T21, §3.3).

use super::{bad_body, check_registered, error, not_found, system_data};
use crate::events::{ResourceEventKind, resource_event};
use crate::http::{Ctx, Reply};
use crate::ids::eq_ci;
use crate::model::{Endpoint, Tenant, Workspace};
use serde_json::{Map, Value, json};

/// The workspace GET body.
pub(crate) fn workspace_json(w: &Workspace, tenant_id: &str) -> Value {
    let mut identity = Map::new();
    identity.insert("type".into(), json!(w.identity_type()));
    if let Some(p) = &w.system_principal_id {
        identity.insert("principalId".into(), json!(p));
        identity.insert("tenantId".into(), json!(tenant_id));
    }
    if !w.user_assigned.is_empty() {
        let map: Map<String, Value> = w
            .user_assigned
            .iter()
            .map(|u| {
                (
                    u.resource_id.clone(),
                    json!({"clientId": u.client_id, "principalId": u.principal_id}),
                )
            })
            .collect();
        identity.insert("userAssignedIdentities".into(), Value::Object(map));
    }
    let mut props = Map::new();
    props.insert("description".into(), json!(w.description));
    props.insert("friendlyName".into(), json!(w.friendly_name));
    props.insert("allowPublicAccessWhenBehindVnet".into(), json!(false));
    props.insert("applicationInsights".into(), json!(w.application_insights));
    props.insert("containerRegistry".into(), json!(w.container_registry));
    props.insert(
        "discoveryUrl".into(),
        json!(format!("https://{}.api.azureml.ms/discovery", w.location)),
    );
    if let Some(enc) = &w.encryption {
        let mut e = Map::new();
        e.insert("status".into(), json!(enc.status));
        if let Some(uai) = &enc.user_assigned_identity {
            e.insert("identity".into(), json!({"userAssignedIdentity": uai}));
        }
        e.insert(
            "keyVaultProperties".into(),
            json!({
                "identityClientId": "",
                "keyIdentifier": enc.key_identifier,
                "keyVaultArmId": enc.key_vault_arm_id,
            }),
        );
        props.insert("encryption".into(), Value::Object(e));
    }
    props.insert("hbiWorkspace".into(), json!(false));
    props.insert("keyVault".into(), json!(w.key_vault));
    props.insert("privateLinkCount".into(), json!(0));
    props.insert("privateEndpointConnections".into(), json!([]));
    props.insert("publicNetworkAccess".into(), json!(w.public_network_access));
    if let Some(rg) = &w.service_provisioned_resource_group {
        props.insert("serviceProvisionedResourceGroup".into(), json!(rg));
    }
    if let Some(p) = &w.primary_user_assigned_identity {
        props.insert("primaryUserAssignedIdentity".into(), json!(p));
    }
    props.insert("storageAccount".into(), json!(w.storage_account));
    props.insert("provisioningState".into(), json!("Succeeded"));
    props.insert("tenantId".into(), json!(tenant_id));
    props.insert("workspaceId".into(), json!(w.workspace_guid));
    json!({
        "id": w.id(),
        "name": w.name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "kind": w.kind,
        "location": w.location,
        "identity": identity,
        "sku": {"name": "Basic", "tier": "Basic"},
        "tags": w.tags,
        "systemData": system_data(w.updated, w.updated, &w.last_modified_by),
        "properties": props,
    })
}

fn find<'t>(tenant: &'t Tenant, ctx: &Ctx) -> Result<&'t Workspace, Reply> {
    let seg = |i: usize| ctx.segs.get(i).cloned().unwrap_or_default();
    let (sub, rg, name) = (seg(1), seg(3), seg(7));
    tenant
        .workspaces
        .iter()
        .find(|w| {
            // The name first: it tells most resources apart at once.
            eq_ci(&w.name, &name) && eq_ci(&w.resource_group, &rg) && eq_ci(&w.subscription, &sub)
        })
        .ok_or_else(|| not_found("Microsoft.MachineLearningServices/workspaces", &name, &rg))
}

/// `Workspaces_Get`.
pub(crate) fn get(ctx: &mut Ctx) -> Reply {
    let tenant = ctx.tenant();
    match find(&tenant, ctx) {
        Ok(w) => Reply::ok(workspace_json(w, &tenant.tenant_id)),
        Err(reply) => reply,
    }
}

/// `Workspaces_ListBySubscription` / `Workspaces_ListByResourceGroup`.
pub(crate) fn list(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let rg = ctx
        .seg_is(2, "resourceGroups")
        .then(|| ctx.segs.get(3).cloned().unwrap_or_default());
    let tenant = ctx.tenant();
    let listed: Vec<&Workspace> = tenant
        .workspaces
        .iter()
        .filter(|w| {
            eq_ci(&w.subscription, &sub)
                && rg.as_deref().is_none_or(|rg| eq_ci(&w.resource_group, rg))
        })
        .collect();
    super::management::paged_map(ctx, &listed, LIST_PAGE_SIZE, "2026-09-01", |w| {
        workspace_json(w, &tenant.tenant_id)
    })
}

/// Workspaces per page of `Workspaces_ListBySubscription` / `_ListByResourceGroup` (a stated
/// choice: ARM documents none).
pub const LIST_PAGE_SIZE: usize = 100;

/// Splits `https://{vault}.vault.azure.net[:443]/keys/{key}[/{version}]`.
pub(crate) fn parse_key_url(url: &str) -> Option<(String, String, Option<String>)> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next()?;
    let vault = host.strip_suffix(".vault.azure.net")?;
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [k, key] if k.eq_ignore_ascii_case("keys") => {
            Some((vault.to_owned(), (*key).to_owned(), None))
        }
        [k, key, version] if k.eq_ignore_ascii_case("keys") => Some((
            vault.to_owned(),
            (*key).to_owned(),
            Some((*version).to_owned()),
        )),
        _ => None,
    }
}

fn user_error(message: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": {"code": "UserError", "message": message, "details": []}}),
    )
}

/// `Workspaces_Update` (PATCH), answered synchronously with 200.
pub(crate) fn patch(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    if let Err(reply) = check_registered(ctx, &sub, "Microsoft.MachineLearningServices") {
        return reply;
    }
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    let mut tenant = ctx.tenant();
    let current = match find(&tenant, ctx) {
        Ok(w) => w.clone(),
        Err(reply) => return reply,
    };
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let new_key = props
        .get("encryption")
        .and_then(|e| e.get("keyVaultProperties"))
        .and_then(|k| k.get("keyIdentifier"));
    let mut key_identifier = None;
    if let Some(new_key) = new_key {
        let Some(url) = new_key.as_str().filter(|s| !s.is_empty()) else {
            return bad_body("keyIdentifier must be a non-empty string");
        };
        let Some(enc) = &current.encryption else {
            return user_error(
                "Customer-managed key encryption can only be configured when the workspace is created.",
            );
        };
        let Some((vault_name, key_name, version)) = parse_key_url(url) else {
            return user_error(&format!(
                "The key identifier '{url}' is not a valid Key Vault key URL."
            ));
        };
        let current_vault = crate::ids::ArmIdParts::parse(&enc.key_vault_arm_id)
            .map(|p| p.name().to_owned())
            .unwrap_or_default();
        if !eq_ci(&vault_name, &current_vault) {
            return user_error(
                "The customer-managed key can only be updated to another key in the same key vault that the workspace was created with.",
            );
        }
        let exists = tenant
            .vault(&vault_name)
            .and_then(|v| v.key(&key_name))
            .is_some_and(|k| version.as_deref().is_none_or(|v| k.version(v).is_some()));
        if !exists {
            return user_error(&format!(
                "The key '{url}' could not be found in key vault '{vault_name}'."
            ));
        }
        key_identifier = Some(url.to_owned());
    }
    let actor = ctx.actor(&tenant, &current.id());
    let tenant_id = tenant.tenant_id.clone();
    let asynchronous = tenant.async_workspace_updates;
    let now = ctx.now;
    let Some(w) = tenant
        .workspaces
        .iter_mut()
        .find(|w| eq_ci(&w.id(), &current.id()))
    else {
        return not_found(
            "Microsoft.MachineLearningServices/workspaces",
            &current.name,
            &current.resource_group,
        );
    };
    if let (Some(k), Some(enc)) = (key_identifier, w.encryption.as_mut()) {
        enc.key_identifier = k;
    }
    if let Some(d) = props.get("description").and_then(Value::as_str) {
        w.description = d.to_owned();
    }
    if let Some(f) = props.get("friendlyName").and_then(Value::as_str) {
        w.friendly_name = f.to_owned();
    }
    if let Some(p) = props.get("publicNetworkAccess").and_then(Value::as_str) {
        w.public_network_access = p.to_owned();
    }
    if let Some(p) = props
        .get("primaryUserAssignedIdentity")
        .and_then(Value::as_str)
    {
        w.primary_user_assigned_identity = Some(p.to_owned());
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        w.tags = tags.clone();
    }
    w.updated = now;
    w.last_modified_by = actor.object_id.clone();
    let mut reply = Reply::ok(workspace_json(w, &tenant_id));
    let id = w.id();
    if asynchronous {
        let operation = crate::ids::random_uuid();
        let location = format!(
            "https://management.azure.com/subscriptions/{}/providers/Microsoft.MachineLearningServices/locations/{}/workspaceOperationsStatus/{operation}?api-version={}&type=location",
            w.subscription,
            w.location,
            ctx.q("api-version").unwrap_or("2026-09-01")
        );
        crate::http::lock(&ctx.shared.operations).insert(operation, (id.clone(), 0));
        reply = Reply::empty(202)
            .with_header("Location", &location)
            .with_header("Retry-After", "1");
    }
    drop(tenant);
    ctx.emit(resource_event(
        ResourceEventKind::Write,
        &id,
        "Microsoft.MachineLearningServices/workspaces/write",
        &actor,
    ));
    reply
}

/// An online or batch endpoint (`kind`: `onlineEndpoints` / `batchEndpoints`) as ARM returns it.
pub(crate) fn endpoint_json(w: &Workspace, e: &Endpoint, kind: &str, tenant_id: &str) -> Value {
    let base = json!({
        "id": format!("{}/{kind}/{}", w.id(), e.name),
        "name": e.name,
        "type": format!("Microsoft.MachineLearningServices/workspaces/{kind}"),
        "kind": "Managed",
        "location": w.location,
        "identity": {"type": "SystemAssigned", "principalId": e.principal_id, "tenantId": tenant_id},
        "tags": {},
        "systemData": system_data(w.updated, w.updated, &w.last_modified_by),
    });
    let endpoint_id = format!("{}/{}", w.workspace_guid, e.name);
    let scoring = format!(
        "https://{}.{}.inference.ml.azure.com/score",
        e.name, w.location
    );
    let props = if kind == "onlineEndpoints" {
        json!({
            "description": "",
            "authMode": e.auth_mode,
            "properties": {"azureml.onlineendpointid": endpoint_id},
            "provisioningState": "Succeeded",
            "scoringUri": scoring,
            "swaggerUri": scoring.replace("/score", "/swagger.json"),
            "traffic": {"blue": 100},
        })
    } else {
        json!({
            "description": "",
            "authMode": "AADToken",
            "defaults": {"deploymentName": "default"},
            "properties": {"azureml.batchendpointid": endpoint_id},
            "provisioningState": "Succeeded",
            "scoringUri": scoring.replace("/score", "/jobs"),
            "swaggerUri": scoring.replace("/score", "/swagger.json"),
        })
    };
    let mut body = base;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("properties".into(), props);
    }
    body
}

fn list_endpoints(ctx: &mut Ctx, kind: &str) -> Reply {
    let tenant = ctx.tenant();
    let w = match find(&tenant, ctx) {
        Ok(w) => w,
        Err(reply) => return reply,
    };
    let list = if kind == "onlineEndpoints" {
        &w.online_endpoints
    } else {
        &w.batch_endpoints
    };
    let value: Vec<Value> = list
        .iter()
        .map(|e| endpoint_json(w, e, kind, &tenant.tenant_id))
        .collect();
    Reply::ok(json!({ "value": value }))
}

fn get_endpoint(ctx: &mut Ctx, kind: &str) -> Reply {
    let name = ctx.segs.get(9).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let w = match find(&tenant, ctx) {
        Ok(w) => w,
        Err(reply) => return reply,
    };
    let list = if kind == "onlineEndpoints" {
        &w.online_endpoints
    } else {
        &w.batch_endpoints
    };
    match list.iter().find(|e| eq_ci(&e.name, &name)) {
        Some(e) => Reply::ok(endpoint_json(w, e, kind, &tenant.tenant_id)),
        None => error(
            404,
            "UserError",
            &format!(
                "Could not find endpoint '{name}' in workspace '{}'.",
                w.name
            ),
        ),
    }
}

/// `OnlineEndpoints_List`.
pub(crate) fn list_online(ctx: &mut Ctx) -> Reply {
    list_endpoints(ctx, "onlineEndpoints")
}

/// `BatchEndpoints_List`.
pub(crate) fn list_batch(ctx: &mut Ctx) -> Reply {
    list_endpoints(ctx, "batchEndpoints")
}

/// `OnlineEndpoints_Get`.
pub(crate) fn get_online(ctx: &mut Ctx) -> Reply {
    get_endpoint(ctx, "onlineEndpoints")
}

/// `BatchEndpoints_Get`.
pub(crate) fn get_batch(ctx: &mut Ctx) -> Reply {
    get_endpoint(ctx, "batchEndpoints")
}

/// `GET …/locations/{loc}/workspaceOperationsStatus/{id}` (the `Location` of an async PATCH):
/// 202 on the first poll, then 200 with the workspace, as azure-notes §6.3 describes.
pub(crate) fn operation_status(ctx: &mut Ctx) -> Reply {
    let id = ctx.segs.get(7).cloned().unwrap_or_default();
    let resource = {
        let mut operations = crate::http::lock(&ctx.shared.operations);
        match operations.get_mut(&id) {
            Some((resource, polls)) => {
                *polls += 1;
                if *polls == 1 {
                    return Reply::empty(202).with_header("Retry-After", "1");
                }
                resource.clone()
            }
            None => return error(404, "NotFound", &format!("Operation '{id}' was not found.")),
        }
    };
    let tenant = ctx.tenant();
    match tenant.workspaces.iter().find(|w| eq_ci(&w.id(), &resource)) {
        Some(w) => Reply::ok(workspace_json(w, &tenant.tenant_id)),
        None => Reply::empty(204),
    }
}
