//! Key Vault `AuditEvent` records, as a vault's diagnostic setting streams them to Event Hubs
//! (docs/azure-notes.md, *Key Vault audit logs*; the shape of
//! `tests/fixtures/keyvault-audit/`). The simulator keeps one append-only log for all vaults:
//! - the data plane records every request to a vault it knows, with the status it answered —
//!   the 401 challenge, 403 refusals and 404s included, as Key Vault logs them;
//! - ARM vault writes record `VaultPatch` as the caller of the token;
//! - the admin API records a person's changes (attributed to the operator) and a service's
//!   uses of a key ([`crate::admin::Admin::use_key`]), the CMK outage when they fail.
//!
//! Tests read the log with [`crate::Sim::audit_records`], take it with
//! [`crate::Sim::drain_audit`], or as Event Hub message bodies (`{"records": [...]}`) with
//! [`crate::Sim::audit_messages`].

use crate::admin::AdminError;
use crate::http::{Ctx, Reply, Shared, lock};
use crate::ids::eq_ci;
use crate::keyvault::Principal;
use crate::model::Tenant;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// The data-plane api-version the operator's changes and services' key uses are logged with.
pub const DATA_PLANE_VERSION: &str = "7.5";
/// The ARM api-version of the operator's vault changes.
pub const ARM_VERSION: &str = "2026-02-01";
/// What Azure Storage sends as its user agent when it wraps or unwraps with a CMK.
pub const SERVICE_CLIENT: &str = "Azure-Storage/1.0";
/// What Key Vault logs as the client of calls that came through Resource Manager.
const ARM_CLIENT: &str = "azure-resource-manager/2.0";
/// The operator's user agent: the Azure CLI.
const OPERATOR_CLIENT: &str = "AzureCLI/2.66.0";
/// The operator's sign-in name (a person, so the claim carries a `upn`).
pub const OPERATOR_UPN: &str = "operator@azure-sim.example";
/// Where the operator's and services' calls come from.
const CALLER_IP: &str = "10.20.30.40";

const OID_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
const UPN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";

/// Who made a call, as the record's `identity.claim`, `callerIpAddress` and
/// `properties.clientInfo` show it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `objectidentifier` claim.
    pub object_id: String,
    /// `appid` claim.
    pub app_id: String,
    /// `upn` claim, for a person.
    pub upn: Option<String>,
    /// `callerIpAddress`.
    pub ip: String,
    /// `properties.clientInfo` (the user agent).
    pub client_info: String,
}

impl Caller {
    /// The operator, a person using the Azure CLI: who the admin API's changes stand for.
    pub fn operator(tenant: &Tenant) -> Self {
        let actor = crate::admin::operator_actor(tenant);
        Self {
            object_id: actor.object_id,
            app_id: actor.client_id,
            upn: Some(OPERATOR_UPN.to_owned()),
            ip: CALLER_IP.to_owned(),
            client_info: OPERATOR_CLIENT.to_owned(),
        }
    }

    /// A service calling with `principal`'s token (the workspace's identity, or Storage and
    /// Cosmos DB on its behalf).
    fn service(principal: &Principal, client_info: &str) -> Self {
        Self {
            object_id: principal.object_id.clone(),
            app_id: principal.client_id.clone(),
            upn: None,
            ip: CALLER_IP.to_owned(),
            client_info: client_info.to_owned(),
        }
    }

    /// The caller of a request: its token's claims (none for a request without a valid token),
    /// its address and user agent.
    fn of_request(ctx: &Ctx, client_info: Option<&str>) -> Self {
        let claims = ctx.caller.as_ref();
        let upn = claims
            .and_then(|c| c.raw.get("upn"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Self {
            object_id: claims.map(|c| c.object_id.clone()).unwrap_or_default(),
            app_id: claims.map(|c| c.client_id.clone()).unwrap_or_default(),
            upn,
            ip: ctx
                .req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            client_info: client_info
                .map(str::to_owned)
                .or_else(|| ctx.header("user-agent").map(str::to_owned))
                .unwrap_or_default(),
        }
    }

    fn claim(&self) -> Value {
        let mut claim = Map::new();
        if !self.object_id.is_empty() {
            claim.insert(OID_CLAIM.into(), json!(self.object_id));
        }
        if let Some(upn) = &self.upn {
            claim.insert(UPN_CLAIM.into(), json!(upn));
        }
        if !self.app_id.is_empty() {
            claim.insert("appid".into(), json!(self.app_id));
        }
        Value::Object(claim)
    }
}

/// One audit record before it becomes JSON.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The vault's ARM id (logged upper-case, as in the documentation's example).
    pub vault_id: &'a str,
    /// `operationName`: `KeyGet`, `KeyUnwrap`, `VaultPatch`, …
    pub operation: &'a str,
    /// `operationVersion`: the api-version the client used.
    pub api_version: &'a str,
    /// `properties.httpStatusCode`.
    pub status: u16,
    /// `resultDescription`: Key Vault's error message, empty on success.
    pub description: &'a str,
    /// Who called.
    pub caller: &'a Caller,
    /// `properties.requestUri`.
    pub request_uri: &'a str,
    /// `properties.id`: the key id with its version, or the vault URI.
    pub id: &'a str,
}

impl Entry<'_> {
    /// The record, in the field order of the documentation's example.
    pub fn to_json(&self) -> Value {
        let reason = reason(self.status);
        let result_type = if (200..300).contains(&self.status) {
            "Success"
        } else {
            reason
        };
        json!({
            "time": time_now(),
            "resourceId": self.vault_id.to_ascii_uppercase(),
            "operationName": self.operation,
            "operationVersion": self.api_version,
            "category": "AuditEvent",
            "resultType": result_type,
            "resultSignature": reason,
            "resultDescription": self.description,
            // The simulator does not time its work: every call took no time.
            "durationMs": "0",
            "callerIpAddress": self.caller.ip,
            "correlationId": "",
            "identity": {"claim": self.caller.claim()},
            "properties": {
                "clientInfo": self.caller.client_info,
                "requestUri": self.request_uri,
                "id": self.id,
                "httpStatusCode": self.status,
            },
        })
    }
}

/// The HTTP status text Key Vault logs as `resultSignature`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "NoContent",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        503 => "ServiceUnavailable",
        s if s < 400 => "OK",
        _ => "Error",
    }
}

/// Now with seven fractional digits, as the records carry it.
fn time_now() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{}.{:07}Z",
        crate::clock::rfc3339(now.unix_timestamp()).trim_end_matches(".0000000Z"),
        now.nanosecond() / 100
    )
}

/// Appends a record to the log.
pub(crate) fn append(shared: &Shared, record: Value) {
    lock(&shared.audit).push(record);
}

/// Splits records into Event Hub message bodies of at most `per_message` records each
/// (at least one), as Azure Monitor batches them.
pub fn messages(records: Vec<Value>, per_message: usize) -> Vec<Value> {
    records
        .chunks(per_message.max(1))
        .map(|chunk| json!({ "records": chunk }))
        .collect()
}

/// The `operationName` of a data-plane route (`None`: not logged).
fn data_plane_operation(route: &str) -> Option<&'static str> {
    Some(match route {
        "GetKey" => "KeyGet",
        "GetKeys" => "KeyList",
        "GetKeyVersions" => "KeyListVersions",
        "UpdateKey" => "KeyUpdate",
        "RotateKey" => "KeyRotate",
        "CreateKey" => "KeyCreate",
        "GetKeyRotationPolicy" => "KeyRotationPolicyGet",
        "UpdateKeyRotationPolicy" => "KeyRotationPolicySet",
        _ => return None,
    })
}

/// Records a data-plane request with the status it was answered with. Requests to a vault the
/// simulator does not know are not logged (there is no vault to log them). The 401 challenge
/// every client's first call gets is logged too, as Key Vault does: it is not a failed use of
/// the key, and cmk-guard must learn to ignore it.
pub(crate) fn data_plane(ctx: &Ctx, route: &str, reply: &Reply) {
    let Some(operation) = data_plane_operation(route) else {
        return;
    };
    let vault_name = ctx
        .host
        .strip_suffix(".vault.azure.net")
        .unwrap_or_default();
    let Some(vault_id) = ctx.tenant().vault(vault_name).map(|v| v.id()) else {
        return;
    };
    let body = reply.body.as_ref();
    let description = if (200..300).contains(&reply.status) {
        ""
    } else {
        body.and_then(|b| b.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let requested = format!("https://{}{}", ctx.host, ctx.path.trim_end_matches('/'));
    let id = body
        .and_then(|b| b.pointer("/key/kid").or_else(|| b.get("id")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or(requested.clone());
    let request_uri = match ctx.req.query_string() {
        "" => requested,
        query => format!("{requested}?{query}"),
    };
    let caller = Caller::of_request(ctx, None);
    let record = Entry {
        vault_id: &vault_id,
        operation,
        api_version: ctx.q("api-version").unwrap_or_default(),
        status: reply.status,
        description,
        caller: &caller,
        request_uri: &request_uri,
        id: &id,
    }
    .to_json();
    append(ctx.shared, record);
}

/// Records a vault write that came through Resource Manager (`VaultPatch` for a PATCH of the
/// vault and for access-policy changes, as Key Vault logs both), by the token's caller.
pub(crate) fn arm_vault_write(ctx: &Ctx, vault_id: &str, vault_name: &str, operation: &str) {
    let caller = Caller::of_request(ctx, Some(ARM_CLIENT));
    let request_uri = format!(
        "https://management.azure.com{}?{}",
        ctx.path,
        ctx.req.query_string()
    );
    let id = format!("{}/", crate::ids::vault_uri(vault_name));
    let record = Entry {
        vault_id,
        operation,
        api_version: ctx.q("api-version").unwrap_or_default(),
        status: 200,
        description: "",
        caller: &caller,
        request_uri: &request_uri,
        id: &id,
    }
    .to_json();
    append(ctx.shared, record);
}

/// Records the Event Grid notification Key Vault logs when it publishes
/// `VaultAccessPolicyChanged` (`VaultAccessPolicyChangedEventGridNotification`). Key Vault
/// itself publishes it, so the record names no caller.
pub(crate) fn access_policy_notification(shared: &Shared, vault_id: &str, vault_name: &str) {
    let id = format!("{}/", crate::ids::vault_uri(vault_name));
    let record = Entry {
        vault_id,
        operation: "VaultAccessPolicyChangedEventGridNotification",
        api_version: "",
        status: 200,
        description: "",
        caller: &Caller::default(),
        request_uri: &id,
        id: &id,
    }
    .to_json();
    append(shared, record);
}

/// What an operator's change addressed, for its `properties.id` and `requestUri`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object<'a> {
    /// The vault, changed through Resource Manager (`VaultPatch`, `VaultDelete`, …).
    Vault,
    /// A key version, changed on the data plane (`KeyUpdate`, `KeyRotate`).
    KeyVersion(&'a str, &'a str),
    /// A key (`KeyDelete`).
    Key(&'a str),
    /// A key's rotation policy (`KeyRotationPolicySet`).
    RotationPolicy(&'a str),
}

/// Records a successful change by the operator. Call it after the tenant is unlocked.
pub(crate) fn operator_change(
    shared: &Shared,
    vault_id: &str,
    vault_name: &str,
    operation: &str,
    object: Object<'_>,
) {
    let caller = Caller::operator(&lock(&shared.tenant));
    let uri = crate::ids::vault_uri(vault_name);
    let (id, request_uri, api_version) = match object {
        Object::Vault => (
            format!("{uri}/"),
            format!("https://management.azure.com{vault_id}?api-version={ARM_VERSION}"),
            ARM_VERSION,
        ),
        Object::KeyVersion(key, version) => {
            let id = format!("{uri}/keys/{key}/{version}");
            let request = format!("{id}?api-version={DATA_PLANE_VERSION}");
            (id, request, DATA_PLANE_VERSION)
        }
        Object::Key(key) => {
            let id = format!("{uri}/keys/{key}");
            let request = format!("{id}?api-version={DATA_PLANE_VERSION}");
            (id, request, DATA_PLANE_VERSION)
        }
        Object::RotationPolicy(key) => {
            let id = format!("{uri}/keys/{key}/rotationpolicy");
            let request = format!("{id}?api-version={DATA_PLANE_VERSION}");
            (id, request, DATA_PLANE_VERSION)
        }
    };
    let record = Entry {
        vault_id,
        operation,
        api_version,
        status: 200,
        description: "",
        caller: &caller,
        request_uri: &request_uri,
        id: &id,
    }
    .to_json();
    append(shared, record);
}

/// The `operationName` and REST path segment of a key use.
fn key_use_operation(operation: &str) -> Option<(&'static str, &'static str, &'static str)> {
    [
        ("wrapKey", "KeyWrap", "/wrapkey"),
        ("unwrapKey", "KeyUnwrap", "/unwrapkey"),
        ("get", "KeyGet", ""),
    ]
    .into_iter()
    .find(|(name, _, _)| name.eq_ignore_ascii_case(operation))
}

/// A service uses a key (see [`crate::admin::Admin::use_key`]): decided as the data plane
/// decides, recorded, and answered with the status Key Vault gave.
pub(crate) fn use_key(
    shared: &Shared,
    vault: &str,
    key: &str,
    operation: &str,
    principal_object_id: &str,
    client_info: &str,
) -> Result<u16, AdminError> {
    let (permission, operation_name, path) =
        key_use_operation(operation).ok_or_else(|| AdminError {
            status: 400,
            message: format!("operation must be wrapKey, unwrapKey or get, not '{operation}'"),
        })?;
    let (name, version) = match key.split_once('/') {
        Some((name, version)) if !version.is_empty() => (name, Some(version)),
        _ => (key.trim_end_matches('/'), None),
    };
    let tenant = lock(&shared.tenant);
    let vault = tenant.vault(vault).ok_or_else(|| AdminError {
        status: 404,
        message: "vault not found".to_owned(),
    })?;
    let principal = Principal {
        object_id: principal_object_id.to_owned(),
        client_id: tenant
            .app
            .user_assigned
            .iter()
            .find(|u| eq_ci(&u.principal_id, principal_object_id))
            .map(|u| u.client_id.clone())
            .unwrap_or_else(|| {
                crate::ids::stable_uuid(&format!("client-of:{principal_object_id}"))
            }),
        tenant_id: tenant.tenant_id.clone(),
    };
    let outcome = crate::keyvault::use_key(&tenant, vault, name, version, permission, &principal);
    let vault_id = vault.id();
    drop(tenant);
    let (status, description, id) = match outcome {
        Ok(id) => (200, String::new(), id),
        Err(failure) => failure,
    };
    let request_uri = format!("{id}{path}?api-version={DATA_PLANE_VERSION}");
    let caller = Caller::service(&principal, client_info);
    let record = Entry {
        vault_id: &vault_id,
        operation: operation_name,
        api_version: DATA_PLANE_VERSION,
        status,
        description: &description,
        caller: &caller,
        request_uri: &request_uri,
        id: &id,
    }
    .to_json();
    append(shared, record);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/keyvault-audit/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture is readable");
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    /// Each field's JSON type, recursively, with the claim keys that every record has.
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != UPN_CLAIM)
                    .map(|(k, v)| (k.clone(), shape(v)))
                    .collect(),
            ),
            Value::String(_) => json!("string"),
            Value::Number(_) => json!("number"),
            Value::Bool(_) => json!("bool"),
            Value::Array(_) => json!("array"),
            Value::Null => json!("null"),
        }
    }

    fn entry(caller: &Caller, status: u16) -> Value {
        Entry {
            vault_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            operation: "KeyUnwrap",
            api_version: DATA_PLANE_VERSION,
            status,
            description: if status == 200 { "" } else { "refused" },
            caller,
            request_uri: "https://kv.vault.azure.net/keys/k/v1/unwrapkey?api-version=7.5",
            id: "https://kv.vault.azure.net/keys/k/v1",
        }
        .to_json()
    }

    fn service() -> Caller {
        Caller {
            object_id: "9c9bc070-ce9d-5288-a5d0-f9dc49f2955e".into(),
            app_id: "3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d".into(),
            upn: None,
            ip: CALLER_IP.into(),
            client_info: SERVICE_CLIENT.into(),
        }
    }

    #[test]
    fn a_record_has_the_fixture_field_set_and_types() {
        let forbidden = &fixture("derived.KeyUnwrap.forbidden.json")["records"][0];
        let record = entry(&service(), 403);
        assert_eq!(shape(&record), shape(forbidden));
        // The same top-level fields as the documentation's example.
        let documented = &fixture("documented-example.VaultGet.json")["records"][0];
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&record), keys(documented));
        assert_eq!(
            record["resourceId"],
            "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV"
        );
        assert_eq!(record["resultType"], "Forbidden");
        assert_eq!(record["resultSignature"], "Forbidden");
        assert_eq!(record["resultDescription"], "refused");
        assert_eq!(record["properties"]["httpStatusCode"], 403);
        let time = record["time"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
            "{time}"
        );
        assert_eq!(time.rsplit_once('.').unwrap().1.len(), "5518231Z".len());
    }

    #[test]
    fn a_success_says_so_and_a_person_carries_a_upn() {
        let ok = entry(&service(), 200);
        assert_eq!(
            (ok["resultType"].as_str(), ok["resultSignature"].as_str()),
            (Some("Success"), Some("OK"))
        );
        assert_eq!(ok["resultDescription"], "");
        let person = Caller {
            upn: Some(OPERATOR_UPN.into()),
            ..service()
        };
        assert_eq!(
            entry(&person, 200)["identity"]["claim"][UPN_CLAIM],
            OPERATOR_UPN
        );
        assert!(ok["identity"]["claim"].get(UPN_CLAIM).is_none());
        assert_eq!(
            entry(&Caller::default(), 401)["identity"]["claim"],
            json!({})
        );
    }

    #[test]
    fn messages_hold_at_most_the_records_asked_for() {
        let records: Vec<Value> = (0..5).map(|i| json!({ "n": i })).collect();
        let split = messages(records.clone(), 2);
        assert_eq!(split.len(), 3);
        assert_eq!(split[0], json!({"records": [{"n": 0}, {"n": 1}]}));
        assert_eq!(split[2], json!({"records": [{"n": 4}]}));
        assert_eq!(messages(records, 0).len(), 5);
        assert!(messages(Vec::new(), 3).is_empty());
    }
}
