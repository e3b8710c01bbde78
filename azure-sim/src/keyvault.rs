//! The Key Vault data plane (`{vault}.vault.azure.net`): key get/list/versions, update, create,
//! rotate, rotation policy. Requests without a valid token get the 401 challenge (azure-notes
//! §2.4); a valid token without access gets 403 (azure-notes Trap T13), decided by access policies
//! or by RBAC data actions depending on the vault's permission model (azure-notes Trap T8).

use crate::events::KeyVaultEvent;
use crate::http::{self, Ctx, Reply, Route, VAULT_AUDIENCES};
use crate::ids::{eq_ci, scope_covers};
use crate::material::{self, PublicJwk};
use crate::model::{Key, KeyType, KeyVersion, LifetimeAction, RotationPolicy, Tenant, Vault};
use serde_json::{Map, Value, json};

/// api-versions the data plane accepts.
const VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];

fn vault_name(ctx: &Ctx) -> String {
    ctx.host
        .strip_suffix(".vault.azure.net")
        .unwrap_or_default()
        .to_owned()
}

fn kv_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::error(status, code, message)
}

fn kv_error_inner(status: u16, code: &str, message: &str, inner: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": code, "message": message, "innererror": {"code": inner}}}),
    )
}

/// Maps a request to an operation.
pub fn route(ctx: &Ctx) -> Result<Route, Reply> {
    let lower = ctx.lower_segs();
    let s: Vec<&str> = lower.iter().map(String::as_str).collect();
    let resource = Some(format!(
        "https://{}{}",
        ctx.host,
        ctx.path.trim_end_matches('/')
    ));
    let ok = |operation: &'static str, handler: fn(&mut Ctx) -> Reply| {
        Ok(Route {
            operation,
            resource: resource.clone(),
            handler,
            action: None,
        })
    };
    match (ctx.method.as_str(), s.as_slice()) {
        ("GET", ["keys"]) => ok("GetKeys", get_keys),
        ("GET", ["keys", _]) => ok("GetKey", get_key),
        ("PATCH", ["keys", _]) => ok("UpdateKey", update_key),
        ("GET", ["keys", _, "versions"]) => ok("GetKeyVersions", get_key_versions),
        ("GET", ["keys", _, "rotationpolicy"]) => ok("GetKeyRotationPolicy", get_rotation_policy),
        ("PUT", ["keys", _, "rotationpolicy"]) => {
            ok("UpdateKeyRotationPolicy", put_rotation_policy)
        }
        ("POST", ["keys", _, "rotate"]) => ok("RotateKey", rotate_key),
        ("POST", ["keys", _, "create"]) => ok("CreateKey", create_key),
        ("GET", ["keys", _, _]) => ok("GetKey", get_key),
        ("PATCH", ["keys", _, _]) => ok("UpdateKey", update_key),
        _ => Err(kv_error(
            400,
            "BadParameter",
            &format!("azure-sim does not implement {} {}", ctx.method, ctx.path),
        )),
    }
}

fn challenge(ctx: &Ctx, message: &str) -> Reply {
    let tenant = ctx.tenant().tenant_id.clone();
    kv_error(401, "Unauthorized", message).with_header(
        "WWW-Authenticate",
        &format!("Bearer authorization=\"https://login.windows.net/{tenant}\", resource=\"https://vault.azure.net\""),
    )
}

/// The vault must exist; then the challenge for a missing or invalid token; then api-version
/// and the firewall.
pub fn authenticate(ctx: &mut Ctx) -> Result<(), Reply> {
    let name = vault_name(ctx);
    let public_access = match ctx.tenant().vault(&name) {
        Some(v) => v.public_network_access.clone(),
        None => {
            return Err(kv_error(
                404,
                "VaultNotFound",
                &format!(
                    "The vault '{name}' does not exist or is soft-deleted (in Azure its host name would not resolve)."
                ),
            ));
        }
    };
    let claims = match http::bearer(ctx) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(challenge(ctx, "Request is missing a Bearer or PoP token.")),
        Err(crate::token::TokenError::Expired) => {
            return Err(challenge(
                ctx,
                "[TokenExpired] Error validating token: 'S2S12086'.",
            ));
        }
        Err(_) => {
            return Err(challenge(
                ctx,
                "AKV10000: Request is missing a Bearer or PoP token.",
            ));
        }
    };
    if !http::audience_ok(&claims, VAULT_AUDIENCES) {
        let message = format!(
            "AKV10022: Invalid audience. Expected https://vault.azure.net, found: {}.",
            claims.audience
        );
        return Err(challenge(ctx, &message));
    }
    ctx.caller = Some(claims);
    match ctx.q("api-version") {
        None | Some("") => {
            return Err(kv_error(
                400,
                "BadParameter",
                "The 'api-version' query parameter is required.",
            ));
        }
        Some(v) if !VERSIONS.contains(&v) && !v.ends_with("-preview") => {
            return Err(kv_error(
                400,
                "BadParameter",
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version (2025-07-01)."
                ),
            ));
        }
        Some(_) => {}
    }
    if public_access.eq_ignore_ascii_case("disabled") {
        let caller = caller_text(ctx);
        return Err(kv_error_inner(
            403,
            "Forbidden",
            &format!(
                "Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\nCaller: {caller}\r\nVault: {name};location=westeurope"
            ),
            "ForbiddenByConnection",
        ));
    }
    Ok(())
}

fn caller_text(ctx: &Ctx) -> String {
    match &ctx.caller {
        Some(c) => Principal::of(c).text(),
        None => "unknown".to_owned(),
    }
}

/// A data-plane permission: the access-policy name and the RBAC data action.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permission {
    policy: &'static str,
    action: &'static str,
}

const GET: Permission = Permission {
    policy: "get",
    action: "Microsoft.KeyVault/vaults/keys/read",
};
const LIST: Permission = Permission {
    policy: "list",
    action: "Microsoft.KeyVault/vaults/keys/read",
};
const UPDATE: Permission = Permission {
    policy: "update",
    action: "Microsoft.KeyVault/vaults/keys/update/action",
};
const CREATE: Permission = Permission {
    policy: "create",
    action: "Microsoft.KeyVault/vaults/keys/create/action",
};
const ROTATE: Permission = Permission {
    policy: "rotate",
    action: "Microsoft.KeyVault/vaults/keys/rotate/action",
};
const GET_POLICY: Permission = Permission {
    policy: "getrotationpolicy",
    action: "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
};
const SET_POLICY: Permission = Permission {
    policy: "setrotationpolicy",
    action: "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
};
const WRAP: Permission = Permission {
    policy: "wrapKey",
    action: "Microsoft.KeyVault/vaults/keys/wrap/action",
};
const UNWRAP: Permission = Permission {
    policy: "unwrapKey",
    action: "Microsoft.KeyVault/vaults/keys/unwrap/action",
};

/// Who asks for access: the token's `oid`, `appid` and `tid`.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub object_id: String,
    pub client_id: String,
    pub tenant_id: String,
}

impl Principal {
    fn of(claims: &crate::token::Claims) -> Self {
        Self {
            object_id: claims.object_id.clone(),
            client_id: claims.client_id.clone(),
            tenant_id: claims.tenant_id.clone(),
        }
    }

    /// The caller as Key Vault's error messages name it.
    fn text(&self) -> String {
        format!(
            "appid={};oid={};iss=https://sts.windows.net/{}/",
            self.client_id, self.object_id, self.tenant_id
        )
    }
}

/// A refusal: the 403 body's message and inner error code.
#[derive(Debug, Clone)]
pub(crate) struct Denied {
    pub message: String,
    pub inner: &'static str,
}

/// 403 unless the caller may perform `permission` on `key` (or the vault for lists).
fn authorize(
    ctx: &Ctx,
    tenant: &Tenant,
    vault: &Vault,
    key: Option<&str>,
    permission: Permission,
) -> Result<(), Reply> {
    let Some(caller) = &ctx.caller else {
        return Err(challenge(ctx, "Request is missing a Bearer or PoP token."));
    };
    ctx.check(permission.action);
    decide(tenant, vault, key, &Principal::of(caller), permission)
        .map_err(|d| kv_error_inner(403, "Forbidden", &d.message, d.inner))
}

/// The access decision of the data plane and of services using a key (the admin API's key
/// uses): RBAC data actions or access policies, depending on the vault's permission model.
pub(crate) fn decide(
    tenant: &Tenant,
    vault: &Vault,
    key: Option<&str>,
    principal: &Principal,
    permission: Permission,
) -> Result<(), Denied> {
    let oid = &principal.object_id;
    if vault.rbac_effective() {
        let scope = match key {
            Some(k) => format!("{}/keys/{k}", vault.id()),
            None => vault.id(),
        };
        let granted = tenant.assignments_applying(oid, &scope).iter().any(|a| {
            scope_covers(&a.scope, &scope)
                && tenant.role_grants(&a.role_definition_guid, permission.action, true)
        });
        if granted {
            return Ok(());
        }
        return Err(Denied {
            message: format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {}\r\nAction: '{}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location={}\r\n",
                principal.text(),
                permission.action,
                scope.to_ascii_lowercase(),
                vault.name,
                vault.location
            ),
            inner: "ForbiddenByRbac",
        });
    }
    let groups = tenant.groups_of(oid);
    let granted = vault.access_policies.iter().any(|p| {
        (eq_ci(&p.object_id, oid) || groups.iter().any(|g| eq_ci(g, &p.object_id)))
            && eq_ci(&p.tenant_id, &principal.tenant_id)
            && p.grants_key(permission.policy)
    });
    if granted {
        return Ok(());
    }
    Err(Denied {
        message: format!(
            "The user, group or application '{}' does not have keys {} permission on key vault '{};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            principal.text(),
            permission.policy,
            vault.name,
            vault.location
        ),
        inner: "AccessDenied",
    })
}

/// A service's use of a key (`wrapKey`, `unwrapKey`, `get`), decided as the data plane decides
/// it: access first, then the key version must exist (404) and be enabled (403 `KeyDisabled`).
/// `Ok` carries the key id used; `Err` the status and Key Vault's message. The id is the
/// version's when it is known, so a refused call still names the key it was for.
pub(crate) fn use_key(
    tenant: &Tenant,
    vault: &Vault,
    key: &str,
    version: Option<&str>,
    operation: &str,
    principal: &Principal,
) -> Result<String, (u16, String, String)> {
    let permission = match operation {
        "wrapKey" => WRAP,
        "unwrapKey" => UNWRAP,
        _ => GET,
    };
    let found = vault.key(key);
    let used = found.and_then(|k| match version {
        Some(v) => k.version(v),
        None => k.latest(),
    });
    let id = match (found, used) {
        (Some(k), Some(v)) => kid(vault, k, Some(v)),
        _ => match version {
            Some(v) => format!("{}/keys/{key}/{v}", vault.uri()),
            None => format!("{}/keys/{key}", vault.uri()),
        },
    };
    decide(tenant, vault, Some(key), principal, permission)
        .map_err(|d| (403, d.message, id.clone()))?;
    let not_found = |what: &str| {
        let message = key_not_found(what)
            .body
            .and_then(|b| {
                b.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        (404, message, id.clone())
    };
    let Some(v) = used else {
        return Err(not_found(&match version {
            Some(v) => format!("{key}/{v}"),
            None => key.to_owned(),
        }));
    };
    if !v.enabled {
        return Err((
            403,
            format!("Operation {operation} is not allowed on a disabled key."),
            id,
        ));
    }
    Ok(id)
}

fn key_not_found(name: &str) -> Reply {
    kv_error(
        404,
        "KeyNotFound",
        &format!(
            "A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn attributes_json(vault: &Vault, v: &KeyVersion) -> Value {
    let mut a = Map::new();
    a.insert("enabled".into(), json!(v.enabled));
    if let Some(nbf) = v.nbf {
        a.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = v.exp {
        a.insert("exp".into(), json!(exp));
    }
    a.insert("created".into(), json!(v.created));
    a.insert("updated".into(), json!(v.updated));
    a.insert("recoveryLevel".into(), json!(vault.recovery_level()));
    if vault.enable_soft_delete.unwrap_or(true) {
        a.insert(
            "recoverableDays".into(),
            json!(vault.soft_delete_retention_days.unwrap_or(90)),
        );
    } else {
        a.insert("recoverableDays".into(), json!(0));
    }
    a.insert("exportable".into(), json!(false));
    Value::Object(a)
}

fn kid(vault: &Vault, key: &Key, version: Option<&KeyVersion>) -> String {
    let base = format!("{}/keys/{}", vault.uri(), key.name);
    match version {
        Some(v) => format!("{base}/{}", v.version),
        None => base,
    }
}

/// The `KeyBundle` for a version, with real public material.
fn bundle(vault: &Vault, key: &Key, v: &KeyVersion) -> Result<Value, Reply> {
    let material = match key.kty {
        KeyType::Rsa | KeyType::RsaHsm => material::rsa(key.key_size.unwrap_or(2048)),
        KeyType::Ec | KeyType::EcHsm => material::ec(key.curve.as_deref().unwrap_or("P-256")),
    }
    .map_err(|e| kv_error(500, "InternalServerError", &e.to_string()))?;
    let mut jwk = Map::new();
    jwk.insert("kid".into(), json!(kid(vault, key, Some(v))));
    jwk.insert("kty".into(), json!(key.kty.as_str()));
    jwk.insert(
        "key_ops".into(),
        json!(v.key_ops.as_ref().unwrap_or(&key.key_ops)),
    );
    match material {
        PublicJwk::Rsa { n, e } => {
            jwk.insert("n".into(), json!(n));
            jwk.insert("e".into(), json!(e));
        }
        PublicJwk::Ec { crv, x, y } => {
            jwk.insert("crv".into(), json!(crv));
            jwk.insert("x".into(), json!(x));
            jwk.insert("y".into(), json!(y));
        }
    }
    let mut body = json!({"key": jwk, "attributes": attributes_json(vault, v)});
    let tags = if v.tags.is_empty() {
        &key.tags
    } else {
        &v.tags
    };
    if !tags.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("tags".into(), json!(tags));
    }
    Ok(body)
}

/// (vault, key name, version) for the request.
fn target(ctx: &Ctx) -> (String, String, Option<String>) {
    (
        vault_name(ctx),
        ctx.segs.get(1).cloned().unwrap_or_default(),
        ctx.segs.get(2).cloned(),
    )
}

fn get_key(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, version) = target(ctx);
    let tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name) else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, vault, Some(&name), GET) {
        return reply;
    }
    let Some(key) = vault.key(&name) else {
        return key_not_found(&name);
    };
    let v = match version.as_deref() {
        Some(ver) => key.version(ver),
        None => key.latest(),
    };
    let Some(v) = v else {
        return key_not_found(&format!("{name}/{}", version.unwrap_or_default()));
    };
    if !v.enabled {
        return kv_error_inner(
            403,
            "Forbidden",
            "Operation get is not allowed on a disabled key.",
            "KeyDisabled",
        );
    }
    bundle(vault, key, v).map(Reply::ok).unwrap_or_else(|r| r)
}

/// Paging over a list with `maxresults` (1–25) and an opaque `$skiptoken`.
fn page(ctx: &Ctx, items: Vec<Value>, base: &str) -> Reply {
    let max = ctx
        .q("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(25);
    if !(1..=25).contains(&max) {
        return kv_error(400, "BadParameter", "maxresults must be between 1 and 25.");
    }
    let offset = ctx
        .q("$skiptoken")
        .and_then(crate::ids::skiptoken_offset)
        .unwrap_or(0);
    let end = (offset + max).min(items.len());
    let value: Vec<Value> = items
        .get(offset.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let next = (end < items.len()).then(|| {
        let token = crate::ids::skiptoken(end);
        format!(
            "https://{}:443{base}?api-version={}&$skiptoken={token}&maxresults={max}",
            ctx.host,
            ctx.q("api-version").unwrap_or("2025-07-01")
        )
    });
    Reply::ok(json!({"value": value, "nextLink": next}))
}

fn get_keys(ctx: &mut Ctx) -> Reply {
    let vault_name = vault_name(ctx);
    let tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name) else {
        return key_not_found("");
    };
    if let Err(reply) = authorize(ctx, &tenant, vault, None, LIST) {
        return reply;
    }
    let items = vault
        .keys
        .iter()
        .filter_map(|k| {
            let latest = k.latest()?;
            let mut item =
                json!({"kid": kid(vault, k, None), "attributes": attributes_json(vault, latest)});
            if !k.tags.is_empty()
                && let Some(obj) = item.as_object_mut()
            {
                obj.insert("tags".into(), json!(k.tags));
            }
            Some(item)
        })
        .collect();
    page(ctx, items, "/keys")
}

fn get_key_versions(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, _) = target(ctx);
    let tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name) else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, vault, Some(&name), LIST) {
        return reply;
    }
    let Some(key) = vault.key(&name) else {
        return key_not_found(&name);
    };
    let items = key
        .versions
        .iter()
        .map(|v| json!({"kid": kid(vault, key, Some(v)), "attributes": attributes_json(vault, v)}))
        .collect();
    page(ctx, items, &format!("/keys/{}/versions", key.name))
}

fn optional_i64(v: &Value, name: &str) -> Result<Option<Option<i64>>, Reply> {
    match v.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(x) => x.as_i64().map(|n| Some(Some(n))).ok_or_else(|| {
            kv_error(
                400,
                "BadParameter",
                &format!("attributes.{name} must be unix seconds"),
            )
        }),
    }
}

fn update_key(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, version) = target(ctx);
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return kv_error(400, "BadParameter", &format!("Invalid request body: {e}")),
    };
    let attributes = body.get("attributes").cloned().unwrap_or(Value::Null);
    let (nbf, exp) = match (
        optional_i64(&attributes, "nbf"),
        optional_i64(&attributes, "exp"),
    ) {
        (Ok(n), Ok(e)) => (n, e),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let mut tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name).cloned() else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, &vault, Some(&name), UPDATE) {
        return reply;
    }
    let now = ctx.now;
    let Some(key) = tenant.vault_mut(&vault_name).and_then(|v| v.key_mut(&name)) else {
        return key_not_found(&name);
    };
    let default_ops = key.key_ops.clone();
    let v = match version.as_deref().filter(|v| !v.is_empty()) {
        Some(ver) => key.version_mut(ver),
        None => key.versions.last_mut(),
    };
    let Some(v) = v else {
        return key_not_found(&format!("{name}/{}", version.unwrap_or_default()));
    };
    if let Some(enabled) = attributes.get("enabled").and_then(Value::as_bool) {
        v.enabled = enabled;
    }
    if let Some(nbf) = nbf {
        v.nbf = nbf;
    }
    if let Some(exp) = exp {
        v.exp = exp;
    }
    if let Some(ops) = body.get("key_ops").and_then(Value::as_array) {
        v.key_ops = Some(
            ops.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        );
    } else if v.key_ops.is_none() {
        v.key_ops = Some(default_ops);
    }
    if let Some(tags) = body.get("tags").and_then(Value::as_object) {
        v.tags = tags.clone();
    }
    v.updated = now;
    let updated = v.clone();
    let Some(key) = tenant
        .vault(&vault_name)
        .and_then(|vault| vault.key(&name))
        .cloned()
    else {
        return key_not_found(&name);
    };
    bundle(&vault, &key, &updated)
        .map(Reply::ok)
        .unwrap_or_else(|r| r)
}

fn new_version_event(ctx: &Ctx, vault: &Vault, key: &Key, v: &KeyVersion) {
    let vault_id = vault.id();
    let id = kid(vault, key, Some(v));
    ctx.emit(
        KeyVaultEvent {
            event: "KeyNewVersionCreated",
            vault_id: &vault_id,
            vault_name: &vault.name,
            object_type: "Key",
            object_name: &key.name,
            id: &id,
            version: Some(&v.version),
            nbf: v.nbf,
            exp: v.exp,
        }
        .to_json(),
    );
}

fn rotate_key(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, _) = target(ctx);
    let mut tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name).cloned() else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, &vault, Some(&name), ROTATE) {
        return reply;
    }
    let Some((_, version)) = tenant.rotate_key(&vault_name, &name, ctx.now) else {
        return key_not_found(&name);
    };
    let Some(key) = tenant
        .vault(&vault_name)
        .and_then(|v| v.key(&name))
        .cloned()
    else {
        return key_not_found(&name);
    };
    drop(tenant);
    new_version_event(ctx, &vault, &key, &version);
    bundle(&vault, &key, &version)
        .map(Reply::ok)
        .unwrap_or_else(|r| r)
}

fn create_key(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, _) = target(ctx);
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return kv_error(400, "BadParameter", &format!("Invalid request body: {e}")),
    };
    let Some(kty) = body
        .get("kty")
        .and_then(Value::as_str)
        .and_then(KeyType::parse)
    else {
        return kv_error(
            400,
            "BadParameter",
            "Property 'kty' is required and must be RSA, RSA-HSM, EC or EC-HSM.",
        );
    };
    let size = body
        .get("key_size")
        .and_then(Value::as_u64)
        .map(|s| s as u32);
    if kty.is_rsa() && !matches!(size.unwrap_or(2048), 2048 | 3072 | 4096) {
        return kv_error(
            400,
            "BadParameter",
            "RSA key size must be 2048, 3072 or 4096.",
        );
    }
    let attributes = body.get("attributes").cloned().unwrap_or(Value::Null);
    let mut tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name).cloned() else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, &vault, Some(&name), CREATE) {
        return reply;
    }
    let now = ctx.now;
    let serial = tenant.serial();
    let version = KeyVersion {
        version: crate::ids::stable_hex32(&format!("{vault_name}/{name}/created/{serial}/{now}")),
        enabled: attributes
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        nbf: attributes.get("nbf").and_then(Value::as_i64),
        exp: attributes.get("exp").and_then(Value::as_i64),
        created: now,
        updated: now,
        key_ops: None,
        tags: body
            .get("tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    let key_ops: Vec<String> = body
        .get("key_ops")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|| {
            [
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        });
    let Some(target_vault) = tenant.vault_mut(&vault_name) else {
        return key_not_found(&name);
    };
    match target_vault.key_mut(&name) {
        Some(key) => {
            key.kty = kty;
            key.key_size = kty.is_rsa().then(|| size.unwrap_or(2048));
            key.curve = (!kty.is_rsa()).then(|| {
                body.get("crv")
                    .and_then(Value::as_str)
                    .unwrap_or("P-256")
                    .to_owned()
            });
            key.key_ops = key_ops;
            key.versions.push(version.clone());
        }
        None => target_vault.keys.push(Key {
            name: name.clone(),
            kty,
            key_size: kty.is_rsa().then(|| size.unwrap_or(2048)),
            curve: (!kty.is_rsa()).then(|| {
                body.get("crv")
                    .and_then(Value::as_str)
                    .unwrap_or("P-256")
                    .to_owned()
            }),
            key_ops,
            versions: vec![version.clone()],
            rotation_policy: None,
            tags: Map::new(),
        }),
    }
    let Some(key) = tenant
        .vault(&vault_name)
        .and_then(|v| v.key(&name))
        .cloned()
    else {
        return key_not_found(&name);
    };
    drop(tenant);
    new_version_event(ctx, &vault, &key, &version);
    bundle(&vault, &key, &version)
        .map(Reply::ok)
        .unwrap_or_else(|r| r)
}

/// The data-plane rotation policy body. Without a policy Key Vault answers with its default:
/// notify 30 days before expiry, no timestamps.
fn policy_json(vault: &Vault, key: &Key) -> Value {
    let id = format!("{}/keys/{}/rotationpolicy", vault.uri(), key.name);
    let Some(p) = &key.rotation_policy else {
        return json!({
            "id": id,
            "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
            "attributes": {},
        });
    };
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
            json!({"trigger": trigger, "action": {"type": a.action}})
        })
        .collect();
    let mut attributes = Map::new();
    if let Some(e) = &p.expiry_time {
        attributes.insert("expiryTime".into(), json!(e));
    }
    attributes.insert("created".into(), json!(p.created));
    attributes.insert("updated".into(), json!(p.updated));
    json!({"id": id, "lifetimeActions": actions, "attributes": attributes})
}

fn get_rotation_policy(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, _) = target(ctx);
    let tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name) else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, vault, Some(&name), GET_POLICY) {
        return reply;
    }
    match vault.key(&name) {
        Some(key) => Reply::ok(policy_json(vault, key)),
        None => key_not_found(&name),
    }
}

/// Parses and validates a rotation policy body (action types compared case-insensitively and
/// stored in data-plane casing, azure-notes Trap T2).
fn parse_policy(body: &Value, now: i64, created: Option<i64>) -> Result<RotationPolicy, Reply> {
    let bad = |m: &str| kv_error(400, "BadParameter", m);
    let expiry_time = body
        .get("attributes")
        .and_then(|a| a.get("expiryTime"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(e) = &expiry_time {
        match crate::clock::parse_iso_duration(e) {
            Some(seconds) if seconds >= 28 * crate::clock::DAY => {}
            Some(_) => return Err(bad("expiryTime must be at least 28 days.")),
            None => {
                return Err(bad(&format!(
                    "expiryTime '{e}' is not an ISO-8601 duration."
                )));
            }
        }
    }
    let mut actions = Vec::new();
    for item in body
        .get("lifetimeActions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let kind = item
            .get("action")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let action = if kind.eq_ignore_ascii_case("rotate") {
            "Rotate"
        } else if kind.eq_ignore_ascii_case("notify") {
            "Notify"
        } else {
            return Err(bad(&format!("Unknown lifetime action type '{kind}'.")));
        };
        let trigger = item.get("trigger").cloned().unwrap_or(Value::Null);
        let text = |k: &str| trigger.get(k).and_then(Value::as_str).map(str::to_owned);
        let (after, before) = (text("timeAfterCreate"), text("timeBeforeExpiry"));
        if after.is_some() == before.is_some() {
            return Err(bad(
                "Each lifetime action needs exactly one of timeAfterCreate or timeBeforeExpiry.",
            ));
        }
        if action == "Notify" && after.is_some() {
            return Err(bad("timeAfterCreate only applies to the Rotate action."));
        }
        for d in after.iter().chain(before.iter()) {
            if crate::clock::parse_iso_duration(d).is_none() {
                return Err(bad(&format!("'{d}' is not an ISO-8601 duration.")));
            }
        }
        actions.push(LifetimeAction {
            action: action.to_owned(),
            time_after_create: after,
            time_before_expiry: before,
        });
    }
    Ok(RotationPolicy {
        lifetime_actions: actions,
        expiry_time,
        created: created.unwrap_or(now),
        updated: now,
    })
}

fn put_rotation_policy(ctx: &mut Ctx) -> Reply {
    let (vault_name, name, _) = target(ctx);
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return kv_error(400, "BadParameter", &format!("Invalid request body: {e}")),
    };
    let mut tenant = ctx.tenant();
    let Some(vault) = tenant.vault(&vault_name).cloned() else {
        return key_not_found(&name);
    };
    if let Err(reply) = authorize(ctx, &tenant, &vault, Some(&name), SET_POLICY) {
        return reply;
    }
    let now = ctx.now;
    let Some(key) = tenant.vault_mut(&vault_name).and_then(|v| v.key_mut(&name)) else {
        return key_not_found(&name);
    };
    let policy = match parse_policy(&body, now, key.rotation_policy.as_ref().map(|p| p.created)) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    key.rotation_policy = Some(policy);
    let key = key.clone();
    Reply::ok(policy_json(&vault, &key))
}

/// Parses a rotation policy for the admin API (same validation as the data plane).
pub(crate) fn parse_policy_for_admin(body: &Value, now: i64) -> Result<RotationPolicy, String> {
    parse_policy(body, now, None).map_err(|r| {
        r.body
            .and_then(|b| {
                b.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    })
}
