//! POSTing a JSON body to an alert endpoint (Teams Workflows, the generic webhook, ACS
//! Email) through the shared transport, retrying 408, 429 and 5xx answers and connection
//! failures. `Retry-After` is honoured, but only within the budget: a notification must never
//! hold up an invocation, and a send that runs out of time goes to the outbox instead.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

/// How long and how often one send may try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Time for all attempts and the waits between them.
    pub total: Duration,
    pub max_attempts: u32,
    /// The first wait when the server names none; doubled per attempt.
    pub first_backoff: Duration,
}

impl Default for RetryBudget {
    /// Ten seconds: well inside the 30 s Event Grid delivery budget, and long enough for a
    /// `Retry-After` of a few seconds from Workflows or ACS.
    fn default() -> Self {
        Self {
            total: Duration::from_secs(10),
            max_attempts: 4,
            first_backoff: Duration::from_millis(500),
        }
    }
}

/// Why a send did not succeed. The reason may still hold secrets: the caller scrubs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    /// Whether sending the same message later can succeed (throttling, outages), as opposed
    /// to a rejected message or a misconfiguration.
    pub retryable: bool,
}

impl Failure {
    pub(crate) fn retryable(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: true,
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retryable: false,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Posted {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Longest excerpt of an error body kept in a reason.
const BODY_EXCERPT: usize = 300;

/// POSTs `body` as JSON with `headers` until a 2xx, a non-retryable status, or the budget ends.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    budget: RetryBudget,
) -> Result<Posted, Failure> {
    let start = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let remaining = budget.total.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(Failure::retryable("the send budget ran out"));
        }
        let result = client
            .post(url.clone())
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .timeout(remaining)
            .send()
            .await;
        let (failure, server_wait) = match result {
            Ok(response) => {
                let status = response.status();
                let response_headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                if status.is_success() {
                    return Ok(Posted {
                        status,
                        headers: response_headers,
                        body: text,
                    });
                }
                let excerpt = super::escape::bounded_line(&text, BODY_EXCERPT);
                let reason = if excerpt.is_empty() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    format!("HTTP {}: {excerpt}", status.as_u16())
                };
                if !is_retryable(status) {
                    return Err(Failure::permanent(reason));
                }
                (reason, retry_after(&response_headers))
            }
            Err(error) => (describe(&error), None),
        };
        let backoff = budget
            .first_backoff
            .saturating_mul(1u32 << (attempt - 1).min(8));
        // The server's own wait wins; it knows when it will take the next request.
        let wait = server_wait.unwrap_or(backoff);
        if attempt >= budget.max_attempts {
            return Err(Failure::retryable(format!(
                "{failure} (gave up after {attempt} attempts)"
            )));
        }
        if start
            .elapsed()
            .checked_add(wait)
            .is_none_or(|end| end >= budget.total)
        {
            let why = match server_wait {
                Some(w) => format!("the server asked to wait {} s", w.as_secs_f32().ceil()),
                None => "the next attempt".to_owned(),
            };
            return Err(Failure::retryable(format!(
                "{failure} ({why}, past the {} s send budget)",
                budget.total.as_secs()
            )));
        }
        tracing::debug!(
            message = "Retrying alert delivery.",
            attempt,
            wait_ms = wait.as_millis() as u64
        );
        tokio::time::sleep(wait).await;
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// A transport error without its URL (which may carry a `sig`), with its cause chain.
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `retry-after-ms`, `x-ms-retry-after-ms` (ACS) or `Retry-After` in seconds or as an HTTP date,
/// read as for every Azure client (bounded, so a hostile value cannot overflow the budget check).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::azure::retry_after_from(|name| headers.get(name).and_then(|v| v.to_str().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_retry_after_form() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("x-ms-retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut past = HeaderMap::new();
        past.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&past), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn retries_only_transient_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 413] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
