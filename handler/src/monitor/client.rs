//! The Logs Ingestion client: rows in bounded batches, each POSTed with a bearer token and
//! retried on 408, 429 and 5xx (honouring `Retry-After`) within the send budget.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use url::Url;

use super::{FindingRow, LogsSettings};
use crate::notify::RetryBudget;
use crate::notify::http::post_json;

/// Rows per request: far below the API's 1 MB body limit for rows of a few hundred bytes.
pub const BATCH_ROWS: usize = 200;
/// Longest `Observed`/`Expected` text sent (a column holds at most 32 KB).
const TEXT_LIMIT: usize = 4096;

/// Sends finding changes to one data collection rule.
#[derive(Debug, Clone)]
pub struct FindingsLog {
    url: Url,
    credential: Arc<dyn TokenCredential>,
    /// The token scope of Azure Monitor ingestion in this cloud.
    scope: String,
    http: reqwest::Client,
    budget: RetryBudget,
}

impl FindingsLog {
    /// The client for `settings`, authenticating with `credential` for `monitor_suffix`
    /// (`monitor.azure.com` in the public cloud).
    pub fn new(
        settings: &LogsSettings,
        credential: Arc<dyn TokenCredential>,
        monitor_suffix: &str,
        http: reqwest::Client,
    ) -> Self {
        Self {
            url: settings.upload_url(),
            credential,
            scope: format!("https://{monitor_suffix}//.default"),
            http,
            budget: RetryBudget::default(),
        }
    }

    /// Changes how long and how often one batch may try.
    pub fn with_retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Sends `rows`; how many were accepted. Failures are logged, never returned: the state
    /// store already holds every change.
    pub async fn send(&self, rows: &[FindingRow]) -> usize {
        let mut sent = 0;
        for batch in rows.chunks(BATCH_ROWS) {
            match self.send_batch(batch).await {
                Ok(()) => sent += batch.len(),
                Err(reason) => tracing::warn!(
                    message = "Finding changes not sent to Azure Monitor; they stay in the state store.",
                    rows = batch.len(),
                    reason = %reason,
                ),
            }
        }
        sent
    }

    async fn send_batch(&self, batch: &[FindingRow]) -> Result<(), SendError> {
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(SendError::Token)?;
        let secret = token.token.secret();
        let mut bearer = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| SendError::UnusableToken)?;
        bearer.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, bearer);
        let rows: Vec<FindingRow> = batch.iter().map(bounded).collect();
        let body = serde_json::to_vec(&rows).map_err(SendError::Encode)?;
        post_json(&self.http, &self.url, &headers, &body, self.budget)
            .await
            .map(|_| ())
            // The reason names statuses and transport errors only; scrub the token anyway.
            .map_err(|failure| {
                SendError::Refused(failure.reason.replace(secret, crate::notify::REDACTED))
            })
    }
}

/// Why one batch was not accepted.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("no token for Azure Monitor from the credential: {0}")]
    Token(#[source] azure_core::Error),
    #[error("the credential returned an unusable token")]
    UnusableToken,
    #[error("cannot encode the rows: {0}")]
    Encode(#[source] serde_json::Error),
    /// The last answer or transport failure (statuses and causes, never the token).
    #[error("{0}")]
    Refused(String),
}

/// The row with its free-text columns cut to [`TEXT_LIMIT`] bytes (on a character boundary).
fn bounded(row: &FindingRow) -> FindingRow {
    let cut = |text: &str| {
        if text.len() <= TEXT_LIMIT {
            return text.to_owned();
        }
        let mut end = TEXT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    FindingRow {
        observed: cut(&row.observed),
        expected: cut(&row.expected),
        ..row.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let row = FindingRow {
            time_generated: time::OffsetDateTime::UNIX_EPOCH,
            change: "opened",
            rule: "vault.purge-protection".into(),
            severity: "high".into(),
            state: "open".into(),
            workspace_id: String::new(),
            subscription_id: String::new(),
            resource_id: String::new(),
            // One byte, then two-byte characters: the limit falls inside one.
            observed: format!("a{}", "é".repeat(TEXT_LIMIT)),
            expected: "short".into(),
            remediation: String::new(),
        };
        let cut = bounded(&row);
        assert_eq!(cut.observed.len(), TEXT_LIMIT - 1);
        assert!(cut.observed.chars().skip(1).all(|c| c == 'é'));
        assert_eq!(cut.expected, "short");
        assert_eq!(cut.rule, row.rule);
    }
}
