//! How long an Azure call may wait, and for what: the caller's deadline, carried in the
//! pipeline context, and the server's `Retry-After`. Every client cmk-guard has (ARM, Key Vault,
//! alerts, ACS) reads `Retry-After` through [`retry_after_from`] and retries through
//! [`DeadlineRetryPolicy`], which never sleeps past the deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use tokio::time::Instant;

use super::error::is_transient_status;

/// The point in time by which a call must have an answer, carried in the pipeline context.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// Retry tuning; the deadline bounds it all.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retries: 6,
        }
    }
}

/// Retries transient failures with exponential backoff, honouring `Retry-After`, but returns
/// the last answer instead of sleeping past the deadline: the caller then fails the
/// invocation and Event Grid redelivers.
#[derive(Debug)]
pub struct DeadlineRetryPolicy {
    settings: RetrySettings,
}

impl DeadlineRetryPolicy {
    /// The policy with these settings (the Key Vault clients use it too, so that every Azure
    /// call reads `Retry-After` the same way and never sleeps past its deadline).
    pub fn new(settings: RetrySettings) -> Self {
        Self { settings }
    }
}

#[async_trait]
impl Policy for DeadlineRetryPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let deadline = ctx
            .value::<Deadline>()
            .map(|d| d.0)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(25));
        let mut attempt: u32 = 0;
        loop {
            if attempt > 0 {
                request.body_mut().reset().await?;
            }
            let result = next[0].send(ctx, request, &next[1..]).await;
            let retry_after = match &result {
                Ok(response) if is_transient_status(response.status()) => {
                    retry_after(response.headers())
                }
                Ok(_) => return result,
                Err(error)
                    if matches!(
                        error.kind(),
                        azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection
                    ) =>
                {
                    None
                }
                Err(_) => return result,
            };
            attempt += 1;
            let backoff = self.backoff(attempt);
            let delay = retry_after.map_or(backoff, |after| after.max(backoff));
            if attempt > self.settings.max_retries || !fits_before(delay, deadline) {
                return result;
            }
            tracing::debug!(
                message = "Retrying Azure request.",
                attempt,
                delay_ms = delay.as_millis() as u64
            );
            tokio::time::sleep(delay).await;
        }
    }
}

impl DeadlineRetryPolicy {
    /// Exponential backoff with up to 25% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .settings
            .initial_delay
            .saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
        let base = base.min(self.settings.max_delay);
        let jitter_percent = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                % 25,
        );
        base + base.mul_f64(jitter_percent as f64 / 100.0)
    }
}

/// True when waiting `delay` from now still ends before `deadline` (checked: the delay comes
/// from a response and may be absurd).
pub fn fits_before(delay: Duration, deadline: Instant) -> bool {
    Instant::now()
        .checked_add(delay)
        .is_some_and(|end| end < deadline)
}

/// No answer asks cmk-guard to wait longer than this; larger values are cut to it (callers
/// bound it further by their deadline).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` (seconds or an HTTP date), `retry-after-ms`, `x-ms-retry-after-ms`, at most
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &azure_core::http::headers::Headers) -> Option<Duration> {
    retry_after_from(|name| {
        headers.get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
    })
}

/// The one reading of a server's wait, for every HTTP client cmk-guard has (ARM, alerts, ACS):
/// `x-ms-retry-after-ms`, `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date,
/// given the header lookup; at most [`MAX_RETRY_AFTER`], so that no caller's arithmetic on it
/// can overflow.
pub fn retry_after_from<'a>(value: impl Fn(&'static str) -> Option<&'a str>) -> Option<Duration> {
    let wait = if let Some(ms) = value("x-ms-retry-after-ms")
        .or_else(|| value("retry-after-ms"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Duration::from_millis(ms)
    } else {
        let text = value("retry-after")?.trim();
        match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => {
                let format = time::macros::format_description!(
                    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
                );
                let at = time::PrimitiveDateTime::parse(text, &format)
                    .ok()?
                    .assume_utc();
                Duration::try_from(at - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
            }
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_retry_after_form() {
        let mut headers = azure_core::http::headers::Headers::new();
        headers.insert("retry-after", "7");
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("x-ms-retry-after-ms", "1500");
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut past = azure_core::http::headers::Headers::new();
        past.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(&past), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&azure_core::http::headers::Headers::new()),
            None
        );
    }

    #[test]
    fn an_absurd_retry_after_is_bounded_and_never_overflows() {
        for value in [
            "18446744073709551615",
            "86400",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let mut headers = azure_core::http::headers::Headers::new();
            headers.insert("retry-after", value);
            let wait = retry_after(&headers).expect(value);
            assert!(wait <= MAX_RETRY_AFTER, "{value}: {wait:?}");
        }
        let mut headers = azure_core::http::headers::Headers::new();
        headers.insert("retry-after-ms", "18446744073709551615");
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        let deadline = Instant::now() + Duration::from_secs(25);
        assert!(!fits_before(Duration::MAX, deadline));
        assert!(!fits_before(Duration::from_secs(26), deadline));
        assert!(fits_before(Duration::from_secs(1), deadline));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = DeadlineRetryPolicy {
            settings: RetrySettings::default(),
        };
        assert!(
            policy.backoff(1) >= Duration::from_millis(200)
                && policy.backoff(1) < Duration::from_millis(260)
        );
        assert!(policy.backoff(3) >= Duration::from_millis(800));
        assert!(policy.backoff(30) <= Duration::from_millis(12_500));
    }
}
