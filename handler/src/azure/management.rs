//! The subscriptions under a management group (`CMKGUARD_MANAGEMENT_GROUPS`), from
//! `GET /providers/Microsoft.Management/managementGroups/{groupId}/descendants` (api-version
//! 2020-05-01, operation `ManagementGroups_GetDescendants`). The answer is a page of
//! `DescendantInfo` items (`id`, `type`, `name`, `properties.displayName`,
//! `properties.parent.id`) with a `nextLink` carrying `$skiptoken`; it lists every descendant,
//! nested groups and the subscriptions in them included, so one call per configured group
//! covers the whole tree. A subscription's `type` is `Microsoft.Management/managementGroups/
//! subscriptions` (older answers: `/subscriptions`) and its `name` is the subscription id.
//!
//! The scope guard lets this path through for configured groups only; paging is bounded and
//! every `nextLink` must keep the path (the trusted-host guard keeps the host). An item that
//! claims to be a subscription but is not named by a GUID makes the whole answer refused: a
//! partial list would silently narrow the scope.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio::time::Instant;

use super::arm::ArmClient;
use super::error::{AzureError, ErrorKind};
use crate::ids::{IdError, ManagementGroupId, SubscriptionId};

/// At most this many pages per group (Azure answers pages of up to 1,000 descendants).
pub const MAX_DESCENDANT_PAGES: usize = 50;

/// Every subscription under `group`, nested groups included.
pub async fn descendant_subscriptions(
    arm: &ArmClient,
    group: &ManagementGroupId,
    deadline: Instant,
) -> Result<BTreeSet<SubscriptionId>, AzureError> {
    let path = format!(
        "/providers/Microsoft.Management/managementGroups/{}/descendants",
        group.as_str()
    );
    let api_version = arm.api_versions().get("Microsoft.Management").to_owned();
    let items = arm
        .list_at_path(&path, &api_version, MAX_DESCENDANT_PAGES, deadline)
        .await?;
    subscriptions_in(&items).map_err(|why| {
        AzureError::transport(
            format!("GET descendants of management group {group}"),
            ErrorKind::Refused,
            why.to_string(),
        )
    })
}

/// A descendant that says it is a subscription but is not named by a subscription id.
#[derive(Debug, thiserror::Error)]
#[error("a descendant of type {kind}: {source}")]
struct UntrustedDescendant {
    kind: String,
    source: IdError,
}

/// The subscriptions among descendants; `Err` names the first item that cannot be trusted.
fn subscriptions_in(items: &[Value]) -> Result<BTreeSet<SubscriptionId>, UntrustedDescendant> {
    let mut found = BTreeSet::new();
    for item in items {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let is_subscription = kind
            .eq_ignore_ascii_case("Microsoft.Management/managementGroups/subscriptions")
            || kind.eq_ignore_ascii_case("/subscriptions");
        if !is_subscription {
            continue;
        }
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        let subscription = SubscriptionId::parse(name).map_err(|source| UntrustedDescendant {
            kind: crate::text::field(kind).into_owned(),
            source,
        })?;
        found.insert(subscription);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    #[test]
    fn subscriptions_are_taken_from_both_type_spellings_and_groups_skipped() {
        let items = [
            json!({"id": format!("/providers/Microsoft.Management/managementGroups/mg/subscriptions/{A}"),
                   "type": "Microsoft.Management/managementGroups/subscriptions", "name": A.to_uppercase(),
                   "properties": {"displayName": "a", "parent": {"id": "/providers/Microsoft.Management/managementGroups/mg"}}}),
            json!({"id": "/providers/Microsoft.Management/managementGroups/child",
                   "type": "Microsoft.Management/managementGroups", "name": "child"}),
            json!({"id": format!("/subscriptions/{B}"), "type": "/subscriptions", "name": B}),
            json!({"type": "microsoft.management/managementgroups/subscriptions", "name": A}),
        ];
        let found: Vec<String> = subscriptions_in(&items)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, [A, B]);
    }

    #[test]
    fn a_subscription_not_named_by_a_guid_refuses_the_answer() {
        for bad in [
            json!({"type": "/subscriptions", "name": "../../other"}),
            json!({"type": "Microsoft.Management/managementGroups/subscriptions"}),
            json!({"type": "/subscriptions", "name": 7}),
        ] {
            let error = subscriptions_in(std::slice::from_ref(&bad))
                .unwrap_err()
                .to_string();
            assert!(error.contains("a descendant of type"), "{bad}: {error}");
        }
    }
}
