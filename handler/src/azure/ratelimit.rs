//! How fast cmk-guard sends ARM requests: paced per bucket from ARM's own remaining counts
//! ([`super::pacing`]), and optionally capped per instance by `CMKGUARD_READ_RATE`.
//!
//! The cap: a request holds one of `rate` slots from the moment it is let through until one
//! second after its response arrived. Whatever the network delays, Azure then never sees more
//! than `rate` requests in any one second from this instance: every request it receives within
//! a second held its slot across the end of that second. Unset, there is no cap: the pacing
//! alone keeps every instance (they share one identity, and so one budget) within ARM's limits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pacing::{BucketKey, Pacer};

/// How long a slot stays taken after its response.
const HOLD: Duration = Duration::from_secs(1);

/// A request given up because its turn in ARM's budget (a 429's pause, or the pacing) comes
/// after its deadline; the ARM client reports it as transient (the invocation fails and is
/// delivered again).
#[derive(Debug, thiserror::Error)]
#[error("Azure's request budget lets this request go only in {} s, past its deadline", .wait.as_secs())]
pub struct Throttled {
    /// How much longer the wait lasts.
    pub wait: Duration,
}

/// The shared limiter: the pacing per bucket, and the optional cap. Waiters for the cap queue
/// in order on a semaphore of `rate` permits, and a freed permit wakes exactly one of them (a
/// sweep keeps hundreds of requests waiting; waking them all on every release cost more CPU
/// than the requests themselves).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    permits: Option<Arc<Semaphore>>,
    pacer: Arc<Pacer>,
}

/// One request's slot under the cap, from being let through until one second after its
/// response.
#[derive(Debug)]
pub struct Slot {
    /// Held, never read: dropping it frees the slot.
    _permit: Option<OwnedSemaphorePermit>,
}

impl RateLimiter {
    /// Paced, and at most `rate` requests in any one-second window.
    pub fn new(rate: u32) -> Self {
        Self::paced(Some(rate))
    }

    /// Paced from ARM's counts, with the per-instance cap `CMKGUARD_READ_RATE` when set.
    pub fn paced(cap: Option<u32>) -> Self {
        let permits = cap.map(|rate| {
            let rate = usize::try_from(rate.max(1))
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(rate))
        });
        Self {
            permits,
            pacer: Arc::default(),
        }
    }

    /// Waits for a free slot under the cap and takes it (at once without a cap); give it back
    /// with [`RateLimiter::release`].
    pub async fn acquire(&self) -> Slot {
        let permit = match &self.permits {
            // The semaphore is never closed, so acquiring only waits.
            Some(permits) => permits.clone().acquire_owned().await.ok(),
            None => None,
        };
        Slot { _permit: permit }
    }

    /// The response of a request arrived (or it failed): its slot frees up one second later.
    pub fn release(&self, slot: Slot) {
        if slot._permit.is_some() {
            tokio::spawn(async move {
                tokio::time::sleep(HOLD).await;
                drop(slot);
            });
        }
    }
}

/// The pipeline policy: one turn in ARM's budget and one slot under the cap per attempt
/// (retries count); every answer's counts, and a 429's pause, feed the pacing.
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
        let deadline = ctx.value::<super::retry::Deadline>().map(|d| d.0);
        let key = BucketKey::of(request.method().as_str(), request.url().path());
        let ticket = match self.limiter.pacer.admit(key, deadline).await {
            Ok(ticket) => ticket,
            Err(wait) => {
                // Not an I/O error: retrying inside this invocation cannot help.
                return Err(azure_core::Error::new(
                    azure_core::error::ErrorKind::Other,
                    Throttled { wait },
                ));
            }
        };
        let slot = self.limiter.acquire().await;
        let result = next[0].send(ctx, request, &next[1..]).await;
        self.limiter.release(slot);
        let response = result?;
        let headers = response.headers();
        let throttled = response.status() == azure_core::http::StatusCode::TooManyRequests;
        self.limiter.pacer.observe(
            &ticket,
            throttled,
            super::retry::retry_after(headers),
            |name| headers.get_optional_str(&HeaderName::from(name.to_owned())),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_second() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..30 {
            let slot = limiter.acquire().await;
            sent.push(Instant::now() - start);
            // The request takes 100 ms before its response comes back.
            tokio::time::advance(Duration::from_millis(100)).await;
            limiter.release(slot);
        }
        for (i, at) in sent.iter().enumerate().skip(10) {
            assert!(*at - sent[i - 10] >= HOLD, "{i}: {sent:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_below_the_rate_goes_out_at_once() {
        let limiter = RateLimiter::new(20);
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..20 {
            slots.push(limiter.acquire().await);
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn each_freed_slot_lets_the_next_waiter_through_in_order() {
        let limiter = RateLimiter::new(2);
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let limiter = limiter.clone();
                let order = order.clone();
                tokio::spawn(async move {
                    let slot = limiter.acquire().await;
                    order.lock().unwrap().push((i, Instant::now()));
                    slot
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let start = Instant::now();
        limiter.release(first);
        limiter.release(second);
        for waiter in waiters.into_iter().take(2) {
            drop(waiter.await.unwrap());
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(order.iter().all(|(_, at)| *at - start >= HOLD), "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cap_nothing_waits_for_a_slot() {
        let limiter = RateLimiter::paced(None);
        let start = Instant::now();
        for _ in 0..10_000 {
            let slot = limiter.acquire().await;
            limiter.release(slot);
        }
        assert_eq!(Instant::now(), start);
    }
}
