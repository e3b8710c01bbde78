//! The one retry loop of alert delivery, for every channel (HTTP endpoints and SMTP alike):
//! retry what may pass (throttling, outages, network failures), with exponential backoff or
//! the server's own `Retry-After`, but never past the budget — a notification must not hold
//! up an invocation, and a send that runs out of time stays in the outbox instead.

use std::future::Future;
use std::time::{Duration, Instant};

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

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Delivered.
    Sent(T),
    /// Refused for good: trying again will not help.
    Refused(String),
    /// Failed in a way a later attempt may not: throttled, an outage, the network. The server
    /// may say when to try again.
    Failed {
        reason: String,
        server_wait: Option<Duration>,
    },
}

/// Runs `attempt` (given the time left) until it is sent, refused, or the budget ends.
pub(crate) async fn with_retries<T, F, Fut>(
    budget: RetryBudget,
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let start = Instant::now();
    let mut tries: u32 = 0;
    loop {
        tries += 1;
        let remaining = budget.total.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(Failure::retryable("the send budget ran out"));
        }
        let (reason, server_wait) = match attempt(remaining).await {
            Attempt::Sent(value) => return Ok(value),
            Attempt::Refused(reason) => return Err(Failure::permanent(reason)),
            Attempt::Failed {
                reason,
                server_wait,
            } => (reason, server_wait),
        };
        if tries >= budget.max_attempts {
            return Err(Failure::retryable(format!(
                "{reason} (gave up after {tries} attempts)"
            )));
        }
        let backoff = budget
            .first_backoff
            .saturating_mul(1u32 << (tries - 1).min(8));
        // The server's own wait wins; it knows when it will take the next request.
        let wait = server_wait.unwrap_or(backoff);
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
                "{reason} ({why}, past the {} s send budget)",
                budget.total.as_secs()
            )));
        }
        tracing::debug!(
            message = "Retrying alert delivery.",
            attempt = tries,
            wait_ms = wait.as_millis() as u64
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn budget(max_attempts: u32) -> RetryBudget {
        RetryBudget {
            total: Duration::from_secs(5),
            max_attempts,
            first_backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn retries_failures_until_sent() {
        let tries = Cell::new(0);
        let sent = with_retries(budget(4), |_| {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 3 {
                    Attempt::Failed {
                        reason: "HTTP 503".into(),
                        server_wait: None,
                    }
                } else {
                    Attempt::Sent(n)
                }
            }
        })
        .await;
        assert_eq!(sent, Ok(3));
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let tries = Cell::new(0);
        let refused: Result<(), _> = with_retries(budget(4), |_| {
            tries.set(tries.get() + 1);
            async { Attempt::Refused("HTTP 400".into()) }
        })
        .await;
        assert_eq!(refused, Err(Failure::permanent("HTTP 400")));
        assert_eq!(tries.get(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_or_before_a_wait_past_the_budget() {
        let failing = |_| async {
            Attempt::<()>::Failed {
                reason: "HTTP 503".into(),
                server_wait: None,
            }
        };
        let spent = with_retries(budget(2), failing).await.unwrap_err();
        assert_eq!(
            spent,
            Failure::retryable("HTTP 503 (gave up after 2 attempts)")
        );
        let slow_server = |_| async {
            Attempt::<()>::Failed {
                reason: "HTTP 429".into(),
                server_wait: Some(Duration::from_secs(60)),
            }
        };
        let waited = with_retries(budget(4), slow_server).await.unwrap_err();
        assert!(waited.retryable);
        assert_eq!(
            waited.reason,
            "HTTP 429 (the server asked to wait 60 s, past the 5 s send budget)"
        );
    }
}
