//! POSTing a JSON body to an alert endpoint (Teams Workflows, the generic webhook, ACS
//! Email) through the shared transport, retrying 408, 429 and 5xx answers and connection
//! failures. `Retry-After` is honoured, but only within the budget: a notification must never
//! hold up an invocation, and a send that runs out of time goes to the outbox instead.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

use super::retry::{Attempt, Failure, RetryBudget, with_retries};

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Posted {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Longest excerpt of an error body kept in a reason.
const BODY_EXCERPT: usize = 300;

/// POSTs `body` with `headers` (`Content-Type` JSON unless they name another) until a 2xx, a
/// non-retryable status, or the budget ends.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    budget: RetryBudget,
) -> Result<Posted, Failure> {
    with_retries(budget, |remaining| async move {
        let result = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(headers.clone())
            .body(body.to_vec())
            .timeout(remaining)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Failed {
                    reason: describe(&error),
                    server_wait: None,
                };
            }
        };
        let status = response.status();
        let response_headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Attempt::Sent(Posted {
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
        if is_retryable(status) {
            Attempt::Failed {
                reason,
                server_wait: retry_after(&response_headers),
            }
        } else {
            Attempt::Refused(reason)
        }
    })
    .await
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
    match std::error::Error::source(error) {
        Some(cause) => format!("{what}: {}", crate::text::chain(cause)),
        None => what.to_owned(),
    }
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
