//! Azure Resource Manager (`management.azure.com`): routing, authentication and the error shapes
//! ARM uses. Paths are matched case-insensitively (azure-notes Trap T1); each operation is named by
//! its Azure operationId so fault rules and counters read like the REST reference.

mod authz;
mod eventgrid;
mod management;
mod misc;
mod ml;
mod vaults;

use crate::graph;
use crate::http::{self, ARM_AUDIENCES, Ctx, Reply, Route};
use crate::token::TokenError;
use serde_json::{Value, json};

pub(crate) use eventgrid::wire;
pub(crate) use ml::{endpoint_json, workspace_json};
pub(crate) use vaults::{access_policy_json, vault_json};

/// `400 MissingApiVersionParameter` etc.: ARM's error body (`ErrorResponse`).
pub(crate) fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::error(status, code, message)
}

/// 404 for a resource id.
pub(crate) fn not_found(type_name: &str, name: &str, resource_group: &str) -> Reply {
    error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource '{type_name}/{name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

/// 400 for an unreadable body.
pub(crate) fn bad_body(detail: &str) -> Reply {
    error(
        400,
        "InvalidRequestContent",
        &format!("The request content was invalid and could not be deserialized: '{detail}'."),
    )
}

/// 409 when the resource provider is not registered (writes only).
pub(crate) fn check_registered(
    ctx: &Ctx,
    subscription: &str,
    namespace: &str,
) -> Result<(), Reply> {
    let tenant = ctx.tenant();
    let registered = tenant
        .subscription(subscription)
        .and_then(|s| {
            s.providers
                .iter()
                .find(|p| p.namespace.eq_ignore_ascii_case(namespace))
        })
        .is_none_or(|p| p.registration_state == "Registered");
    if registered {
        Ok(())
    } else {
        Err(error(
            409,
            "MissingSubscriptionRegistration",
            &format!(
                "The subscription is not registered to use namespace '{namespace}'. See https://aka.ms/rps-not-found for how to register subscriptions."
            ),
        ))
    }
}

/// `systemData` from modification times.
pub(crate) fn system_data(created: i64, updated: i64, modified_by: &str) -> Value {
    json!({
        "createdAt": crate::clock::rfc3339(created),
        "createdBy": "operator@contoso.com",
        "createdByType": "User",
        "lastModifiedAt": crate::clock::rfc3339(updated),
        "lastModifiedBy": modified_by,
        "lastModifiedByType": "Application",
    })
}

/// Verifies the bearer token (audience ARM), the api-version, and that the subscription exists.
pub fn authenticate(ctx: &mut Ctx) -> Result<(), Reply> {
    let claims = match http::bearer(ctx) {
        Ok(Some(claims)) => claims,
        Ok(None) => {
            let tenant = ctx.tenant().tenant_id.clone();
            return Err(error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .with_header(
                "WWW-Authenticate",
                &format!(
                    "Bearer authorization_uri=\"https://login.microsoftonline.com/{tenant}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\""
                ),
            ));
        }
        Err(TokenError::Expired) => {
            return Err(error(
                401,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            ));
        }
        Err(_) => {
            return Err(error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            ));
        }
    };
    if !http::audience_ok(&claims, ARM_AUDIENCES) {
        return Err(error(
            401,
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
                claims.audience
            ),
        ));
    }
    ctx.caller = Some(claims);
    match ctx.q("api-version") {
        None | Some("") => {
            return Err(error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        Some(v) if !api_version_shape(v) => {
            return Err(error(
                400,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{v}' is invalid. The supported versions are '2024-11-01,2023-07-01,2022-12-01'."
                ),
            ));
        }
        Some(_) => {}
    }
    if ctx.seg_is(0, "subscriptions")
        && let Some(sub) = ctx.segs.get(1)
        && ctx.tenant().subscription(sub).is_none()
    {
        return Err(error(
            404,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        ));
    }
    Ok(())
}

fn api_version_shape(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    date.len() == 10
        && date.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// The RBAC action ARM checks for a request, derived from the path like ARM does:
/// `{namespace}/{type}[/{childType}…]/{read|write|delete}`, `{namespace}/register/action`.
/// Tenant-level role definitions and Resource Graph are not checked.
fn management_action(ctx: &Ctx) -> Option<String> {
    let p = ctx
        .segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"));
    let verb = match ctx.method.as_str() {
        "GET" => "read",
        "PUT" | "PATCH" => "write",
        "DELETE" => "delete",
        _ => "action",
    };
    let Some(p) = p else {
        return match ctx.segs.len() {
            2 => Some("Microsoft.Resources/subscriptions/read".to_owned()),
            4 => Some("Microsoft.Resources/subscriptions/resourceGroups/read".to_owned()),
            _ => None,
        };
    };
    if p == 0 {
        return None;
    }
    let providers_read = || Some("Microsoft.Resources/subscriptions/providers/read".to_owned());
    let Some(namespace) = ctx.segs.get(p + 1) else {
        return providers_read();
    };
    let rest = &ctx.segs[p + 2..];
    if rest.is_empty() {
        return providers_read();
    }
    if ctx.method == "POST" && rest.len() == 1 {
        return Some(format!("{namespace}/{}/action", rest[0]));
    }
    let types: Vec<&str> = rest.iter().step_by(2).map(String::as_str).collect();
    Some(format!("{namespace}/{}/{verb}", types.join("/")))
}

/// 403 `AuthorizationFailed` unless the caller holds a role granting `action` at `scope`
/// (or above), when the tenant enforces management RBAC.
pub(crate) fn authorize(ctx: &Ctx, action: &str, scope: &str) -> Result<(), Reply> {
    let tenant = ctx.tenant();
    let Some(caller) = &ctx.caller else {
        return Ok(());
    };
    ctx.check(action);
    if !tenant.enforce_management_rbac || tenant.can(&caller.object_id, action, scope) {
        return Ok(());
    }
    Err(error(
        403,
        "AuthorizationFailed",
        &format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            caller.client_id, caller.object_id
        ),
    ))
}

/// 403 `LinkedAuthorizationFailed` unless the caller may also perform `action` on a resource
/// the request links to (`scope`), as ARM answers when the request's own action is allowed
/// but a linked resource's is not: Event Grid checks the event source and an AzureFunction
/// destination, Azure Monitor the event hub rule of a diagnostic setting.
pub(crate) fn authorize_linked(ctx: &Ctx, action: &str, scope: &str) -> Result<(), Reply> {
    authorize(ctx, action, scope).map_err(|_| {
        let caller = ctx.caller.as_ref();
        error(
            403,
            "LinkedAuthorizationFailed",
            &format!(
                "The client '{}' with object id '{}' has permission to perform action '{}' on scope '/{}'; however, it does not have permission to perform action(s) '{action}' on the linked scope(s) '{scope}' (respectively) or the linked scope(s) are invalid.",
                caller.map(|c| c.client_id.as_str()).unwrap_or_default(),
                caller.map(|c| c.object_id.as_str()).unwrap_or_default(),
                management_action(ctx).unwrap_or_default(),
                ctx.segs.join("/")
            ),
        )
    })
}

/// Maps a request to an operation.
pub fn route(ctx: &Ctx) -> Result<Route, Reply> {
    let lower = ctx.lower_segs();
    let s: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = ctx.method.as_str();
    let resource = Some(format!("/{}", ctx.segs.join("/")));
    let action = management_action(ctx);
    let ok = |operation: &'static str, handler: fn(&mut Ctx) -> Reply| {
        Ok(Route {
            operation,
            resource: resource.clone(),
            handler,
            action: action.clone(),
        })
    };
    let unsupported = || {
        Err(error(
            405,
            "UnsupportedOperation",
            &format!("azure-sim does not implement {m} {}", ctx.path),
        ))
    };
    // Extension resources (role assignments/definitions) at any scope come first.
    match (m, s.as_slice()) {
        (
            "GET",
            [
                ..,
                "providers",
                "microsoft.authorization",
                "roleassignments",
            ],
        ) => {
            return ok("RoleAssignments_ListForScope", authz::list_assignments);
        }
        (
            _,
            [
                ..,
                "providers",
                "microsoft.authorization",
                "roleassignments",
                _,
            ],
        ) => {
            return match m {
                "PUT" => ok("RoleAssignments_Create", authz::create_assignment),
                "GET" => ok("RoleAssignments_Get", authz::get_assignment),
                "DELETE" => ok("RoleAssignments_Delete", authz::delete_assignment),
                _ => unsupported(),
            };
        }
        (
            "GET",
            [
                ..,
                "providers",
                "microsoft.authorization",
                "roledefinitions",
                _,
            ],
        ) => {
            return ok("RoleDefinitions_Get", authz::get_definition);
        }
        (
            "GET",
            [
                ..,
                "providers",
                "microsoft.authorization",
                "roledefinitions",
            ],
        ) => {
            return ok("RoleDefinitions_List", authz::list_definitions);
        }
        ("GET", [.., "providers", "microsoft.insights", "diagnosticsettings"]) => {
            return ok("DiagnosticSettings_List", eventgrid::list_settings);
        }
        (
            _,
            [
                ..,
                "providers",
                "microsoft.insights",
                "diagnosticsettings",
                _,
            ],
        ) => {
            return match m {
                "PUT" => ok("DiagnosticSettings_CreateOrUpdate", eventgrid::put_setting),
                "GET" => ok("DiagnosticSettings_Get", eventgrid::get_setting),
                "DELETE" => ok("DiagnosticSettings_Delete", eventgrid::delete_setting),
                _ => unsupported(),
            };
        }
        _ => {}
    }
    match (m, s.as_slice()) {
        ("POST", ["providers", "microsoft.resourcegraph", "resources"]) => {
            ok("ResourceGraph_Resources", graph::resources)
        }
        (
            "GET",
            [
                "providers",
                "microsoft.management",
                "managementgroups",
                _,
                "descendants",
            ],
        ) => ok("ManagementGroups_GetDescendants", management::descendants),
        ("GET", ["subscriptions", _]) => ok("Subscriptions_Get", misc::get_subscription),
        ("GET", ["subscriptions", _, "providers"]) => ok("Providers_List", misc::list_providers),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.keyvault",
                "deletedvaults",
            ],
        ) => ok("Vaults_ListDeleted", vaults::list_deleted),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.keyvault",
                "locations",
                _,
                "deletedvaults",
                _,
            ],
        ) => ok("Vaults_GetDeleted", vaults::get_deleted),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.keyvault",
                "vaults",
            ],
        ) => ok("Vaults_ListBySubscription", vaults::list),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.eventgrid",
                "systemtopics",
            ],
        ) => ok("SystemTopics_ListBySubscription", eventgrid::list_topics),
        (
            _,
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.eventgrid",
                "systemtopics",
                rest @ ..,
            ],
        ) => match (m, rest) {
            ("GET", []) => ok("SystemTopics_ListByResourceGroup", eventgrid::list_topics),
            ("GET", [_]) => ok("SystemTopics_Get", eventgrid::get_topic),
            ("PUT", [_]) => ok("SystemTopics_CreateOrUpdate", eventgrid::put_topic),
            ("DELETE", [_]) => ok("SystemTopics_Delete", eventgrid::delete_topic),
            ("GET", [_, "eventsubscriptions"]) => ok(
                "SystemTopicEventSubscriptions_ListBySystemTopic",
                eventgrid::list_subscriptions,
            ),
            ("GET", [_, "eventsubscriptions", _]) => ok(
                "SystemTopicEventSubscriptions_Get",
                eventgrid::get_subscription,
            ),
            ("PUT", [_, "eventsubscriptions", _]) => ok(
                "SystemTopicEventSubscriptions_CreateOrUpdate",
                eventgrid::put_subscription,
            ),
            ("DELETE", [_, "eventsubscriptions", _]) => ok(
                "SystemTopicEventSubscriptions_Delete",
                eventgrid::delete_subscription,
            ),
            _ => unsupported(),
        },
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "workspaces",
            ],
        ) => ok("Workspaces_ListBySubscription", ml::list),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "locations",
                _,
                "workspaceoperationsstatus",
                _,
            ],
        ) => ok("WorkspaceOperationsStatus_Get", ml::operation_status),
        ("GET", ["subscriptions", _, "providers", _]) => ok("Providers_Get", misc::get_provider),
        ("POST", ["subscriptions", _, "providers", _, "register"]) => {
            ok("Providers_Register", misc::register_provider)
        }
        ("GET", ["subscriptions", _, "resourcegroups", _]) => {
            ok("ResourceGroups_Get", misc::get_resource_group)
        }
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.keyvault",
                "vaults",
            ],
        ) => ok("Vaults_ListByResourceGroup", vaults::list),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "workspaces",
            ],
        ) => ok("Workspaces_ListByResourceGroup", ml::list),
        (
            _,
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.keyvault",
                "vaults",
                _,
                rest @ ..,
            ],
        ) => match (m, rest) {
            ("GET", []) => ok("Vaults_Get", vaults::get),
            ("PATCH", []) => ok("Vaults_Update", vaults::patch),
            ("PUT", ["accesspolicies", _]) => {
                ok("Vaults_UpdateAccessPolicy", vaults::update_access_policy)
            }
            ("GET", ["keys"]) => ok("Keys_List", vaults::list_keys),
            ("GET", ["keys", _]) => ok("Keys_Get", vaults::get_key),
            ("GET", ["keys", _, "versions"]) => ok("Keys_ListVersions", vaults::list_key_versions),
            ("GET", ["keys", _, "versions", _]) => ok("Keys_GetVersion", vaults::get_key_version),
            _ => unsupported(),
        },
        (
            _,
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.machinelearningservices",
                "workspaces",
                _,
                rest @ ..,
            ],
        ) => match (m, rest) {
            ("GET", []) => ok("Workspaces_Get", ml::get),
            ("PATCH", []) => ok("Workspaces_Update", ml::patch),
            ("GET", ["onlineendpoints"]) => ok("OnlineEndpoints_List", ml::list_online),
            ("GET", ["onlineendpoints", _]) => ok("OnlineEndpoints_Get", ml::get_online),
            ("GET", ["batchendpoints"]) => ok("BatchEndpoints_List", ml::list_batch),
            ("GET", ["batchendpoints", _]) => ok("BatchEndpoints_Get", ml::get_batch),
            _ => unsupported(),
        },
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.storage",
                "storageaccounts",
                _,
            ],
        ) => ok("StorageAccounts_GetProperties", misc::get_generic),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.documentdb",
                "databaseaccounts",
                _,
            ],
        ) => ok("DatabaseAccounts_Get", misc::get_generic),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.search",
                "searchservices",
                _,
            ],
        ) => ok("Services_Get", misc::get_generic),
        ("GET", ["subscriptions", _, "resourcegroups", _, "providers", ..]) => {
            ok("Resources_Get", misc::get_generic)
        }
        _ => Err(error(
            404,
            "NoRegisteredProviderFound",
            &format!("azure-sim does not serve {m} {}", ctx.path),
        )),
    }
}
