//! A client-side limit on the Azure request rate, shared by every worker: a token bucket of
//! `rate` requests per second, and a shared pause when Azure answers 429 — one throttled worker
//! slows all of them, so a sweep backs off as a whole instead of hammering ARM from the others.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Requests per second when `CMKGUARD_READ_RATE` is not set: a fifth of ARM's per-principal
/// subscription read refill (25/s, reference §6.1), leaving room for everything else.
pub const DEFAULT_RATE_PER_SECOND: u32 = 20;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
    paused_until: Option<Instant>,
}

/// The shared limiter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: Arc<Mutex<Bucket>>,
}

impl RateLimiter {
    /// At most `rate` requests per second on average, with bursts of up to `rate` requests.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            burst: rate,
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: rate,
                refreshed: Instant::now(),
                paused_until: None,
            })),
        }
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                let now = Instant::now();
                match bucket.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        bucket.paused_until = None;
                        let elapsed = now.duration_since(bucket.refreshed).as_secs_f64();
                        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
                        bucket.refreshed = now;
                        if bucket.tokens >= 1.0 {
                            bucket.tokens -= 1.0;
                            return;
                        }
                        Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Azure said to wait: every worker pauses until then.
    pub async fn pause(&self, duration: Duration) {
        let mut bucket = self.bucket.lock().await;
        let until = Instant::now() + duration;
        if bucket.paused_until.is_none_or(|current| current < until) {
            bucket.paused_until = Some(until);
        }
        bucket.tokens = 0.0;
    }
}

/// The pipeline policy: one token per attempt (retries count), and a shared pause on 429.
#[derive(Debug)]
pub struct RateLimitPolicy {
    pub limiter: RateLimiter,
}

#[async_trait]
impl Policy for RateLimitPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        self.limiter.acquire().await;
        let response = next[0].send(ctx, request, &next[1..]).await?;
        if u16::from(response.status()) == 429 {
            let wait =
                super::arm::retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
            self.limiter.pause(wait).await;
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_rate() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..30 {
            limiter.acquire().await;
        }
        // 10 from the initial burst, then 20 more at 10 per second.
        let elapsed = Instant::now() - start;
        assert!(
            elapsed >= Duration::from_millis(1990) && elapsed < Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let limiter = RateLimiter::new(100);
        limiter.pause(Duration::from_secs(5)).await;
        let start = Instant::now();
        let (a, b) = tokio::join!(limiter.acquire(), limiter.acquire());
        let _ = (a, b);
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }
}
