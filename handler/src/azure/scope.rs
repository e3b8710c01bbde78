//! The subscription allowlist (`CMKGUARD_SUBSCRIPTIONS`), enforced on every ARM request by the
//! URL actually sent — not by the id a caller parsed — so that no caller can forget it and no
//! id, `nextLink`, `Location` or role definition id from a response can lead a read or a write
//! into another subscription.
//!
//! The policy decodes each path segment as ARM will and refuses a path that would resolve
//! differently (`.`/`..`, an encoded `/` or `\`, an empty segment), then requires the path to be
//! in an allowed subscription. Three tenant-level requests are allowed: a Resource Graph query
//! whose body names only allowed subscriptions, a GET of a role definition (the built-in
//! roles live at the tenant root; reading one reveals nothing of another subscription), and a
//! GET of the descendants of a management group in `CMKGUARD_MANAGEMENT_GROUPS` (how its
//! subscriptions are discovered).
//!
//! The allowlist is the shared [`Allowlist`]: subscriptions discovered under the management
//! groups join it as soon as they are known, for every request from then on.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Body, Context, Method, Request, Url};
use serde_json::Value;

use crate::ids::{Allowlist, ManagementGroupId, SubscriptionId};

/// Why a request must not be sent. The pipeline policy returns it as the cause of the
/// request's error, and the ARM client reports such errors as refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cmk-guard refused to send this request: {reason}")]
pub struct OutOfScope {
    pub reason: ScopeRefusal,
}

/// The one reason a request is out of scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeRefusal {
    #[error("the URL has no path")]
    NoPath,
    #[error("a path segment is not UTF-8 once decoded")]
    NotUtf8,
    #[error("the path has an empty, `.` or `..` segment")]
    DotOrEmptySegment,
    #[error("a path segment holds an encoded `/`, `\\` or a control character")]
    EncodedSeparator,
    #[error("the path names no subscription id")]
    NoSubscription,
    #[error("subscription {0} is outside CMKGUARD_SUBSCRIPTIONS and CMKGUARD_MANAGEMENT_GROUPS")]
    Subscription(SubscriptionId),
    #[error("management group {0} is not in CMKGUARD_MANAGEMENT_GROUPS")]
    ManagementGroup(String),
    #[error("a request outside any subscription is outside CMKGUARD_SUBSCRIPTIONS")]
    OutsideAnySubscription,
    #[error("the Resource Graph query body is not JSON")]
    GraphQueryNotJson,
    #[error("a Resource Graph query over management groups is outside CMKGUARD_SUBSCRIPTIONS")]
    GraphManagementGroups,
    #[error("a Resource Graph query without `subscriptions` covers every subscription")]
    GraphEverySubscription,
    #[error("the Resource Graph query names a subscription that is not a GUID")]
    GraphSubscriptionNotGuid,
    #[error("the Resource Graph query names subscription {0}, outside CMKGUARD_SUBSCRIPTIONS")]
    GraphSubscription(SubscriptionId),
}

/// Which subscriptions cmk-guard may read and write.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionScope(Allowlist);

impl SubscriptionScope {
    /// Every subscription the identity can read (no `CMKGUARD_SUBSCRIPTIONS`).
    pub fn all() -> Self {
        Self(Allowlist::all())
    }

    /// Only these subscriptions; `None` means all.
    pub fn from_allowlist(allowed: Option<&[SubscriptionId]>) -> Self {
        Self(Allowlist::listed(allowed.map(<[SubscriptionId]>::to_vec)))
    }

    /// The shared allowlist, as it grows with discovery.
    pub fn shared(allowlist: Allowlist) -> Self {
        Self(allowlist)
    }

    /// The allowlist itself (discovery records what it found there).
    pub fn allowlist(&self) -> &Allowlist {
        &self.0
    }

    /// True when `subscription` may be read and written.
    pub fn allows(&self, subscription: &SubscriptionId) -> bool {
        self.0.allows(subscription)
    }

    /// Checks a request as it will be sent. `Err` says why it must not be.
    pub fn check(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<(), ScopeRefusal> {
        let segments = canonical_segments(url)?;
        let Some(allowed) = self.0.snapshot() else {
            return Ok(());
        };
        let allowed = allowed.as_slice();
        let is = |index: usize, expected: &str| {
            segments
                .get(index)
                .is_some_and(|s| s.eq_ignore_ascii_case(expected))
        };
        if is(0, "subscriptions") {
            let subscription = segments
                .get(1)
                .and_then(|s| SubscriptionId::parse(s).ok())
                .ok_or(ScopeRefusal::NoSubscription)?;
            return if allowed.contains(&subscription) {
                Ok(())
            } else {
                Err(ScopeRefusal::Subscription(subscription))
            };
        }
        if is(0, "providers") && is(1, "Microsoft.ResourceGraph") && is(2, "resources") {
            if segments.len() == 3 && *method == Method::Post {
                return graph_query_in_scope(body.unwrap_or_default(), allowed);
            }
        } else if is(0, "providers")
            && is(1, "Microsoft.Authorization")
            && is(2, "roleDefinitions")
            && segments.len() == 4
            && *method == Method::Get
        {
            return Ok(());
        } else if is(0, "providers")
            && is(1, "Microsoft.Management")
            && is(2, "managementGroups")
            && is(4, "descendants")
            && segments.len() == 5
            && *method == Method::Get
        {
            let group = ManagementGroupId::parse(&segments[3]).ok();
            return match group {
                Some(group) if self.0.groups().contains(&group) => Ok(()),
                _ => Err(ScopeRefusal::ManagementGroup(crate::ids::truncate(
                    &segments[3],
                ))),
            };
        }
        Err(ScopeRefusal::OutsideAnySubscription)
    }
}

/// The path's segments decoded as the server decodes them; `Err` for a path that a server or
/// proxy could resolve to something else than it reads.
fn canonical_segments(url: &Url) -> Result<Vec<Cow<'_, str>>, ScopeRefusal> {
    let segments = url
        .path_segments()
        .ok_or(ScopeRefusal::NoPath)?
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| ScopeRefusal::NotUtf8)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for segment in &segments {
        if segment.is_empty() || segment.bytes().all(|b| b == b'.') {
            return Err(ScopeRefusal::DotOrEmptySegment);
        }
        if segment.contains(['/', '\\']) || segment.chars().any(char::is_control) {
            return Err(ScopeRefusal::EncodedSeparator);
        }
    }
    Ok(segments)
}

/// A Resource Graph query covers what its body names: it must name only allowed subscriptions
/// (and no management group, whose subscriptions are unknown here).
fn graph_query_in_scope(body: &[u8], allowed: &[SubscriptionId]) -> Result<(), ScopeRefusal> {
    let query: Value = serde_json::from_slice(body).map_err(|_| ScopeRefusal::GraphQueryNotJson)?;
    if query.get("managementGroups").is_some_and(|v| !v.is_null()) {
        return Err(ScopeRefusal::GraphManagementGroups);
    }
    let named = query
        .get("subscriptions")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or(ScopeRefusal::GraphEverySubscription)?;
    for entry in named {
        let subscription = entry
            .as_str()
            .and_then(|text| SubscriptionId::parse(text).ok())
            .ok_or(ScopeRefusal::GraphSubscriptionNotGuid)?;
        if !allowed.contains(&subscription) {
            return Err(ScopeRefusal::GraphSubscription(subscription));
        }
    }
    Ok(())
}

/// The pipeline policy, right after the trusted-host guard: nothing leaves for a subscription
/// outside the allowlist, whichever caller built the URL.
#[derive(Debug)]
pub(super) struct SubscriptionScopePolicy {
    pub scope: SubscriptionScope,
}

#[async_trait]
impl Policy for SubscriptionScopePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let body = match request.body() {
            Body::Bytes(bytes) => Some(bytes.as_ref()),
            _ => None,
        };
        if let Err(reason) = self.scope.check(&request.method(), request.url(), body) {
            return Err(azure_core::Error::new(
                azure_core::error::ErrorKind::Other,
                OutOfScope { reason },
            ));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    fn only_a() -> SubscriptionScope {
        SubscriptionScope::from_allowlist(Some(&[SubscriptionId::parse(A).unwrap()]))
    }

    fn check(
        scope: &SubscriptionScope,
        method: Method,
        url: &str,
        body: &str,
    ) -> Result<(), ScopeRefusal> {
        let url = Url::parse(url).unwrap();
        scope.check(&method, &url, Some(body.as_bytes()))
    }

    #[test]
    fn allows_paths_in_allowed_subscriptions_only() {
        let arm = "https://management.azure.com";
        let scope = only_a();
        for ok in [
            format!(
                "{arm}/subscriptions/{A}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "{arm}/SUBSCRIPTIONS/{}/providers/Microsoft.KeyVault",
                A.to_uppercase()
            ),
            format!(
                "{arm}/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6"
            ),
        ] {
            assert_eq!(check(&scope, Method::Get, &ok, ""), Ok(()), "{ok}");
        }
        for refused in [
            format!(
                "{arm}/subscriptions/{B}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!("{arm}/subscriptions/{A}/..%2F{B}/resourceGroups/rg"),
            format!("{arm}/subscriptions/{A}/%2e%2e/{B}/resourceGroups/rg"),
            format!("{arm}/subscriptions/{A}/resourceGroups/rg%5C..%5C..%5C{B}"),
            format!("{arm}/subscriptions/{A}//resourceGroups/rg"),
            format!("{arm}/subscriptions/not-a-guid/resourceGroups/rg"),
            format!("{arm}/providers/Microsoft.KeyVault/vaults"),
            format!("{arm}/providers/Microsoft.Authorization/roleDefinitions"),
            format!("{arm}/"),
        ] {
            assert!(
                check(&scope, Method::Get, &refused, "").is_err(),
                "{refused}"
            );
        }
        assert!(
            check(
                &scope,
                Method::Put,
                &format!("{arm}/providers/Microsoft.Authorization/roleDefinitions/x"),
                "{}"
            )
            .is_err()
        );
    }

    #[test]
    fn resource_graph_queries_must_name_allowed_subscriptions() {
        let url = "https://management.azure.com/providers/Microsoft.ResourceGraph/resources";
        let scope = only_a();
        assert_eq!(
            check(
                &scope,
                Method::Post,
                url,
                &format!(r#"{{"subscriptions":["{A}"],"query":"x"}}"#)
            ),
            Ok(())
        );
        for body in [
            r#"{"query":"x"}"#.to_owned(),
            r#"{"subscriptions":[],"query":"x"}"#.to_owned(),
            format!(r#"{{"subscriptions":["{A}","{B}"],"query":"x"}}"#),
            format!(r#"{{"subscriptions":["{A}"],"managementGroups":["root"],"query":"x"}}"#),
            "not json".to_owned(),
        ] {
            assert!(check(&scope, Method::Post, url, &body).is_err(), "{body}");
        }
    }

    #[test]
    fn only_the_descendants_of_a_configured_management_group_may_be_read_at_the_tenant() {
        let arm = "https://management.azure.com";
        let groups = vec![crate::ids::ManagementGroupId::parse("mg-platform").unwrap()];
        let scope = SubscriptionScope::shared(Allowlist::new(None, groups));
        let descendants = |group: &str| {
            format!("{arm}/providers/Microsoft.Management/managementGroups/{group}/descendants")
        };
        for ok in [
            descendants("mg-platform"),
            format!(
                "{}?api-version=2020-05-01&$skiptoken=abc",
                descendants("MG-PLATFORM")
            ),
        ] {
            assert_eq!(check(&scope, Method::Get, &ok, ""), Ok(()), "{ok}");
        }
        for refused in [
            descendants("mg-other"),
            descendants("mg-platform%2F..%2Fmg-other"),
            format!("{arm}/providers/Microsoft.Management/managementGroups/mg-platform"),
            format!(
                "{arm}/providers/Microsoft.Management/managementGroups/mg-platform/subscriptions"
            ),
            format!("{}/x", descendants("mg-platform")),
            format!("{arm}/providers/Microsoft.Management/managementGroups"),
            // Nothing is discovered yet: no subscription is in scope.
            format!("{arm}/subscriptions/{A}/resourceGroups/rg"),
        ] {
            assert!(
                check(&scope, Method::Get, &refused, "").is_err(),
                "{refused}"
            );
        }
        assert!(check(&scope, Method::Post, &descendants("mg-platform"), "{}").is_err());
        assert_eq!(
            check(&scope, Method::Get, &descendants("mg-other"), ""),
            Err(ScopeRefusal::ManagementGroup("mg-other".into()))
        );
        // Discovered subscriptions are allowed from then on, through every clone.
        let group = crate::ids::ManagementGroupId::parse("mg-platform").unwrap();
        scope.clone().allowlist().set_discovered(
            &group,
            std::collections::BTreeSet::from([SubscriptionId::parse(A).unwrap()]),
        );
        let inside = format!("{arm}/subscriptions/{A}/resourceGroups/rg");
        assert_eq!(check(&scope, Method::Get, &inside, ""), Ok(()));
        let outside = format!("{arm}/subscriptions/{B}/resourceGroups/rg");
        assert!(check(&scope, Method::Get, &outside, "").is_err());
    }

    #[test]
    fn without_an_allowlist_only_canonical_paths_are_required() {
        let scope = SubscriptionScope::all();
        let arm = "https://management.azure.com";
        assert_eq!(
            check(
                &scope,
                Method::Get,
                &format!("{arm}/subscriptions/{B}/resourceGroups/rg"),
                ""
            ),
            Ok(())
        );
        assert!(
            check(
                &scope,
                Method::Get,
                &format!("{arm}/subscriptions/{A}/rg%2F..%2F{B}"),
                ""
            )
            .is_err()
        );
    }
}
