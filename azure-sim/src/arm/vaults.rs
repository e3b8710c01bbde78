//! `Microsoft.KeyVault/vaults`, its access policies, deleted vaults and the ARM view of keys. PATCH
//! merges (azure-notes Trap T7) and refuses `enablePurgeProtection: false` and turning soft delete
//! off, as the service does (azure-notes Trap T5, T6).

use super::{bad_body, check_registered, error, not_found, system_data};
use crate::clock::rfc3339;
use crate::events::{KeyVaultEvent, ResourceEventKind, resource_event};
use crate::http::{Ctx, Reply};
use crate::ids::eq_ci;
use crate::model::{AccessPolicy, Key, KeyVersion, Vault};
use serde_json::{Map, Value, json};

/// The vault GET body.
pub(crate) fn vault_json(v: &Vault) -> Value {
    let mut props = Map::new();
    props.insert("tenantId".into(), json!(v.tenant_id));
    props.insert("sku".into(), json!({"family": "A", "name": v.sku}));
    props.insert(
        "accessPolicies".into(),
        Value::Array(v.access_policies.iter().map(access_policy_json).collect()),
    );
    props.insert("enabledForDeployment".into(), json!(false));
    props.insert("enabledForDiskEncryption".into(), json!(false));
    props.insert("enabledForTemplateDeployment".into(), json!(false));
    if let Some(x) = v.enable_soft_delete {
        props.insert("enableSoftDelete".into(), json!(x));
    }
    if let Some(x) = v.soft_delete_retention_days {
        props.insert("softDeleteRetentionInDays".into(), json!(x));
    }
    if let Some(x) = v.enable_rbac_authorization {
        props.insert("enableRbacAuthorization".into(), json!(x));
    }
    if let Some(x) = v.enable_purge_protection {
        props.insert("enablePurgeProtection".into(), json!(x));
    }
    if let Some(acls) = &v.network_acls {
        props.insert("networkAcls".into(), acls.clone());
    }
    props.insert("vaultUri".into(), json!(v.uri()));
    props.insert("provisioningState".into(), json!("Succeeded"));
    props.insert("publicNetworkAccess".into(), json!(v.public_network_access));
    json!({
        "id": v.id(),
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "tags": v.tags,
        "systemData": system_data(v.created, v.updated, &v.last_modified_by),
        "properties": props,
    })
}

/// One access policy entry as ARM shows it.
pub(crate) fn access_policy_json(p: &AccessPolicy) -> Value {
    let mut entry = json!({
        "tenantId": p.tenant_id,
        "objectId": p.object_id,
        "permissions": {
            "keys": p.keys,
            "secrets": p.secrets,
            "certificates": p.certificates,
        }
    });
    if let (Some(app), Some(obj)) = (&p.application_id, entry.as_object_mut()) {
        obj.insert("applicationId".into(), json!(app));
    }
    entry
}

/// (subscription, resource group, vault name) from the request path.
fn path_vault(ctx: &Ctx) -> (String, String, String) {
    let seg = |i: usize| ctx.segs.get(i).cloned().unwrap_or_default();
    (seg(1), seg(3), seg(7))
}

fn find<'t>(tenant: &'t crate::model::Tenant, ctx: &Ctx) -> Result<&'t Vault, Reply> {
    let (sub, rg, name) = path_vault(ctx);
    tenant
        .vaults
        .iter()
        .find(|v| {
            // The name first: it tells most resources apart at once.
            eq_ci(&v.name, &name) && eq_ci(&v.resource_group, &rg) && eq_ci(&v.subscription, &sub)
        })
        .ok_or_else(|| not_found("Microsoft.KeyVault/vaults", &name, &rg))
}

/// `Vaults_Get`.
pub(crate) fn get(ctx: &mut Ctx) -> Reply {
    let tenant = ctx.tenant();
    match find(&tenant, ctx) {
        Ok(v) => Reply::ok(vault_json(v)),
        Err(reply) => reply,
    }
}

/// `Vaults_ListBySubscription` / `Vaults_ListByResourceGroup`.
pub(crate) fn list(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let rg = ctx
        .seg_is(2, "resourceGroups")
        .then(|| ctx.segs.get(3).cloned().unwrap_or_default());
    let tenant = ctx.tenant();
    let listed: Vec<&Vault> = tenant
        .vaults
        .iter()
        .filter(|v| {
            eq_ci(&v.subscription, &sub)
                && rg.as_deref().is_none_or(|rg| eq_ci(&v.resource_group, rg))
        })
        .collect();
    super::management::paged_map(ctx, &listed, LIST_PAGE_SIZE, "2026-02-01", |v| {
        vault_json(v)
    })
}

/// Items per page of the vault and key lists (a stated choice: `$top` is optional and ARM
/// documents no default).
pub const LIST_PAGE_SIZE: usize = 100;

fn bool_field(props: &Map<String, Value>, name: &str) -> Result<Option<bool>, Reply> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad_body(&format!("{name} must be a boolean, got {other}"))),
    }
}

/// `Vaults_Update` (PATCH): merge semantics; `accessPolicies`, when present, replaces the list.
pub(crate) fn patch(ctx: &mut Ctx) -> Reply {
    let (sub, _, _) = path_vault(ctx);
    if let Err(reply) = check_registered(ctx, &sub, "Microsoft.KeyVault") {
        return reply;
    }
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    let empty = Map::new();
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let result = (|| -> Result<Reply, Reply> {
        let purge = bool_field(props, "enablePurgeProtection")?;
        let soft = bool_field(props, "enableSoftDelete")?;
        let rbac = bool_field(props, "enableRbacAuthorization")?;
        let mut tenant = ctx.tenant();
        let vault_id = find(&tenant, ctx)?.id();
        let current = find(&tenant, ctx)?.clone();
        if purge == Some(false) {
            return Err(error(
                400,
                "BadRequest",
                "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action.",
            ));
        }
        let soft_now = current.enable_soft_delete.unwrap_or(true);
        if soft == Some(false) && soft_now {
            return Err(error(
                400,
                "BadRequest",
                "The property \"enableSoftDelete\" cannot be set to false. Enabling the soft delete for a vault is an irreversible action.",
            ));
        }
        if purge == Some(true) && !soft.unwrap_or(soft_now) {
            return Err(error(
                400,
                "BadRequest",
                "Purge protection can only be enabled on a vault with soft delete enabled.",
            ));
        }
        let retention = match props.get("softDeleteRetentionInDays") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(d) if (7..=90).contains(&d) => Some(d as u32),
                _ => {
                    return Err(bad_body(
                        "softDeleteRetentionInDays must be an integer between 7 and 90",
                    ));
                }
            },
        };
        if let (Some(new), Some(old)) = (retention, current.soft_delete_retention_days)
            && new != old
        {
            return Err(error(
                400,
                "BadRequest",
                "The property \"softDeleteRetentionInDays\" cannot be changed once soft delete is enabled.",
            ));
        }
        let policies = match props.get("accessPolicies") {
            None | Some(Value::Null) => None,
            Some(list) => Some(parse_policies(list, &current.tenant_id)?),
        };
        let actor = ctx.actor(&tenant, &vault_id);
        let now = ctx.now;
        let Some(vault) = tenant.vaults.iter_mut().find(|v| eq_ci(&v.id(), &vault_id)) else {
            return Err(not_found(
                "Microsoft.KeyVault/vaults",
                &current.name,
                &current.resource_group,
            ));
        };
        if purge == Some(true) {
            vault.enable_purge_protection = Some(true);
        }
        if soft == Some(true) {
            vault.enable_soft_delete = Some(true);
        }
        if let Some(r) = rbac {
            vault.enable_rbac_authorization = Some(r);
        }
        if let Some(r) = retention {
            vault.soft_delete_retention_days = Some(r);
        }
        if let Some(p) = props.get("publicNetworkAccess").and_then(Value::as_str) {
            vault.public_network_access = p.to_owned();
        }
        if let Some(acls) = props.get("networkAcls").filter(|v| !v.is_null()) {
            vault.network_acls = Some(acls.clone());
        }
        if let Some(sku) = props
            .get("sku")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
        {
            vault.sku = sku.to_owned();
        }
        if let Some(policies) = policies {
            vault.access_policies = policies;
        }
        if let Some(tags) = body.get("tags").and_then(Value::as_object) {
            vault.tags = tags.clone();
        }
        vault.updated = now;
        vault.last_modified_by = actor.object_id.clone();
        let reply = Reply::ok(vault_json(vault));
        drop(tenant);
        ctx.emit(resource_event(
            ResourceEventKind::Write,
            &vault_id,
            "Microsoft.KeyVault/vaults/write",
            &actor,
        ));
        crate::audit::arm_vault_write(ctx, &vault_id, &current.name, "VaultPatch");
        Ok(reply)
    })();
    result.unwrap_or_else(|reply| reply)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_policies(list: &Value, default_tenant: &str) -> Result<Vec<AccessPolicy>, Reply> {
    let items = list
        .as_array()
        .ok_or_else(|| bad_body("accessPolicies must be an array"))?;
    items
        .iter()
        .map(|item| {
            let object_id = item
                .get("objectId")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_body("accessPolicies[].objectId is required"))?;
            let permissions = item.get("permissions");
            Ok(AccessPolicy {
                tenant_id: item
                    .get("tenantId")
                    .and_then(Value::as_str)
                    .unwrap_or(default_tenant)
                    .to_owned(),
                object_id: object_id.to_owned(),
                application_id: item
                    .get("applicationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                keys: strings(permissions.and_then(|p| p.get("keys"))),
                secrets: strings(permissions.and_then(|p| p.get("secrets"))),
                certificates: strings(permissions.and_then(|p| p.get("certificates"))),
            })
        })
        .collect()
}

fn merge(into: &mut Vec<String>, add: &[String]) {
    for p in add {
        if !into.iter().any(|x| eq_ci(x, p)) {
            into.push(p.clone());
        }
    }
}

fn subtract(from: &mut Vec<String>, remove: &[String]) {
    from.retain(|x| !remove.iter().any(|r| eq_ci(r, x)));
}

/// `Vaults_UpdateAccessPolicy` (`PUT …/accessPolicies/{add|replace|remove}`).
pub(crate) fn update_access_policy(ctx: &mut Ctx) -> Reply {
    let (sub, _, _) = path_vault(ctx);
    if let Err(reply) = check_registered(ctx, &sub, "Microsoft.KeyVault") {
        return reply;
    }
    let kind = ctx
        .segs
        .get(9)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(kind.as_str(), "add" | "replace" | "remove") {
        return error(
            400,
            "BadRequest",
            &format!(
                "The operation kind '{kind}' is invalid. Valid values are add, replace, remove."
            ),
        );
    }
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    let mut tenant = ctx.tenant();
    let vault = match find(&tenant, ctx) {
        Ok(v) => v.clone(),
        Err(reply) => return reply,
    };
    let list = body
        .get("properties")
        .and_then(|p| p.get("accessPolicies"))
        .cloned()
        .unwrap_or(Value::Null);
    let entries = match parse_policies(&list, &vault.tenant_id) {
        Ok(e) => e,
        Err(reply) => return reply,
    };
    let actor = ctx.actor(&tenant, &vault.id());
    let now = ctx.now;
    let Some(target) = tenant
        .vaults
        .iter_mut()
        .find(|v| eq_ci(&v.id(), &vault.id()))
    else {
        return not_found(
            "Microsoft.KeyVault/vaults",
            &vault.name,
            &vault.resource_group,
        );
    };
    for entry in &entries {
        let existing = target.access_policies.iter_mut().find(|p| {
            eq_ci(&p.object_id, &entry.object_id)
                && eq_ci(&p.tenant_id, &entry.tenant_id)
                && p.application_id.as_deref().map(str::to_ascii_lowercase)
                    == entry.application_id.as_deref().map(str::to_ascii_lowercase)
        });
        match (kind.as_str(), existing) {
            ("add", Some(p)) => {
                merge(&mut p.keys, &entry.keys);
                merge(&mut p.secrets, &entry.secrets);
                merge(&mut p.certificates, &entry.certificates);
            }
            ("replace", Some(p)) => *p = entry.clone(),
            ("remove", Some(p)) => {
                subtract(&mut p.keys, &entry.keys);
                subtract(&mut p.secrets, &entry.secrets);
                subtract(&mut p.certificates, &entry.certificates);
            }
            ("remove", None) => {}
            (_, None) => target.access_policies.push(entry.clone()),
            _ => {}
        }
    }
    target
        .access_policies
        .retain(|p| !(p.keys.is_empty() && p.secrets.is_empty() && p.certificates.is_empty()));
    target.updated = now;
    target.last_modified_by = actor.object_id.clone();
    drop(tenant);
    let vault_id = vault.id();
    let policy_uri = format!("{vault_id}/accessPolicies/{kind}");
    ctx.emit(resource_event(
        ResourceEventKind::Write,
        &policy_uri,
        "Microsoft.KeyVault/vaults/accessPolicies/write",
        &actor,
    ));
    let vault_uri = format!("{}/", vault.uri());
    ctx.emit(
        KeyVaultEvent {
            event: "VaultAccessPolicyChanged",
            vault_id: &vault_id,
            vault_name: &vault.name,
            object_type: "Vault",
            object_name: &vault.name,
            id: &vault_uri,
            version: None,
            nbf: None,
            exp: None,
        }
        .to_json(),
    );
    // Key Vault logs an access-policy change as `VaultPatch`, then the Event Grid
    // notification it publishes.
    crate::audit::arm_vault_write(ctx, &vault_id, &vault.name, "VaultPatch");
    crate::audit::access_policy_notification(ctx.shared, &vault_id, &vault.name);
    Reply::ok(json!({
        "id": format!("{vault_id}/accessPolicies/"),
        "type": "Microsoft.KeyVault/vaults/accessPolicies",
        "properties": {"accessPolicies": entries.iter().map(access_policy_json).collect::<Vec<_>>()},
    }))
}

fn deleted_json(d: &crate::model::DeletedVault) -> Value {
    let v = &d.vault;
    json!({
        "id": format!("/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}", v.subscription, v.location, v.name),
        "name": v.name,
        "type": "Microsoft.KeyVault/deletedVaults",
        "properties": {
            "vaultId": v.id(),
            "location": v.location,
            "deletionDate": rfc3339(d.deletion_date),
            "scheduledPurgeDate": rfc3339(d.scheduled_purge_date),
            "tags": v.tags,
            "purgeProtectionEnabled": v.enable_purge_protection.unwrap_or(false),
        }
    })
}

/// `Vaults_GetDeleted`.
pub(crate) fn get_deleted(ctx: &mut Ctx) -> Reply {
    let seg = |i: usize| ctx.segs.get(i).cloned().unwrap_or_default();
    let (sub, location, name) = (seg(1), seg(5), seg(7));
    let tenant = ctx.tenant();
    tenant
        .deleted_vaults
        .iter()
        .find(|d| {
            eq_ci(&d.vault.subscription, &sub) && eq_ci(&d.vault.location, &location) && eq_ci(&d.vault.name, &name)
        })
        .map(|d| Reply::ok(deleted_json(d)))
        .unwrap_or_else(|| {
            error(
                404,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.KeyVault/deletedVaults/{name}' was not found in location '{location}'."),
            )
        })
}

/// `Vaults_ListDeleted`.
pub(crate) fn list_deleted(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let value: Vec<Value> = tenant
        .deleted_vaults
        .iter()
        .filter(|d| eq_ci(&d.vault.subscription, &sub))
        .map(deleted_json)
        .collect();
    Reply::ok(json!({ "value": value }))
}

fn attributes_json(vault: &Vault, version: &KeyVersion) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), json!(version.enabled));
    if let Some(nbf) = version.nbf {
        a.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = version.exp {
        a.insert("exp".into(), json!(exp));
    }
    a.insert("created".into(), json!(version.created));
    a.insert("updated".into(), json!(version.updated));
    a.insert("recoveryLevel".into(), json!(vault.recovery_level()));
    a.insert("exportable".into(), json!(false));
    Value::Object(a)
}

/// ARM's `rotationPolicy` (action types in lower case, azure-notes Trap T2).
fn rotation_policy_json(key: &Key) -> Option<Value> {
    let p = key.rotation_policy.as_ref()?;
    let actions: Vec<Value> = p
        .lifetime_actions
        .iter()
        .map(|a| {
            let mut trigger = Map::new();
            if let Some(t) = &a.time_after_create {
                trigger.insert("timeAfterCreate".into(), json!(t));
            }
            if let Some(t) = &a.time_before_expiry {
                trigger.insert("timeBeforeExpiry".into(), json!(t));
            }
            json!({"trigger": trigger, "action": {"type": a.action.to_ascii_lowercase()}})
        })
        .collect();
    let mut attributes = Map::new();
    attributes.insert("created".into(), json!(p.created));
    attributes.insert("updated".into(), json!(p.updated));
    if let Some(e) = &p.expiry_time {
        attributes.insert("expiryTime".into(), json!(e));
    }
    Some(json!({"attributes": attributes, "lifetimeActions": actions}))
}

/// The ARM key body for the latest version (`version = None`) or one version; `full` = false
/// gives the ListVersions item shape, which has no `kty`/`keySize` (azure-notes Trap T4).
fn key_json(vault: &Vault, key: &Key, version: Option<&KeyVersion>, full: bool) -> Option<Value> {
    let latest = key.latest()?;
    let shown = version.unwrap_or(latest);
    let key_uri = format!(
        "https://{}.vault.azure.net:443/keys/{}",
        vault.name.to_ascii_lowercase(),
        key.name
    );
    let mut props = Map::new();
    props.insert("attributes".into(), attributes_json(vault, shown));
    if full {
        props.insert("kty".into(), json!(key.kty.as_str()));
        props.insert(
            "keyOps".into(),
            json!(shown.key_ops.as_ref().unwrap_or(&key.key_ops)),
        );
        if let Some(size) = key.key_size {
            props.insert("keySize".into(), json!(size));
        }
        if let Some(curve) = &key.curve {
            props.insert("curveName".into(), json!(curve));
        }
    }
    props.insert("keyUri".into(), json!(key_uri));
    props.insert(
        "keyUriWithVersion".into(),
        json!(format!("{key_uri}/{}", shown.version)),
    );
    if full
        && version.is_none()
        && let Some(policy) = rotation_policy_json(key)
    {
        props.insert("rotationPolicy".into(), policy);
    }
    let (id, name, type_name) = match version {
        None => (
            format!("{}/keys/{}", vault.id(), key.name),
            key.name.clone(),
            "Microsoft.KeyVault/vaults/keys",
        ),
        Some(v) => (
            format!("{}/keys/{}/versions/{}", vault.id(), key.name, v.version),
            v.version.clone(),
            "Microsoft.KeyVault/vaults/keys/versions",
        ),
    };
    let mut body = json!({
        "id": id,
        "name": name,
        "type": type_name,
        "location": vault.location,
        "properties": props,
    });
    if !key.tags.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("tags".into(), json!(key.tags));
    }
    Some(body)
}

fn key_not_found(name: &str) -> Reply {
    error(404, "NotFound", &format!("The key '{name}' was not found."))
}

/// `Keys_List`.
pub(crate) fn list_keys(ctx: &mut Ctx) -> Reply {
    let tenant = ctx.tenant();
    let vault = match find(&tenant, ctx) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let value: Vec<Value> = vault
        .keys
        .iter()
        .filter_map(|k| key_json(vault, k, None, true))
        .collect();
    super::management::paged(ctx, value, LIST_PAGE_SIZE, "2026-02-01")
}

/// `Keys_Get`.
pub(crate) fn get_key(ctx: &mut Ctx) -> Reply {
    let name = ctx.segs.get(9).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let vault = match find(&tenant, ctx) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    vault
        .key(&name)
        .and_then(|k| key_json(vault, k, None, true))
        .map(Reply::ok)
        .unwrap_or_else(|| key_not_found(&name))
}

/// `Keys_ListVersions`.
pub(crate) fn list_key_versions(ctx: &mut Ctx) -> Reply {
    let name = ctx.segs.get(9).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let vault = match find(&tenant, ctx) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let Some(key) = vault.key(&name) else {
        return key_not_found(&name);
    };
    let value: Vec<Value> = key
        .versions
        .iter()
        .filter_map(|v| key_json(vault, key, Some(v), false))
        .collect();
    Reply::ok(json!({ "value": value }))
}

/// `Keys_GetVersion`.
pub(crate) fn get_key_version(ctx: &mut Ctx) -> Reply {
    let name = ctx.segs.get(9).cloned().unwrap_or_default();
    let version = ctx.segs.get(11).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let vault = match find(&tenant, ctx) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let Some(key) = vault.key(&name) else {
        return key_not_found(&name);
    };
    match key.version(&version) {
        Some(v) => key_json(vault, key, Some(v), true)
            .map(Reply::ok)
            .unwrap_or_else(|| key_not_found(&name)),
        None => error(
            404,
            "NotFound",
            &format!("The key version '{name}/{version}' was not found."),
        ),
    }
}
