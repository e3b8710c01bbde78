//! A client-side limit on the Azure request rate, shared by every worker, and a shared pause
//! when Azure answers 429 — one throttled worker slows all of them, so a sweep backs off as a
//! whole instead of hammering ARM from the others.
//!
//! A request holds one of `rate` slots from the moment it is let through until one second
//! after its response arrived. Whatever the network delays, Azure then never sees more than
//! `rate` requests in any one second: every request it receives within a second held its slot
//! across the end of that second. An event's handful of reads still goes out at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a slot stays taken after its response.
const HOLD: Duration = Duration::from_secs(1);

/// The longest pause one 429 imposes on every worker. ARM's buckets refill within seconds; a
/// larger `Retry-After` (hostile or broken) must not stall the instance, so each request still
/// honours its own `Retry-After` within its deadline, but the shared pause stops here.
pub const MAX_SHARED_PAUSE: Duration = Duration::from_secs(60);

/// A request given up because a shared pause outlasts its deadline; the ARM client reports it
/// as transient (the invocation fails and is delivered again).
#[derive(Debug, thiserror::Error)]
#[error("Azure throttled this instance for {} s more, past this request's deadline", .wait.as_secs())]
pub struct Throttled {
    /// How much longer the pause lasts.
    pub wait: Duration,
}

/// Requests per second when `CMKGUARD_READ_RATE` is not set: a fifth of ARM's per-principal
/// subscription read refill (25/s, azure-notes §6.1), leaving room for everything else.
pub const DEFAULT_RATE_PER_SECOND: u32 = 20;

/// The shared limiter. Waiters queue in order on a semaphore of `rate` permits, and a freed
/// permit wakes exactly one of them (a sweep keeps hundreds of requests waiting; waking them
/// all on every release cost more CPU than the requests themselves).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    permits: Arc<Semaphore>,
    paused_until: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// One request's slot, from being let through until one second after its response.
#[derive(Debug)]
pub struct Slot {
    /// Held, never read: dropping it frees the slot.
    _permit: OwnedSemaphorePermit,
}

impl RateLimiter {
    /// At most `rate` requests in any one-second window.
    pub fn new(rate: u32) -> Self {
        let rate = usize::try_from(rate.max(1))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(rate)),
            paused_until: Arc::default(),
        }
    }

    /// Waits for a free slot and takes it; give it back with [`RateLimiter::release`].
    pub async fn acquire(&self) -> Slot {
        loop {
            // Without a deadline there is nothing to give up for.
            if let Ok(slot) = self.acquire_before(None).await {
                return slot;
            }
        }
    }

    /// Like [`RateLimiter::acquire`], but gives up at once with the pause's remaining length
    /// when a shared pause lasts past `deadline`: the caller fails fast instead of sleeping
    /// through its whole budget.
    pub async fn acquire_before(&self, deadline: Option<Instant>) -> Result<Slot, Duration> {
        loop {
            if let Some(wait) = self.paused_for() {
                if deadline.is_some_and(|deadline| !super::retry::fits_before(wait, deadline)) {
                    return Err(wait);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                continue;
            };
            // A pause that began while this request waited holds it too.
            if self.paused_for().is_none() {
                return Ok(Slot { _permit: permit });
            }
        }
    }

    /// The response of a request arrived (or it failed): its slot frees up one second later.
    pub fn release(&self, slot: Slot) {
        tokio::spawn(async move {
            tokio::time::sleep(HOLD).await;
            drop(slot);
        });
    }

    /// Azure said to wait: every worker pauses until then, for at most [`MAX_SHARED_PAUSE`].
    pub fn pause(&self, duration: Duration) {
        let Some(until) = Instant::now().checked_add(duration.min(MAX_SHARED_PAUSE)) else {
            return;
        };
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// How much longer the pause lasts, if one is on.
    fn paused_for(&self) -> Option<Duration> {
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        paused.filter(|until| *until > now).map(|until| until - now)
    }
}

/// The pipeline policy: one slot per attempt (retries count), and a shared pause on 429.
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
        let slot = match self.limiter.acquire_before(deadline).await {
            Ok(slot) => slot,
            Err(wait) => {
                // Not an I/O error: retrying inside this invocation cannot help.
                return Err(azure_core::Error::new(
                    azure_core::error::ErrorKind::Other,
                    Throttled { wait },
                ));
            }
        };
        let result = next[0].send(ctx, request, &next[1..]).await;
        self.limiter.release(slot);
        let response = result?;
        if response.status() == azure_core::http::StatusCode::TooManyRequests {
            let wait =
                super::retry::retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
            self.limiter.pause(wait);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn a_pause_holds_every_caller() {
        let limiter = RateLimiter::new(100);
        limiter.pause(Duration::from_secs(5));
        let start = Instant::now();
        let _slots = tokio::join!(limiter.acquire(), limiter.acquire());
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_never_longer_than_a_minute_and_never_overflows() {
        let limiter = RateLimiter::new(10);
        limiter.pause(Duration::MAX);
        limiter.pause(Duration::from_secs(86_400));
        let waited = limiter.paused_for().expect("paused");
        assert!(waited <= MAX_SHARED_PAUSE, "{waited:?}");
        let start = Instant::now();
        let slot = limiter.acquire().await;
        assert!(Instant::now() - start <= MAX_SHARED_PAUSE);
        limiter.release(slot);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_past_the_deadline_gives_up_at_once() {
        let limiter = RateLimiter::new(10);
        limiter.pause(Duration::from_secs(30));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let wait = limiter
            .acquire_before(Some(deadline))
            .await
            .expect_err("the pause outlasts the deadline");
        assert_eq!(Instant::now(), start, "gave up without waiting");
        assert!(wait > Duration::from_secs(25));
        // A pause that ends before the deadline is waited out.
        let later = start + Duration::from_secs(60);
        assert!(limiter.acquire_before(Some(later)).await.is_ok());
    }
}
