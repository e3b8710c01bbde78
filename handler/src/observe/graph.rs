//! Resource Graph queries read to the end: every page, in order.

use serde_json::Value;
use tokio::time::Instant;

use super::Observer;
use crate::azure::AzureError;
use crate::ids::SubscriptionId;

/// How a paged Resource Graph query ended ([`Observer::resource_graph_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphEnd {
    /// Every row was read.
    Complete,
    /// Resource Graph said it truncated the result (a query without `id`s).
    Truncated,
    /// More pages than the caller allows; the rest were not read.
    TooManyPages,
}

impl Observer {
    /// Every row of a Resource Graph `query` over `subscriptions` (every subscription the
    /// identity can read when `None`; none at all when empty, which Resource Graph would read as
    /// every subscription), handed to `row` in order: pages of `page_size`, at most `max_pages`,
    /// the `$skipToken` replayed with the same query and scopes (azure-notes Trap T11), each
    /// page cached like [`Self::resource_graph`]. Says how the reading ended.
    pub async fn resource_graph_rows(
        &self,
        query: &str,
        subscriptions: Option<&[SubscriptionId]>,
        (page_size, max_pages): (u64, usize),
        deadline: Instant,
        mut row: impl FnMut(&Value),
    ) -> Result<GraphEnd, AzureError> {
        if subscriptions.is_some_and(<[_]>::is_empty) {
            return Ok(GraphEnd::Complete);
        }
        let mut skip_token: Option<String> = None;
        for _ in 0..max_pages {
            let mut body = serde_json::json!({
                "query": query,
                "options": { "resultFormat": "objectArray", "$top": page_size },
            });
            if let Some(subscriptions) = subscriptions {
                body["subscriptions"] = subscriptions.iter().map(|s| s.as_str()).collect();
            }
            if let Some(token) = &skip_token {
                body["options"]["$skipToken"] = Value::from(token.as_str());
            }
            let page = self.resource_graph(&body, deadline).await?;
            page.get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .for_each(&mut row);
            if page.get("resultTruncated").and_then(Value::as_str) == Some("true") {
                return Ok(GraphEnd::Truncated);
            }
            skip_token = page
                .get("$skipToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if skip_token.is_none() {
                return Ok(GraphEnd::Complete);
            }
        }
        Ok(GraphEnd::TooManyPages)
    }
}
