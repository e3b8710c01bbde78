//! A client-side limit on the Azure request rate, shared by every worker, and a shared pause
//! when Azure answers 429 — one throttled worker slows all of them, so a sweep backs off as a
//! whole instead of hammering ARM from the others.
//!
//! A request holds one of `rate` slots from the moment it is let through until one second
//! after its response arrived. Whatever the network delays, Azure then never sees more than
//! `rate` requests in any one second: every request it receives within a second held its slot
//! across the end of that second. An event's handful of reads still goes out at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// How long a slot stays taken after its response.
const HOLD: Duration = Duration::from_secs(1);

/// Requests per second when `CMKGUARD_READ_RATE` is not set: a fifth of ARM's per-principal
/// subscription read refill (25/s, reference §6.1), leaving room for everything else.
pub const DEFAULT_RATE_PER_SECOND: u32 = 20;

#[derive(Debug, Default)]
struct Slots {
    /// Requests let through and not answered yet.
    in_flight: usize,
    /// When the slots of answered requests become free again, earliest first.
    held_until: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// The shared limiter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: usize,
    slots: Arc<Mutex<Slots>>,
    freed: Arc<Notify>,
}

impl RateLimiter {
    /// At most `rate` requests in any one-second window.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: usize::try_from(rate.max(1)).unwrap_or(usize::MAX),
            slots: Arc::default(),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Waits for a free slot and takes it; give it back with [`RateLimiter::release`].
    pub async fn acquire(&self) {
        loop {
            let freed = self.freed.notified();
            let wait = {
                let mut slots = self.slots.lock().await;
                let now = Instant::now();
                match slots.paused_until {
                    Some(until) if until > now => Some(until - now),
                    _ => {
                        slots.paused_until = None;
                        while slots.held_until.front().is_some_and(|until| *until <= now) {
                            slots.held_until.pop_front();
                        }
                        if slots.in_flight + slots.held_until.len() < self.rate {
                            slots.in_flight += 1;
                            return;
                        }
                        slots.held_until.front().map(|until| *until - now)
                    }
                }
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = freed => {}
                    }
                }
                None => freed.await,
            }
        }
    }

    /// The response of a request arrived (or it failed): its slot frees up one second later.
    pub async fn release(&self) {
        let mut slots = self.slots.lock().await;
        slots.in_flight = slots.in_flight.saturating_sub(1);
        slots.held_until.push_back(Instant::now() + HOLD);
        drop(slots);
        self.freed.notify_waiters();
    }

    /// Azure said to wait: every worker pauses until then.
    pub async fn pause(&self, duration: Duration) {
        let mut slots = self.slots.lock().await;
        let until = Instant::now() + duration;
        if slots.paused_until.is_none_or(|current| current < until) {
            slots.paused_until = Some(until);
        }
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
        self.limiter.acquire().await;
        let result = next[0].send(ctx, request, &next[1..]).await;
        self.limiter.release().await;
        let response = result?;
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
    async fn never_more_than_the_rate_in_any_second() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..30 {
            limiter.acquire().await;
            sent.push(Instant::now() - start);
            // The request takes 100 ms before its response comes back.
            tokio::time::advance(Duration::from_millis(100)).await;
            limiter.release().await;
        }
        for (i, at) in sent.iter().enumerate().skip(10) {
            assert!(*at - sent[i - 10] >= HOLD, "{i}: {sent:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_below_the_rate_goes_out_at_once() {
        let limiter = RateLimiter::new(20);
        let start = Instant::now();
        for _ in 0..20 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let limiter = RateLimiter::new(100);
        limiter.pause(Duration::from_secs(5)).await;
        let start = Instant::now();
        let ((), ()) = tokio::join!(limiter.acquire(), limiter.acquire());
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }
}
