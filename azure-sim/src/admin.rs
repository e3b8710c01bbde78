//! The admin API (`/_sim/...` on `https://localhost:{port}` and on the plain-HTTP identity
//! listener) and its Rust twin [`Admin`]: counters, request log, faults, events, tokens, and
//! state changes for test and demo stories. State changes record the events Azure would emit,
//! attributed to the tenant's operator, so a demo can feed them to the handler.

use crate::audit::{self, Object};
use crate::events::{Actor, KeyVaultEvent, ResourceEventKind, resource_event};
use crate::faults::Fault;
use crate::http::{Ctx, Reply, Shared, lock};
use crate::ids::{eq_ci, scope_covers};
use crate::model::{AccessPolicy, DeletedVault, Endpoint, Tenant};
use crate::scenario::RoleAssignmentSpec;
use crate::telemetry::RecordFilter;
use crate::token::Subject;
use crate::{clock, roles};
use serde_json::{Value, json};

/// A failed admin change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    /// HTTP status for the admin API.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

fn not_found(what: &str) -> AdminError {
    AdminError {
        status: 404,
        message: format!("{what} not found"),
    }
}

fn bad(message: impl Into<String>) -> AdminError {
    AdminError {
        status: 400,
        message: message.into(),
    }
}

/// The operator as an event actor.
pub fn operator_actor(tenant: &Tenant) -> Actor {
    Actor {
        object_id: tenant.operator_principal_id.clone(),
        client_id: "04b07795-8ddb-461a-bbee-02f9e1bf7b46".to_owned(),
        tenant_id: tenant.tenant_id.clone(),
        token_claims: None,
        role: "Owner".to_owned(),
    }
}

/// Story-level state changes (see the module docs).
pub struct Admin<'a> {
    shared: &'a Shared,
}

/// `Option<Option<T>>` from a JSON field: missing → `None`, `null` → `Some(None)`.
fn tri<T: serde::de::DeserializeOwned>(
    body: &Value,
    name: &str,
) -> Result<Option<Option<T>>, AdminError> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => serde_json::from_value(v.clone())
            .map(|x| Some(Some(x)))
            .map_err(|e| bad(format!("{name}: {e}"))),
    }
}

/// The vault id, vault name and key name as stored, for audit records.
fn key_names(tenant: &Tenant, vault: &str, key: &str) -> (String, String, String) {
    let v = tenant.vault(vault);
    (
        v.map(|v| v.id()).unwrap_or_default(),
        v.map(|v| v.name.clone()).unwrap_or_default(),
        v.and_then(|v| v.key(key))
            .map(|k| k.name.clone())
            .unwrap_or_else(|| key.to_owned()),
    )
}

impl<'a> Admin<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Self { shared }
    }

    fn emit(&self, event: Value) {
        lock(&self.shared.events).push(event);
    }

    /// Changes vault flags: `purgeProtection`, `softDelete`, `rbac` (bool or `null` = absent),
    /// `softDeleteRetentionInDays`, `publicNetworkAccess`. Unlike ARM it allows any state.
    pub fn patch_vault(&self, name: &str, body: &Value) -> Result<Value, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let vault = tenant.vault_mut(name).ok_or_else(|| not_found("vault"))?;
        if let Some(v) = tri::<bool>(body, "purgeProtection")? {
            vault.enable_purge_protection = v;
        }
        if let Some(v) = tri::<bool>(body, "softDelete")? {
            vault.enable_soft_delete = v;
        }
        if let Some(v) = tri::<bool>(body, "rbac")? {
            vault.enable_rbac_authorization = v;
        }
        if let Some(v) = tri::<u32>(body, "softDeleteRetentionInDays")? {
            vault.soft_delete_retention_days = v;
        }
        if let Some(Some(v)) = tri::<String>(body, "publicNetworkAccess")? {
            vault.public_network_access = v;
        }
        vault.updated = clock::now_unix();
        vault.last_modified_by = actor.object_id.clone();
        let json = crate::arm::vault_json(vault);
        let (id, vault_name) = (vault.id(), vault.name.clone());
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Write,
            &id,
            "Microsoft.KeyVault/vaults/write",
            &actor,
        ));
        audit::operator_change(self.shared, &id, &vault_name, "VaultPatch", Object::Vault);
        Ok(json)
    }

    /// Soft-deletes a vault; its role assignments are deleted, as Azure does.
    pub fn delete_vault(&self, name: &str) -> Result<(), AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let index = tenant
            .vaults
            .iter()
            .position(|v| eq_ci(&v.name, name))
            .ok_or_else(|| not_found("vault"))?;
        let vault = tenant.vaults.remove(index);
        let (id, vault_name) = (vault.id(), vault.name.clone());
        tenant
            .role_assignments
            .retain(|a| !scope_covers(&id, &a.scope));
        let now = clock::now_unix();
        let retention = i64::from(vault.soft_delete_retention_days.unwrap_or(90));
        tenant.deleted_vaults.push(DeletedVault {
            vault,
            deletion_date: now,
            scheduled_purge_date: now + retention * clock::DAY,
        });
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Delete,
            &id,
            "Microsoft.KeyVault/vaults/delete",
            &actor,
        ));
        audit::operator_change(self.shared, &id, &vault_name, "VaultDelete", Object::Vault);
        Ok(())
    }

    /// Recovers a soft-deleted vault (role assignments stay gone).
    pub fn recover_vault(&self, name: &str) -> Result<Value, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let index = tenant
            .deleted_vaults
            .iter()
            .position(|d| eq_ci(&d.vault.name, name))
            .ok_or_else(|| not_found("deleted vault"))?;
        let deleted = tenant.deleted_vaults.remove(index);
        let json = crate::arm::vault_json(&deleted.vault);
        let (id, vault_name) = (deleted.vault.id(), deleted.vault.name.clone());
        tenant.vaults.push(deleted.vault);
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Write,
            &id,
            "Microsoft.KeyVault/vaults/write",
            &actor,
        ));
        audit::operator_change(self.shared, &id, &vault_name, "VaultRecover", Object::Vault);
        Ok(json)
    }

    /// Sets the key permissions of one object id's access policy (empty list removes it).
    pub fn set_access_policy(
        &self,
        vault: &str,
        object_id: &str,
        keys: &[String],
    ) -> Result<Value, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let v = tenant.vault_mut(vault).ok_or_else(|| not_found("vault"))?;
        let tenant_id = v.tenant_id.clone();
        match v
            .access_policies
            .iter_mut()
            .find(|p| eq_ci(&p.object_id, object_id))
        {
            Some(p) => p.keys = keys.to_vec(),
            None => v.access_policies.push(AccessPolicy {
                tenant_id,
                object_id: object_id.to_owned(),
                application_id: None,
                keys: keys.to_vec(),
                secrets: Vec::new(),
                certificates: Vec::new(),
            }),
        }
        v.access_policies
            .retain(|p| !(p.keys.is_empty() && p.secrets.is_empty() && p.certificates.is_empty()));
        let (id, name, uri) = (v.id(), v.name.clone(), format!("{}/", v.uri()));
        let list: Vec<Value> = v
            .access_policies
            .iter()
            .map(crate::arm::access_policy_json)
            .collect();
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Write,
            &format!("{id}/accessPolicies/replace"),
            "Microsoft.KeyVault/vaults/accessPolicies/write",
            &actor,
        ));
        self.emit(
            KeyVaultEvent {
                event: "VaultAccessPolicyChanged",
                vault_id: &id,
                vault_name: &name,
                object_type: "Vault",
                object_name: &name,
                id: &uri,
                version: None,
                nbf: None,
                exp: None,
            }
            .to_json(),
        );
        // Key Vault logs an access-policy change as `VaultPatch`, then the Event Grid
        // notification it publishes.
        audit::operator_change(self.shared, &id, &name, "VaultPatch", Object::Vault);
        audit::access_policy_notification(self.shared, &id, &name);
        Ok(json!({ "accessPolicies": list }))
    }

    /// Changes a key version: `enabled`, `expiresInDays`, `exp`/`nbf` (unix seconds or `null`),
    /// `version` (default: the latest).
    pub fn patch_key(&self, vault: &str, key: &str, body: &Value) -> Result<Value, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let k = tenant
            .vault_mut(vault)
            .and_then(|v| v.key_mut(key))
            .ok_or_else(|| not_found("key"))?;
        let version = body
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let v = match &version {
            Some(ver) => k.version_mut(ver),
            None => k.versions.last_mut(),
        }
        .ok_or_else(|| not_found("key version"))?;
        let now = clock::now_unix();
        if let Some(Some(enabled)) = tri::<bool>(body, "enabled")? {
            v.enabled = enabled;
        }
        if let Some(days) = tri::<i64>(body, "expiresInDays")? {
            v.exp = days.map(|d| now + d * clock::DAY);
        }
        if let Some(exp) = tri::<i64>(body, "exp")? {
            v.exp = exp;
        }
        if let Some(nbf) = tri::<i64>(body, "nbf")? {
            v.nbf = nbf;
        }
        v.updated = now;
        let json = serde_json::to_value(&*v).unwrap_or(Value::Null);
        let version = v.version.clone();
        let (vault_id, vault_name, key_name) = key_names(&tenant, vault, key);
        drop(tenant);
        let object = Object::KeyVersion(&key_name, &version);
        audit::operator_change(self.shared, &vault_id, &vault_name, "KeyUpdate", object);
        Ok(json)
    }

    /// Rotates a key (new version) and records `KeyNewVersionCreated`; returns the new version.
    pub fn rotate_key(&self, vault: &str, key: &str) -> Result<String, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let (vault_id, version) = tenant
            .rotate_key(vault, key, clock::now_unix())
            .ok_or_else(|| not_found("key"))?;
        let vault_name = tenant
            .vault(vault)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let key_name = tenant
            .vault(vault)
            .and_then(|v| v.key(key))
            .map(|k| k.name.clone())
            .unwrap_or_default();
        drop(tenant);
        let id = format!(
            "{}/keys/{key_name}/{}",
            crate::ids::vault_uri(&vault_name),
            version.version
        );
        self.emit(
            KeyVaultEvent {
                event: "KeyNewVersionCreated",
                vault_id: &vault_id,
                vault_name: &vault_name,
                object_type: "Key",
                object_name: &key_name,
                id: &id,
                version: Some(&version.version),
                nbf: version.nbf,
                exp: version.exp,
            }
            .to_json(),
        );
        let object = Object::KeyVersion(&key_name, &version.version);
        audit::operator_change(self.shared, &vault_id, &vault_name, "KeyRotate", object);
        Ok(version.version)
    }

    /// Deletes a key.
    pub fn delete_key(&self, vault: &str, key: &str) -> Result<(), AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let v = tenant.vault_mut(vault).ok_or_else(|| not_found("vault"))?;
        let before = v.keys.len();
        v.keys.retain(|k| !eq_ci(&k.name, key));
        if v.keys.len() == before {
            return Err(not_found("key"));
        }
        let (vault_id, vault_name) = (v.id(), v.name.clone());
        drop(tenant);
        let object = Object::Key(key);
        audit::operator_change(self.shared, &vault_id, &vault_name, "KeyDelete", object);
        Ok(())
    }

    /// Sets (data-plane JSON shape) or removes (`null`) a key's rotation policy.
    pub fn set_rotation_policy(
        &self,
        vault: &str,
        key: &str,
        policy: &Value,
    ) -> Result<(), AdminError> {
        let parsed = if policy.is_null() {
            None
        } else {
            Some(crate::keyvault::parse_policy_for_admin(policy, clock::now_unix()).map_err(bad)?)
        };
        let mut tenant = lock(&self.shared.tenant);
        let k = tenant
            .vault_mut(vault)
            .and_then(|v| v.key_mut(key))
            .ok_or_else(|| not_found("key"))?;
        k.rotation_policy = parsed;
        let (vault_id, vault_name, key_name) = key_names(&tenant, vault, key);
        drop(tenant);
        let object = Object::RotationPolicy(&key_name);
        audit::operator_change(
            self.shared,
            &vault_id,
            &vault_name,
            "KeyRotationPolicySet",
            object,
        );
        Ok(())
    }

    /// A service uses a customer-managed key: `operation` is `wrapKey`, `unwrapKey` or `get`,
    /// called with `principal_object_id`'s token (the workspace's identity, or Storage and
    /// Cosmos DB on its behalf); `key` is `name` or `name/version` (default: the latest). Access
    /// is decided as the data plane decides it (access policies or RBAC data actions), then the
    /// version must exist (404) and be enabled (403). Records `KeyWrap`, `KeyUnwrap` or
    /// `KeyGet` with the outcome and returns its HTTP status; an unknown vault or operation is
    /// an error and records nothing.
    pub fn use_key(
        &self,
        vault: &str,
        key: &str,
        operation: &str,
        principal_object_id: &str,
    ) -> Result<u16, AdminError> {
        audit::use_key(
            self.shared,
            vault,
            key,
            operation,
            principal_object_id,
            audit::SERVICE_CLIENT,
        )
    }

    /// Changes a workspace: `keyIdentifier` (not validated), `onlineEndpoints`/`batchEndpoints`
    /// (lists of names), `publicNetworkAccess`.
    pub fn patch_workspace(&self, name: &str, body: &Value) -> Result<Value, AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let tenant_id = tenant.tenant_id.clone();
        let w = tenant
            .workspace_mut(name)
            .ok_or_else(|| not_found("workspace"))?;
        let id = w.id();
        if let Some(k) = body.get("keyIdentifier").and_then(Value::as_str) {
            let enc = w
                .encryption
                .as_mut()
                .ok_or_else(|| bad("workspace has no CMK"))?;
            enc.key_identifier = k.to_owned();
        }
        if let Some(Some(p)) = tri::<String>(body, "publicNetworkAccess")? {
            w.public_network_access = p;
        }
        let endpoints = |list: Option<Option<Vec<String>>>, kind: &str| -> Option<Vec<Endpoint>> {
            list.map(|names| {
                names
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| Endpoint {
                        principal_id: crate::ids::stable_uuid(&format!(
                            "principal:{}/{kind}/{}",
                            id.to_ascii_lowercase(),
                            n.to_ascii_lowercase()
                        )),
                        name: n,
                        auth_mode: "Key".to_owned(),
                    })
                    .collect()
            })
        };
        if let Some(list) = endpoints(tri(body, "onlineEndpoints")?, "onlineEndpoints") {
            w.online_endpoints = list;
        }
        if let Some(list) = endpoints(tri(body, "batchEndpoints")?, "batchEndpoints") {
            w.batch_endpoints = list;
        }
        w.updated = clock::now_unix();
        w.last_modified_by = actor.object_id.clone();
        let json = crate::arm::workspace_json(w, &tenant_id);
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Write,
            &id,
            "Microsoft.MachineLearningServices/workspaces/write",
            &actor,
        ));
        Ok(json)
    }

    /// Creates or replaces a resource served verbatim (ARM GET and Resource Graph), such as
    /// the encrypted resources of [`crate::encrypted`]; `id`, `name` and `type` are filled in
    /// from the id when the body lacks them.
    pub fn put_resource(&self, id: &str, body: &Value) -> Result<Value, AdminError> {
        let parts =
            crate::ids::ArmIdParts::parse(id).ok_or_else(|| bad("not an ARM resource id"))?;
        let mut body = body.clone();
        let obj = body
            .as_object_mut()
            .ok_or_else(|| bad("the body must be an object"))?;
        obj.entry("id").or_insert_with(|| json!(id));
        obj.entry("name").or_insert_with(|| json!(parts.name()));
        let types: Vec<&str> = parts.segments.iter().map(|(t, _)| t.as_str()).collect();
        obj.entry("type")
            .or_insert_with(|| json!(format!("{}/{}", parts.namespace, types.join("/"))));
        let mut tenant = lock(&self.shared.tenant);
        tenant.resources.retain(|r| !crate::ids::eq_ci(&r.id, id));
        tenant.resources.push(crate::model::GenericResource {
            id: id.to_owned(),
            body: body.clone(),
        });
        Ok(body)
    }

    /// Adds the Microsoft-managed storage, Cosmos DB and Search of a CMK workspace to its
    /// service-provisioned resource group ([`crate::encrypted::managed_resources`]); their ids.
    pub fn add_managed_resources(&self, workspace: &str) -> Result<Vec<String>, AdminError> {
        let resources = crate::encrypted::managed_resources(&lock(&self.shared.tenant), workspace);
        if resources.is_empty() {
            return Err(not_found("CMK workspace"));
        }
        resources
            .into_iter()
            .map(|(id, body)| self.put_resource(&id, &body).map(|_| id))
            .collect()
    }

    /// Deletes a workspace, as `DELETE` on it through ARM would: it is gone from ARM reads and
    /// Resource Graph (unless frozen), and `ResourceDeleteSuccess` of
    /// `Microsoft.MachineLearningServices/workspaces/delete` is recorded. Role assignments of
    /// its identity stay behind, as in Azure.
    pub fn delete_workspace(&self, name: &str) -> Result<(), AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let index = tenant
            .workspaces
            .iter()
            .position(|w| eq_ci(&w.name, name))
            .ok_or_else(|| not_found("workspace"))?;
        let id = tenant.workspaces.remove(index).id();
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Delete,
            &id,
            "Microsoft.MachineLearningServices/workspaces/delete",
            &actor,
        ));
        Ok(())
    }

    /// Adds a role assignment; returns its name.
    pub fn add_role_assignment(&self, spec: &RoleAssignmentSpec) -> Result<String, AdminError> {
        let role =
            roles::find(&spec.role).ok_or_else(|| bad(format!("unknown role '{}'", spec.role)))?;
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let serial = tenant.serial();
        let name = spec.name.clone().unwrap_or_else(|| {
            crate::ids::stable_uuid(&format!("admin-assignment:{serial}:{}", spec.principal_id))
        });
        let assignment = crate::model::RoleAssignment {
            name: name.clone(),
            scope: spec.scope.clone(),
            role_definition_guid: role.guid.to_owned(),
            principal_id: spec.principal_id.clone(),
            principal_type: spec
                .principal_type
                .clone()
                .unwrap_or_else(|| "ServicePrincipal".to_owned()),
            condition: spec.condition.clone(),
            created: clock::now_unix(),
            created_by: actor.object_id.clone(),
        };
        let id = assignment.id();
        tenant.role_assignments.push(assignment);
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Write,
            &id,
            "Microsoft.Authorization/roleAssignments/write",
            &actor,
        ));
        Ok(name)
    }

    /// Removes a role assignment by name.
    pub fn remove_role_assignment(&self, name: &str) -> Result<(), AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let index = tenant
            .role_assignments
            .iter()
            .position(|a| eq_ci(&a.name, name))
            .ok_or_else(|| not_found("role assignment"))?;
        let removed = tenant.role_assignments.remove(index);
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Delete,
            &removed.id(),
            "Microsoft.Authorization/roleAssignments/delete",
            &actor,
        ));
        Ok(())
    }

    /// Sets a provider's registration state (`Registered`, `NotRegistered`, …).
    pub fn set_provider_state(
        &self,
        subscription: &str,
        namespace: &str,
        state: &str,
    ) -> Result<(), AdminError> {
        let mut tenant = lock(&self.shared.tenant);
        let actor = operator_actor(&tenant);
        let p = tenant
            .subscriptions
            .iter_mut()
            .find(|s| eq_ci(&s.id, subscription))
            .and_then(|s| {
                s.providers
                    .iter_mut()
                    .find(|p| eq_ci(&p.namespace, namespace))
            })
            .ok_or_else(|| not_found("provider"))?;
        p.registration_state = state.to_owned();
        let action = if state == "Registered" {
            "register"
        } else {
            "unregister"
        };
        let operation = format!("{}/{action}/action", p.namespace);
        let resource = format!("/subscriptions/{subscription}/providers/{}", p.namespace);
        drop(tenant);
        self.emit(resource_event(
            ResourceEventKind::Action,
            &resource,
            &operation,
            &actor,
        ));
        Ok(())
    }
}

fn reply_of<T: serde::Serialize>(result: Result<T, AdminError>) -> Reply {
    match result {
        Ok(v) => Reply::ok(serde_json::to_value(v).unwrap_or(Value::Null)),
        Err(e) => Reply::json(
            e.status,
            json!({"error": {"code": "AdminError", "message": e.message}}),
        ),
    }
}

fn filter_of(ctx: &Ctx) -> RecordFilter {
    RecordFilter {
        operation: ctx.q("operation").map(str::to_owned),
        host: ctx.q("host").map(str::to_owned),
        since: ctx.q("since").and_then(|s| s.parse().ok()),
        reads_only: ctx.q("readsOnly").is_some_and(|v| v == "true"),
    }
}

/// Serves `/_sim/...`.
pub fn handle(ctx: &mut Ctx) -> Reply {
    let shared = ctx.shared;
    let admin = Admin::new(shared);
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return Reply::error(400, "AdminError", &format!("invalid JSON body: {e}")),
    };
    let segs: Vec<String> = ctx.segs.iter().skip(1).cloned().collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (ctx.method.as_str(), s.as_slice()) {
        ("GET", ["info"]) => Reply::ok(lock(&shared.info).clone().unwrap_or(Value::Null)),
        ("GET", ["state"]) => {
            Reply::ok(serde_json::to_value(&*lock(&shared.tenant)).unwrap_or(Value::Null))
        }
        ("GET", ["counters"]) => Reply::ok(
            serde_json::to_value(lock(&shared.telemetry).counters()).unwrap_or(Value::Null),
        ),
        ("POST", ["reset-counters"]) => {
            lock(&shared.telemetry).reset();
            Reply::empty(204)
        }
        ("GET", ["requests"]) => Reply::ok(json!(lock(&shared.telemetry).records(&filter_of(ctx)))),
        ("GET", ["peak-rate"]) => {
            let window = ctx
                .q("windowMs")
                .and_then(|w| w.parse().ok())
                .unwrap_or(1000.0);
            Reply::ok(json!(
                lock(&shared.telemetry).peak_rate(window, &filter_of(ctx))
            ))
        }
        ("GET", ["faults"]) => Reply::ok(json!(lock(&shared.faults).list())),
        ("POST", ["faults"]) => {
            let faults: Result<Vec<Fault>, _> = if body.is_array() {
                serde_json::from_value(body)
            } else {
                serde_json::from_value(body).map(|f| vec![f])
            };
            match faults {
                Ok(list) => {
                    let mut table = lock(&shared.faults);
                    let ids: Vec<u64> = list.into_iter().map(|f| table.add(f)).collect();
                    Reply::json(201, json!({ "ids": ids }))
                }
                Err(e) => Reply::error(400, "AdminError", &format!("invalid fault: {e}")),
            }
        }
        ("DELETE", ["faults"]) => {
            lock(&shared.faults).clear();
            Reply::empty(204)
        }
        ("DELETE", ["faults", id]) => match id.parse().map(|id| lock(&shared.faults).remove(id)) {
            Ok(true) => Reply::empty(204),
            _ => Reply::error(404, "AdminError", "no such fault"),
        },
        ("GET", ["events"]) => {
            let since = ctx
                .q("since")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let wanted = ctx.q("type").map(str::to_owned);
            let events = lock(&shared.events);
            let total = events.len();
            let list: Vec<Value> = events
                .iter()
                .skip(since)
                .filter(|e| {
                    wanted.as_deref().is_none_or(|t| {
                        e.get("eventType")
                            .and_then(Value::as_str)
                            .is_some_and(|x| x.eq_ignore_ascii_case(t))
                    })
                })
                .cloned()
                .collect();
            Reply::ok(Value::Array(list)).with_header("x-sim-next-since", &total.to_string())
        }
        ("DELETE", ["events"]) => {
            lock(&shared.events).clear();
            Reply::empty(204)
        }
        ("POST", ["token"]) => {
            let tenant = lock(&shared.tenant);
            let principal = body
                .get("principalId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| tenant.app.principal_id.clone())
                .unwrap_or_default();
            let audience = body
                .get("audience")
                .and_then(Value::as_str)
                .unwrap_or("https://management.azure.com")
                .to_owned();
            let client_id = if tenant.app.principal_id.as_deref() == Some(principal.as_str()) {
                tenant.app.client_id.clone()
            } else {
                crate::ids::stable_uuid(&format!("client-of:{principal}"))
            };
            drop(tenant);
            let subject = Subject {
                object_id: principal,
                client_id,
                mi_resource_id: None,
            };
            let (token, exp) = shared.issuer.issue(&subject, &audience, ctx.now);
            Reply::ok(json!({"accessToken": token, "expiresOn": exp}))
        }
        ("PATCH", ["vaults", name]) => reply_of(admin.patch_vault(name, &body)),
        ("DELETE", ["vaults", name]) => reply_of(admin.delete_vault(name)),
        ("POST", ["vaults", name, "recover"]) => reply_of(admin.recover_vault(name)),
        ("PUT", ["vaults", name, "access-policies", object_id]) => {
            let keys: Vec<String> = body
                .get("keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            reply_of(admin.set_access_policy(name, object_id, &keys))
        }
        ("PATCH", ["vaults", vault, "keys", key]) => reply_of(admin.patch_key(vault, key, &body)),
        ("DELETE", ["vaults", vault, "keys", key]) => reply_of(admin.delete_key(vault, key)),
        ("POST", ["vaults", vault, "keys", key, "rotate"]) => reply_of(
            admin
                .rotate_key(vault, key)
                .map(|v| json!({ "version": v })),
        ),
        ("PUT", ["vaults", vault, "keys", key, "rotation-policy"]) => {
            reply_of(admin.set_rotation_policy(vault, key, &body))
        }
        ("POST", ["vaults", vault, "keys", key, "use"]) => {
            let text = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
            let key = match text("version") {
                "" => (*key).to_owned(),
                version => format!("{key}/{version}"),
            };
            let client_info = match text("clientInfo") {
                "" => audit::SERVICE_CLIENT,
                given => given,
            };
            let principal = text("principalId");
            reply_of(
                audit::use_key(
                    shared,
                    vault,
                    &key,
                    text("operation"),
                    principal,
                    client_info,
                )
                .map(|status| json!({ "status": status })),
            )
        }
        ("GET", ["audit"]) => {
            let records = if ctx.q("drain").is_some_and(|v| v == "true") {
                std::mem::take(&mut *lock(&shared.audit))
            } else {
                lock(&shared.audit).clone()
            };
            Reply::ok(Value::Array(records))
        }
        ("PATCH", ["workspaces", name]) => reply_of(admin.patch_workspace(name, &body)),
        ("POST", ["workspaces", name, "managed-resources"]) => {
            reply_of(admin.add_managed_resources(name))
        }
        ("POST", ["resources"]) => match body.get("id").and_then(Value::as_str) {
            Some(id) => reply_of(admin.put_resource(id, &body["body"])),
            None => Reply::error(
                400,
                "AdminError",
                "`id` (an ARM id) and `body` are required",
            ),
        },
        ("DELETE", ["workspaces", name]) => reply_of(admin.delete_workspace(name)),
        ("POST", ["role-assignments"]) => {
            match serde_json::from_value::<RoleAssignmentSpec>(body) {
                Ok(spec) => reply_of(
                    admin
                        .add_role_assignment(&spec)
                        .map(|name| json!({ "name": name })),
                ),
                Err(e) => Reply::error(400, "AdminError", &format!("invalid role assignment: {e}")),
            }
        }
        ("DELETE", ["role-assignments", name]) => reply_of(admin.remove_role_assignment(name)),
        ("PUT", ["subscriptions", sub, "providers", namespace]) => {
            let state = body
                .get("registrationState")
                .and_then(Value::as_str)
                .unwrap_or("NotRegistered")
                .to_owned();
            reply_of(admin.set_provider_state(sub, namespace, &state))
        }
        _ => Reply::error(
            404,
            "AdminError",
            &format!("no admin route {} {}", ctx.method, ctx.path),
        ),
    }
}
