//! Management groups: `ManagementGroups_GetDescendants`
//! (`GET /providers/Microsoft.Management/managementGroups/{groupId}/descendants`, api-version
//! 2020-05-01): every group and subscription below the group, nested ones included, as
//! `DescendantInfo` items (`id`, `type`, `name`, `properties.displayName`,
//! `properties.parent.id`), in pages of [`PAGE_SIZE`] with a `nextLink` carrying `$skiptoken`
//! (small, so that clients' paging is exercised). Reading needs
//! `Microsoft.Management/managementGroups/descendants/read` at the group (Reader has it).

use serde_json::{Value, json};

use super::{authorize, error};
use crate::http::{Ctx, Reply};
use crate::ids::eq_ci;
use crate::model::{ManagementGroup, Tenant};

/// Descendants per page.
pub const PAGE_SIZE: usize = 2;

/// `ManagementGroups_GetDescendants`.
pub(crate) fn descendants(ctx: &mut Ctx) -> Reply {
    let requested = ctx.segs.get(3).cloned().unwrap_or_default();
    let scope = format!("/providers/Microsoft.Management/managementGroups/{requested}");
    if let Err(reply) = authorize(
        ctx,
        "Microsoft.Management/managementGroups/descendants/read",
        &scope,
    ) {
        return reply;
    }
    let items = {
        let tenant = ctx.tenant();
        if !tenant
            .management_groups
            .iter()
            .any(|g| eq_ci(&g.name, &requested))
        {
            return error(
                404,
                "NotFound",
                &format!("Management group '{requested}' was not found."),
            );
        }
        descendant_items(&tenant, &requested)
    };
    paged(ctx, items, PAGE_SIZE, "2020-05-01")
}

/// One page of an ARM list: `page_size` items from the `$skiptoken` offset (the first page
/// without one), with a `nextLink` (an absolute URL carrying the request's `api-version`,
/// `default_version` when it had none, and the next `$skiptoken`) while items remain; the last
/// page has none.
pub(crate) fn paged(
    ctx: &Ctx,
    items: Vec<Value>,
    page_size: usize,
    default_version: &str,
) -> Reply {
    paged_map(ctx, &items, page_size, default_version, Value::clone)
}

/// [`paged`] over `items` shown with `show`, which runs for the page's items only.
pub(crate) fn paged_map<T>(
    ctx: &Ctx,
    items: &[T],
    page_size: usize,
    default_version: &str,
    show: impl Fn(&T) -> Value,
) -> Reply {
    let offset = ctx.q("$skiptoken").and_then(crate::ids::skiptoken_offset);
    let Some(offset) = offset.or(ctx.q("$skiptoken").is_none().then_some(0)) else {
        return error(400, "InvalidSkipToken", "The $skiptoken is not valid.");
    };
    let end = (offset + page_size.max(1)).min(items.len());
    let value: Vec<Value> = items
        .get(offset.min(items.len())..end)
        .unwrap_or_default()
        .iter()
        .map(show)
        .collect();
    let next = (end < items.len()).then(|| {
        let token = crate::ids::skiptoken(end);
        format!(
            "https://{}{}?api-version={}&$skiptoken={token}",
            ctx.host,
            ctx.path,
            ctx.q("api-version").unwrap_or(default_version)
        )
    });
    match next {
        Some(next) => Reply::ok(json!({ "value": value, "nextLink": next })),
        None => Reply::ok(json!({ "value": value })),
    }
}

/// Every group below `root` (breadth first, each once even if parents loop) and every
/// subscription in `root` or below it.
fn descendant_items(tenant: &Tenant, root: &str) -> Vec<Value> {
    let mut order: Vec<&ManagementGroup> = tenant
        .management_groups
        .iter()
        .filter(|g| eq_ci(&g.name, root))
        .collect();
    let mut next = 0;
    while next < order.len() {
        let parent = &order[next].name;
        let children: Vec<&ManagementGroup> = tenant
            .management_groups
            .iter()
            .filter(|g| g.parent.as_deref().is_some_and(|p| eq_ci(p, parent)))
            .filter(|g| !order.iter().any(|seen| eq_ci(&seen.name, &g.name)))
            .collect();
        order.extend(children);
        next += 1;
    }
    let parent_id = |group: &ManagementGroup| {
        group
            .parent
            .as_deref()
            .map(|p| format!("/providers/Microsoft.Management/managementGroups/{p}"))
    };
    let mut items = Vec::new();
    for (i, group) in order.iter().enumerate() {
        if i > 0 {
            items.push(json!({
                "id": group.id(),
                "type": "Microsoft.Management/managementGroups",
                "name": group.name,
                "properties": {
                    "displayName": group.display_name.clone().unwrap_or_else(|| group.name.clone()),
                    "parent": { "id": parent_id(group) },
                },
            }));
        }
        for subscription in &group.subscriptions {
            let display_name = tenant
                .subscription(subscription)
                .map(|s| s.display_name.clone())
                .unwrap_or_default();
            items.push(json!({
                "id": format!("{}/subscriptions/{subscription}", group.id()),
                "type": "Microsoft.Management/managementGroups/subscriptions",
                "name": subscription,
                "properties": {
                    "displayName": display_name,
                    "parent": { "id": group.id() },
                },
            }));
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ManagementGroup;

    #[test]
    fn descendants_include_nested_groups_and_their_subscriptions_once() {
        let mut tenant = Tenant::builder().build().unwrap();
        tenant.management_groups = vec![
            ManagementGroup::new("root-mg", None, &["s1"]),
            ManagementGroup::new("child", Some("ROOT-MG"), &["s2", "s3"]),
            ManagementGroup::new("grandchild", Some("child"), &["s4"]),
            ManagementGroup::new("elsewhere", None, &["s5"]),
            // A loop must not repeat anything.
            ManagementGroup::new("loop", Some("grandchild"), &[]),
        ];
        let names: Vec<String> = descendant_items(&tenant, "root-mg")
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["s1", "child", "s2", "s3", "grandchild", "s4", "loop"]
        );
        assert!(
            descendant_items(&tenant, "child")
                .iter()
                .all(|item| item["name"] != "s1" && item["name"] != "child")
        );
    }
}
