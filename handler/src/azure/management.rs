//! The subscriptions under a management group (`CMKGUARD_MANAGEMENT_GROUPS`), from
//! `GET /providers/Microsoft.Management/managementGroups/{groupId}/descendants` (api-version
//! 2020-05-01, operation `ManagementGroups_GetDescendants`). The answer is a page of
//! `DescendantInfo` items (`id`, `type`, `name`, `properties.displayName`,
//! `properties.parent.id`) with a `nextLink` carrying `$skiptoken`; it lists every descendant,
//! nested groups and the subscriptions in them included, so one call per configured group
//! covers the whole tree. A subscription's `type` is `Microsoft.Management/managementGroups/
//! subscriptions` (older answers: `/subscriptions`) and its `name` is the subscription id.
//!
//! What this relies on: the operation as the REST reference and the SDKs describe it (path,
//! operation id, `$skiptoken`/`$top`, a `nextLink` to follow while present), and the 2020-05-01
//! type definitions (Azure/bicep-types-az `generated/managementgroups/microsoft.management/
//! 2020-05-01/types.md`: the types `Microsoft.Management/managementGroups/subscriptions` and
//! `Microsoft.Management/managementGroups`, child types `/subscriptions`). Items of any other
//! type are skipped.
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
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
    use azure_core::http::{
        AsyncRawResponse, HttpClient, Request, StatusCode, Transport, Url, headers::Headers,
    };

    use crate::azure::ratelimit::RateLimiter;
    use crate::azure::{ApiVersions, ErrorKind, RetrySettings, SubscriptionScope};
    use crate::ids::Allowlist;

    /// Answers each request with the next scripted body and records what was asked.
    #[derive(Debug, Default)]
    struct Scripted {
        bodies: Mutex<Vec<Value>>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl HttpClient for Scripted {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
            self.asked.lock().unwrap().push(request.url().to_string());
            let body = self.bodies.lock().unwrap().remove(0);
            Ok(AsyncRawResponse::from_bytes(
                StatusCode::Ok,
                Headers::new(),
                body.to_string().into_bytes(),
            ))
        }
    }

    #[derive(Debug)]
    struct Token;

    #[async_trait]
    impl TokenCredential for Token {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            Ok(AccessToken::new(
                "token",
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    const ARM: &str = "https://management.azure.com";
    const PATH: &str = "/providers/Microsoft.Management/managementGroups/mg/descendants";

    /// Lists the descendants of `mg` against scripted pages: (the result, the URLs asked).
    async fn list(
        pages: Vec<Value>,
    ) -> (Result<BTreeSet<SubscriptionId>, AzureError>, Vec<String>) {
        let script = Arc::new(Scripted {
            bodies: Mutex::new(pages),
            asked: Mutex::default(),
        });
        let group = ManagementGroupId::parse("mg").unwrap();
        let arm = ArmClient::new(
            Url::parse(ARM).unwrap(),
            Arc::new(Token),
            Transport::new(script.clone()),
            ApiVersions::with_overrides(None).unwrap(),
            RetrySettings::default(),
            RateLimiter::new(1000),
            SubscriptionScope::shared(Allowlist::new(None, vec![group.clone()])),
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let result = descendant_subscriptions(&arm, &group, deadline).await;
        let asked = script.asked.lock().unwrap().clone();
        (result, asked)
    }

    fn page(names: &[&str], next: Option<String>) -> Value {
        let value: Vec<Value> = names
            .iter()
            .map(|name| json!({"type": "Microsoft.Management/managementGroups/subscriptions", "name": name}))
            .collect();
        json!({ "value": value, "nextLink": next })
    }

    #[tokio::test]
    async fn pages_are_followed_on_the_same_path_only() {
        let next = format!("{ARM}{PATH}?api-version=2020-05-01&$skiptoken=b2Zmc2V0OjI");
        let (found, asked) = list(vec![page(&[A], Some(next.clone())), page(&[B], None)]).await;
        let found: Vec<String> = found.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(found, [A, B]);
        assert_eq!(asked.len(), 2);
        assert!(asked[0].starts_with(&format!("{ARM}{PATH}?api-version=2020-05-01")));

        for (hostile, why) in [
            (
                format!("{ARM}/providers/Microsoft.Management/managementGroups/other/descendants"),
                "another path",
            ),
            (
                format!("{ARM}/subscriptions/{A}/resourceGroups"),
                "another path",
            ),
            (format!("https://evil.example{PATH}"), "untrusted host"),
            (
                format!("{ARM}{PATH}?api-version=2020-05-01"),
                "already read",
            ),
        ] {
            let (result, asked) =
                list(vec![page(&[A], Some(hostile.clone())), page(&[B], None)]).await;
            let error = result.unwrap_err();
            assert!(
                matches!(error.kind, ErrorKind::Refused | ErrorKind::Permanent),
                "{hostile}: {error:?}"
            );
            assert!(error.to_string().contains(why), "{hostile}: {error}");
            assert_eq!(asked.len(), 1, "{hostile}: nothing sent there");
        }
    }

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
