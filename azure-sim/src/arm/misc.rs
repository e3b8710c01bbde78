//! Subscriptions, resource groups, resource provider registrations, and resources served
//! verbatim (storage accounts, Cosmos DB accounts, Search services, …).

use super::error;
use crate::events::{ResourceEventKind, resource_event};
use crate::http::{Ctx, Reply};
use crate::ids::{self, eq_ci};
use crate::model::{ProviderRegistration, Tenant};
use serde_json::{Value, json};

/// `Subscriptions_Get`.
pub(crate) fn get_subscription(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    match tenant.subscription(&sub) {
        Some(s) => Reply::ok(json!({
            "id": format!("/subscriptions/{}", s.id),
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": s.id,
            "tenantId": tenant.tenant_id,
            "displayName": s.display_name,
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off"
            }
        })),
        None => error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        ),
    }
}

fn resource_types(namespace: &str) -> Value {
    let (types, versions): (&[&str], &[&str]) = match namespace.to_ascii_lowercase().as_str() {
        "microsoft.keyvault" => (
            &[
                "vaults",
                "deletedVaults",
                "vaults/keys",
                "vaults/accessPolicies",
            ],
            &["2026-02-01", "2025-05-01", "2024-11-01", "2023-07-01"],
        ),
        "microsoft.machinelearningservices" => (
            &[
                "workspaces",
                "workspaces/onlineEndpoints",
                "workspaces/batchEndpoints",
            ],
            &["2026-09-01", "2026-07-01", "2025-09-01", "2024-04-01"],
        ),
        "microsoft.storage" => (
            &["storageAccounts"],
            &["2026-09-01", "2025-06-01", "2024-01-01"],
        ),
        "microsoft.documentdb" => (
            &["databaseAccounts"],
            &["2026-07-15", "2025-04-15", "2024-11-15"],
        ),
        "microsoft.search" => (
            &["searchServices"],
            &["2025-05-01", "2024-06-01-preview", "2023-11-01"],
        ),
        _ => (&[], &[]),
    };
    Value::Array(
        types
            .iter()
            .map(|t| {
                json!({
                    "resourceType": t,
                    "locations": ["West Europe", "North Europe", "East US", "West US"],
                    "apiVersions": versions,
                    "capabilities": "SupportsTags, SupportsLocation",
                })
            })
            .collect(),
    )
}

fn provider_json(subscription: &str, p: &ProviderRegistration) -> Value {
    json!({
        "id": format!("/subscriptions/{subscription}/providers/{}", p.namespace),
        "namespace": p.namespace,
        "registrationState": p.registration_state,
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": resource_types(&p.namespace),
    })
}

/// `Providers_List`.
pub(crate) fn list_providers(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    let value: Vec<Value> = tenant
        .subscription(&sub)
        .map(|s| {
            s.providers
                .iter()
                .map(|p| provider_json(&s.id, p))
                .collect()
        })
        .unwrap_or_default();
    Reply::ok(json!({ "value": value }))
}

fn invalid_namespace(namespace: &str) -> Reply {
    error(
        404,
        "InvalidResourceNamespace",
        &format!("The resource namespace '{namespace}' is invalid."),
    )
}

/// `Providers_Get`.
pub(crate) fn get_provider(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let namespace = ctx.segs.get(3).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    tenant
        .subscription(&sub)
        .and_then(|s| {
            s.providers
                .iter()
                .find(|p| eq_ci(&p.namespace, &namespace))
                .map(|p| provider_json(&s.id, p))
        })
        .map(Reply::ok)
        .unwrap_or_else(|| invalid_namespace(&namespace))
}

/// `Providers_Register`: the answer says `Registering`, the next GET says `Registered`.
pub(crate) fn register_provider(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let namespace = ctx.segs.get(3).cloned().unwrap_or_default();
    let mut tenant = ctx.tenant();
    let resource = format!("/subscriptions/{sub}/providers/{namespace}");
    let actor = ctx.actor(&tenant, &resource);
    let Some(p) = tenant
        .subscriptions
        .iter_mut()
        .find(|s| eq_ci(&s.id, &sub))
        .and_then(|s| {
            s.providers
                .iter_mut()
                .find(|p| eq_ci(&p.namespace, &namespace))
        })
    else {
        return invalid_namespace(&namespace);
    };
    let was_registered = p.registration_state == "Registered";
    p.registration_state = "Registered".to_owned();
    let mut shown = p.clone();
    if !was_registered {
        shown.registration_state = "Registering".to_owned();
    }
    let operation = format!("{}/register/action", shown.namespace);
    drop(tenant);
    ctx.emit(resource_event(
        ResourceEventKind::Action,
        &resource,
        &operation,
        &actor,
    ));
    Reply::ok(provider_json(&sub, &shown))
}

fn group_location(tenant: &Tenant, sub: &str, rg: &str) -> Option<(String, Option<String>)> {
    let in_group = |id: &str| {
        ids::ArmIdParts::parse(id)
            .is_some_and(|p| eq_ci(&p.subscription, sub) && eq_ci(&p.resource_group, rg))
    };
    if let Some(w) = tenant.workspaces.iter().find(|w| {
        eq_ci(&w.subscription, sub)
            && w.service_provisioned_resource_group
                .as_deref()
                .is_some_and(|m| eq_ci(m, rg))
    }) {
        return Some((w.location.clone(), Some(w.id())));
    }
    tenant
        .vaults
        .iter()
        .find(|v| in_group(&v.id()))
        .map(|v| v.location.clone())
        .or_else(|| {
            tenant
                .workspaces
                .iter()
                .find(|w| in_group(&w.id()))
                .map(|w| w.location.clone())
        })
        .or_else(|| {
            tenant.resources.iter().find(|r| in_group(&r.id)).map(|r| {
                r.body
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("westeurope")
                    .to_owned()
            })
        })
        .map(|l| (l, None))
}

/// `ResourceGroups_Get`: groups exist when something lives in them; a workspace's
/// service-provisioned group reports the workspace in `managedBy`.
pub(crate) fn get_resource_group(ctx: &mut Ctx) -> Reply {
    let sub = ctx.segs.get(1).cloned().unwrap_or_default();
    let rg = ctx.segs.get(3).cloned().unwrap_or_default();
    let tenant = ctx.tenant();
    match group_location(&tenant, &sub, &rg) {
        Some((location, managed_by)) => {
            let mut body = json!({
                "id": ids::resource_group_id(&sub, &rg),
                "name": rg,
                "type": "Microsoft.Resources/resourceGroups",
                "location": location,
                "tags": {},
                "properties": {"provisioningState": "Succeeded"},
            });
            if let (Some(m), Some(obj)) = (managed_by, body.as_object_mut()) {
                obj.insert("managedBy".into(), json!(m));
            }
            Reply::ok(body)
        }
        None => error(
            404,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        ),
    }
}

/// GET of a resource served verbatim.
pub(crate) fn get_generic(ctx: &mut Ctx) -> Reply {
    let id = format!("/{}", ctx.segs.join("/"));
    let tenant = ctx.tenant();
    match tenant
        .resources
        .iter()
        .find(|r| eq_ci(r.id.trim_end_matches('/'), &id))
    {
        Some(r) => Reply::ok(r.body.clone()),
        None => {
            let parts = ids::ArmIdParts::parse(&id);
            let (type_name, name, rg) = parts
                .map(|p| {
                    let types: Vec<&str> = p.segments.iter().map(|(t, _)| t.as_str()).collect();
                    (
                        format!("{}/{}", p.namespace, types.join("/")),
                        p.name().to_owned(),
                        p.resource_group,
                    )
                })
                .unwrap_or_default();
            super::not_found(&type_name, &name, &rg)
        }
    }
}
