//! `Microsoft.Authorization`: role assignments at any scope (with the `$filter`s cmk-guard
//! uses: `atScope()`, `principalId eq '…'`, `assignedTo('…')`, combinable with `and`) and the
//! built-in role definitions.

use super::{bad_body, error};
use crate::clock::rfc3339;
use crate::events::{ResourceEventKind, resource_event};
use crate::http::{Ctx, Reply};
use crate::ids::{eq_ci, scope_covers};
use crate::model::RoleAssignment;
use crate::roles;
use serde_json::{Value, json};

/// The scope part of the path (everything before `/providers/Microsoft.Authorization/...`).
fn scope_of(ctx: &Ctx) -> String {
    let idx = ctx
        .segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("Microsoft.Authorization"))
        .unwrap_or(1)
        .saturating_sub(1);
    format!("/{}", ctx.segs[..idx].join("/"))
}

fn subscription_of(scope: &str) -> Option<String> {
    let parts: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    (parts.len() >= 2 && eq_ci(parts[0], "subscriptions")).then(|| parts[1].to_owned())
}

/// The assignment body (2022-04-01 shape).
pub(crate) fn assignment_json(a: &RoleAssignment) -> Value {
    let definition = match subscription_of(&a.scope) {
        Some(sub) => format!(
            "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
            a.role_definition_guid
        ),
        None => format!(
            "/providers/Microsoft.Authorization/roleDefinitions/{}",
            a.role_definition_guid
        ),
    };
    json!({
        "id": a.id(),
        "name": a.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": definition,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
            "condition": a.condition,
            "conditionVersion": a.condition.as_ref().map(|_| "2.0"),
            "createdOn": rfc3339(a.created),
            "updatedOn": rfc3339(a.created),
            "createdBy": a.created_by,
            "updatedBy": a.created_by,
            "delegatedManagedIdentityResourceId": null,
            "description": null,
        }
    })
}

#[derive(Debug, Default, PartialEq)]
struct Filter {
    at_scope: bool,
    principal: Option<String>,
    assigned_to: Option<String>,
}

fn quoted(s: &str) -> Option<String> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .map(str::to_owned)
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    let mut filter = Filter::default();
    let lower = text.to_ascii_lowercase();
    let mut terms = Vec::new();
    let mut start = 0;
    for (i, _) in lower.match_indices(" and ") {
        terms.push(&text[start..i]);
        start = i + 5;
    }
    terms.push(&text[start..]);
    for term in terms {
        let t = term.trim();
        let tl = t.to_ascii_lowercase();
        if tl == "atscope()" {
            filter.at_scope = true;
        } else if let Some(rest) = tl.strip_prefix("principalid eq ") {
            let value = quoted(&t[t.len() - rest.len()..])
                .ok_or_else(|| format!("bad principalId filter '{t}'"))?;
            filter.principal = Some(value);
        } else if tl.starts_with("assignedto(") && tl.ends_with(')') {
            let inner = &t["assignedTo(".len()..t.len() - 1];
            filter.assigned_to =
                Some(quoted(inner).ok_or_else(|| format!("bad assignedTo filter '{t}'"))?);
        } else {
            return Err(t.to_owned());
        }
    }
    Ok(filter)
}

/// Role assignments per page of `RoleAssignments_ListForScope` (a stated choice).
pub const ASSIGNMENTS_PAGE_SIZE: usize = 100;

/// `RoleAssignments_ListForScope`: at, above and below the scope unless `atScope()` limits it
/// to the scope and its ancestors; a grant at subscription, group or vault scope applies below.
pub(crate) fn list_assignments(ctx: &mut Ctx) -> Reply {
    let scope = scope_of(ctx);
    let filter = match ctx.q("$filter").map(parse_filter).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(term) => {
            return error(
                400,
                "UnsupportedQuery",
                &format!(
                    "The filter '{term}' is not supported. Supported filters are either 'atScope()' or 'principalId eq '{{value}}' or assignedTo('{{value}}')'."
                ),
            );
        }
    };
    let tenant = ctx.tenant();
    let groups = filter
        .assigned_to
        .as_deref()
        .map(|p| tenant.groups_of(p))
        .unwrap_or_default();
    let value: Vec<Value> = tenant
        .role_assignments
        .iter()
        .filter(|a| {
            filter
                .principal
                .as_deref()
                .is_none_or(|p| eq_ci(p, &a.principal_id))
        })
        .filter(|a| {
            filter.assigned_to.as_deref().is_none_or(|p| {
                eq_ci(p, &a.principal_id) || groups.iter().any(|g| eq_ci(g, &a.principal_id))
            })
        })
        .filter(|a| {
            scope_covers(&a.scope, &scope) || (!filter.at_scope && scope_covers(&scope, &a.scope))
        })
        .map(assignment_json)
        .collect();
    super::management::paged(ctx, value, ASSIGNMENTS_PAGE_SIZE, "2022-04-01")
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `RoleAssignments_Create` (PUT).
pub(crate) fn create_assignment(ctx: &mut Ctx) -> Reply {
    let scope = scope_of(ctx);
    let name = ctx.segs.last().cloned().unwrap_or_default();
    if !is_guid(&name) {
        return error(
            400,
            "InvalidRoleAssignmentId",
            &format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        );
    }
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return bad_body(&e),
    };
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let text = |k: &str| props.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(definition), Some(principal)) = (text("roleDefinitionId"), text("principalId"))
    else {
        return bad_body("properties.roleDefinitionId and properties.principalId are required");
    };
    let Some(role) = roles::find(&definition) else {
        return error(
            400,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{definition}' does not exist."),
        );
    };
    let mut tenant = ctx.tenant();
    let existing_same_name = tenant.role_assignments.iter().find(|a| {
        eq_ci(&a.name, &name) && scope_covers(&a.scope, &scope) && scope_covers(&scope, &a.scope)
    });
    if let Some(existing) = existing_same_name {
        if eq_ci(&existing.principal_id, &principal)
            && eq_ci(&existing.role_definition_guid, role.guid)
        {
            return Reply::json(201, assignment_json(existing));
        }
        return error(
            409,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        );
    }
    if tenant.role_assignments.iter().any(|a| {
        eq_ci(&a.principal_id, &principal)
            && eq_ci(&a.role_definition_guid, role.guid)
            && scope_covers(&a.scope, &scope)
            && scope_covers(&scope, &a.scope)
    }) {
        return error(
            409,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        );
    }
    let actor = ctx.actor(&tenant, &scope);
    let assignment = RoleAssignment {
        name,
        scope,
        role_definition_guid: role.guid.to_owned(),
        principal_id: principal,
        principal_type: text("principalType").unwrap_or_else(|| "ServicePrincipal".to_owned()),
        condition: text("condition"),
        created: ctx.now,
        created_by: actor.object_id.clone(),
    };
    let reply = Reply::json(201, assignment_json(&assignment));
    let id = assignment.id();
    tenant.role_assignments.push(assignment);
    drop(tenant);
    ctx.emit(resource_event(
        ResourceEventKind::Write,
        &id,
        "Microsoft.Authorization/roleAssignments/write",
        &actor,
    ));
    reply
}

fn find_index(ctx: &Ctx, assignments: &[RoleAssignment]) -> Option<usize> {
    let scope = scope_of(ctx);
    let name = ctx.segs.last().cloned().unwrap_or_default();
    assignments.iter().position(|a| {
        eq_ci(&a.name, &name) && scope_covers(&a.scope, &scope) && scope_covers(&scope, &a.scope)
    })
}

fn assignment_not_found(ctx: &Ctx) -> Reply {
    let name = ctx.segs.last().cloned().unwrap_or_default();
    error(
        404,
        "RoleAssignmentNotFound",
        &format!("The role assignment '{name}' is not found."),
    )
}

/// `RoleAssignments_Get`.
pub(crate) fn get_assignment(ctx: &mut Ctx) -> Reply {
    let tenant = ctx.tenant();
    match find_index(ctx, &tenant.role_assignments) {
        Some(i) => Reply::ok(assignment_json(&tenant.role_assignments[i])),
        None => assignment_not_found(ctx),
    }
}

/// `RoleAssignments_Delete`.
pub(crate) fn delete_assignment(ctx: &mut Ctx) -> Reply {
    let mut tenant = ctx.tenant();
    let Some(i) = find_index(ctx, &tenant.role_assignments) else {
        return Reply::empty(204);
    };
    let removed = tenant.role_assignments.remove(i);
    let actor = ctx.actor(&tenant, &removed.scope);
    drop(tenant);
    ctx.emit(resource_event(
        ResourceEventKind::Delete,
        &removed.id(),
        "Microsoft.Authorization/roleAssignments/delete",
        &actor,
    ));
    Reply::ok(assignment_json(&removed))
}

/// `RoleDefinitions_Get`.
pub(crate) fn get_definition(ctx: &mut Ctx) -> Reply {
    let id = ctx.segs.last().cloned().unwrap_or_default();
    let scope = scope_of(ctx);
    match roles::find(&id).filter(|r| eq_ci(r.guid, &id)) {
        Some(role) => Reply::ok(role.to_json(subscription_of(&scope).as_deref())),
        None => error(
            404,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{id}' does not exist."),
        ),
    }
}

/// `RoleDefinitions_List` (supports `$filter=roleName eq '…'`).
pub(crate) fn list_definitions(ctx: &mut Ctx) -> Reply {
    let scope = scope_of(ctx);
    let wanted = ctx.q("$filter").and_then(|f| {
        let lower = f.to_ascii_lowercase();
        lower
            .strip_prefix("rolename eq ")
            .and_then(|_| quoted(&f["roleName eq ".len()..]))
    });
    let value: Vec<Value> = roles::BUILT_IN
        .iter()
        .filter(|r| wanted.as_deref().is_none_or(|w| eq_ci(w, r.role_name)))
        .map(|r| r.to_json(subscription_of(&scope).as_deref()))
        .collect();
    Reply::ok(json!({ "value": value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(
            parse_filter("atScope() and assignedTo('ab')").unwrap(),
            Filter {
                at_scope: true,
                principal: None,
                assigned_to: Some("ab".into())
            }
        );
        assert_eq!(
            parse_filter("principalId eq 'X-1'")
                .unwrap()
                .principal
                .as_deref(),
            Some("X-1")
        );
        assert!(parse_filter("roleDefinitionId eq 'x'").is_err());
    }
}
