//! Pacing from ARM's own counts. ARM throttles per subscription (tenant-level calls in a tenant
//! bucket), per principal and per operation type with token buckets — reads 250 refilled at
//! 25/s, writes and deletes 200 at 10/s — and reports what is left on every answer
//! (`x-ms-ratelimit-remaining-subscription-reads`, …; azure-notes §6.1). Resource Graph keeps a
//! quota per user instead (15 queries per 5 s window, `x-ms-user-quota-remaining`).
//!
//! cmk-guard keeps an estimate of each bucket: it spends a token per request, refills at ARM's
//! rate, and sets the estimate to what the last answer reported, less the requests sent after
//! that one. Until a bucket's first answer, only [`PROBE`] requests go at once (another tool
//! may have spent the budget already); the rest wait in order for their turn, which comes
//! with the refill or as soon as an answer reports more left (a bucket that never reports is
//! held to ARM's documented refill rate). Every instance of the function app signs in as the
//! same managed identity, so the reported count already includes what the other instances
//! spent: together they share one budget instead of multiplying it. While the estimate stays
//! above a reserve ([`RESERVE_SHARE`] of the bucket, left for events and other tools),
//! requests go out at once; below it, one per refill interval, so the bucket settles at the
//! reserve instead of running dry. A 429 pauses that bucket only, for its
//! `Retry-After` (at most [`MAX_SHARED_PAUSE`]): another subscription, or
//! writes in the same one, go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The share of a bucket cmk-guard leaves for others (its own events included): below it,
/// requests are paced to the refill rate.
pub const RESERVE_SHARE: f64 = 0.2;

/// The longest pause one 429 imposes on its bucket. ARM's buckets refill within seconds; a
/// larger `Retry-After` (hostile or broken) must not stall the instance, so each request still
/// honours its own `Retry-After` within its deadline, but the shared pause stops here.
pub const MAX_SHARED_PAUSE: Duration = Duration::from_secs(60);

/// Requests that go at once to a bucket nothing has been heard from yet.
pub const PROBE: f64 = 4.0;

/// Which ARM bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/subscriptions/{id}/…`, the id lower-cased.
    Subscription(String),
    /// A tenant-level request (management groups, providers).
    Tenant,
    /// Resource Graph (its own per-user quota).
    Graph,
}

/// ARM's operation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET and HEAD.
    Read,
    /// PUT, PATCH and POST.
    Write,
    /// DELETE.
    Delete,
}

/// One bucket: where, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub scope: Scope,
    pub operation: Operation,
}

impl BucketKey {
    /// The bucket a request to `path` with `method` draws from.
    pub fn of(method: &str, path: &str) -> Self {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let first = segments.next().unwrap_or_default();
        let second = segments.next();
        let graph = path
            .to_ascii_lowercase()
            .contains("/providers/microsoft.resourcegraph/");
        let scope = match second {
            _ if graph => Scope::Graph,
            Some(id) if first.eq_ignore_ascii_case("subscriptions") => {
                Scope::Subscription(id.to_ascii_lowercase())
            }
            _ => Scope::Tenant,
        };
        let operation = match method.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => Operation::Read,
            "DELETE" => Operation::Delete,
            _ => Operation::Write,
        };
        Self { scope, operation }
    }

    /// The bucket's size and refill rate as ARM (or Resource Graph) documents them.
    fn limit(&self) -> Limit {
        match (&self.scope, self.operation) {
            // 15 per 5-second window, as a rate.
            (Scope::Graph, _) => Limit::new(15.0, 3.0),
            (_, Operation::Read) => Limit::new(250.0, 25.0),
            (_, Operation::Write | Operation::Delete) => Limit::new(200.0, 10.0),
        }
    }

    /// The answer's header that reports this bucket (and, for subscriptions, the global one).
    fn remaining_headers(&self) -> [Option<String>; 2] {
        let kind = match self.operation {
            Operation::Read => "reads",
            Operation::Write => "writes",
            Operation::Delete => "deletes",
        };
        match self.scope {
            Scope::Subscription(_) => [
                Some(format!("x-ms-ratelimit-remaining-subscription-{kind}")),
                Some(format!(
                    "x-ms-ratelimit-remaining-subscription-global-{kind}"
                )),
            ],
            Scope::Tenant => [
                Some(format!("x-ms-ratelimit-remaining-tenant-{kind}")),
                None,
            ],
            Scope::Graph => [Some("x-ms-user-quota-remaining".to_owned()), None],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    capacity: f64,
    refill_per_second: f64,
    reserve: f64,
}

impl Limit {
    fn new(capacity: f64, refill_per_second: f64) -> Self {
        Self {
            capacity,
            refill_per_second,
            reserve: capacity * RESERVE_SHARE,
        }
    }
}

/// The estimate of one bucket.
#[derive(Debug)]
struct Estimate {
    /// Tokens left after every request already sent.
    tokens: f64,
    /// When `tokens` was last refilled.
    at: Instant,
    /// Requests sent so far (their sequence numbers).
    issued: u64,
    /// A 429's pause.
    paused_until: Option<Instant>,
    /// Requests waiting for their turn.
    waiting: usize,
}

impl Estimate {
    fn refill(&mut self, limit: Limit, now: Instant) {
        if now > self.at {
            let added = (now - self.at).as_secs_f64() * limit.refill_per_second;
            self.tokens = (self.tokens + added).min(limit.capacity);
            self.at = now;
        }
    }

    /// How long until the request after `ahead` others may go, as things stand at `now`.
    fn wait(&self, limit: Limit, now: Instant, ahead: usize) -> Duration {
        let short = limit.reserve + 1.0 + ahead as f64 - self.tokens;
        let paced = if short > 0.0 {
            Duration::from_secs_f64(short / limit.refill_per_second)
        } else {
            Duration::ZERO
        };
        let paused = self
            .paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        paced.max(paused)
    }
}

/// One bucket: its estimate, and the queue of requests waiting for a turn in it.
#[derive(Debug)]
struct Bucket {
    limit: Limit,
    estimate: Mutex<Estimate>,
    /// Held by the request whose turn is next; the others queue for it in order.
    turn: tokio::sync::Mutex<()>,
    /// Every answer wakes the request whose turn is next, so that it goes as soon as the
    /// estimate allows rather than when it was expected to.
    news: tokio::sync::Notify,
}

impl Bucket {
    fn with<R>(&self, now: Instant, f: impl FnOnce(&mut Estimate, Limit) -> R) -> R {
        let mut estimate = self
            .estimate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        estimate.refill(self.limit, now);
        f(&mut estimate, self.limit)
    }

    /// A token for a request at `now` (its sequence number), or how long until there is one.
    fn take(&self, now: Instant) -> Result<u64, Duration> {
        self.with(now, |estimate, limit| {
            let wait = estimate.wait(limit, now, 0);
            if !wait.is_zero() {
                return Err(wait);
            }
            estimate.tokens -= 1.0;
            estimate.issued += 1;
            Ok(estimate.issued)
        })
    }
}

/// Counts a request among a bucket's waiters while it waits (its future may be dropped).
struct Waiting<'a>(&'a Bucket);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.with(Instant::now(), |estimate, _| {
            estimate.waiting = estimate.waiting.saturating_sub(1);
        });
    }
}

/// What the pacing did in this process so far, for a progress display (`scan` on a
/// terminal): requests let through, and the requests held back for their turn (an empty
/// bucket, or a 429's pause) with the wall-clock time during which at least one was held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Requests sent to ARM or Resource Graph (retries count).
    pub requests: u64,
    /// Requests that had to wait for their turn in a bucket.
    pub waits: u64,
    /// How long, in wall-clock time, at least one request was waiting.
    pub waited: Duration,
}

/// The process's counts behind [`activity`]. Process-wide because the display reads them
/// across every client the command built; counting costs one relaxed increment per request.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static WAITS: AtomicU64 = AtomicU64::new(0);
static HELD: Mutex<Held> = Mutex::new(Held {
    waiting: 0,
    since: None,
    total: Duration::ZERO,
});

/// Requests held back right now, since when at least one has been, and the time before that.
#[derive(Debug)]
struct Held {
    waiting: usize,
    since: Option<Instant>,
    total: Duration,
}

fn held() -> std::sync::MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pacing's counts so far in this process.
pub fn activity() -> Activity {
    let held = held();
    let ongoing = held.since.map_or(Duration::ZERO, |since| {
        Instant::now().saturating_duration_since(since)
    });
    Activity {
        requests: REQUESTS.load(Ordering::Relaxed),
        waits: WAITS.load(Ordering::Relaxed),
        waited: held.total + ongoing,
    }
}

/// One request held back for its turn, from its first refused turn until it goes or gives up.
struct HeldBack;

impl HeldBack {
    fn start() -> Self {
        WAITS.fetch_add(1, Ordering::Relaxed);
        let mut held = held();
        held.waiting += 1;
        if held.since.is_none() {
            held.since = Some(Instant::now());
        }
        Self
    }
}

impl Drop for HeldBack {
    fn drop(&mut self) {
        let mut held = held();
        held.waiting = held.waiting.saturating_sub(1);
        if held.waiting == 0
            && let Some(since) = held.since.take()
        {
            held.total += Instant::now().saturating_duration_since(since);
        }
    }
}

/// A request let through: give it back to [`Pacer::observe`] with its answer.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub key: BucketKey,
    seq: u64,
    sent: Instant,
}

/// The estimates of every bucket, shared by all workers.
#[derive(Debug, Default)]
pub struct Pacer {
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
}

impl Pacer {
    fn bucket(&self, key: &BucketKey) -> Arc<Bucket> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(key.clone()).or_insert_with(|| {
            let limit = key.limit();
            Arc::new(Bucket {
                limit,
                estimate: Mutex::new(Estimate {
                    tokens: limit.reserve + PROBE,
                    at: Instant::now(),
                    issued: 0,
                    paused_until: None,
                    waiting: 0,
                }),
                turn: tokio::sync::Mutex::new(()),
                news: tokio::sync::Notify::new(),
            })
        });
        Arc::clone(bucket)
    }

    /// Waits for a request's turn in its bucket: at once while the estimate is above the
    /// reserve, else when the refill (or a 429's pause) allows or an answer reports more left,
    /// in the order requests asked. `Err` with the expected wait when the turn would come at
    /// or after `deadline` (then nothing is taken).
    pub async fn admit(
        &self,
        key: BucketKey,
        deadline: Option<Instant>,
    ) -> Result<Ticket, Duration> {
        let bucket = self.bucket(&key);
        let now = Instant::now();
        // Give up at once when the queue ahead already reaches past the deadline.
        bucket.with(now, |estimate, limit| {
            let wait = estimate.wait(limit, now, estimate.waiting);
            if deadline.is_some_and(|deadline| now + wait >= deadline) {
                return Err(wait);
            }
            estimate.waiting += 1;
            Ok(())
        })?;
        let waiting = Waiting(&bucket);
        let turn = async {
            let _turn = bucket.turn.lock().await;
            let mut held_back = None;
            loop {
                let now = Instant::now();
                let wait = match bucket.take(now) {
                    Ok(seq) => {
                        REQUESTS.fetch_add(1, Ordering::Relaxed);
                        return Ok(Ticket {
                            key,
                            seq,
                            sent: now,
                        });
                    }
                    Err(wait) => wait,
                };
                if deadline.is_some_and(|deadline| now + wait >= deadline) {
                    return Err(wait);
                }
                held_back.get_or_insert_with(HeldBack::start);
                tokio::select! {
                    () = tokio::time::sleep_until(now + wait) => {}
                    () = bucket.news.notified() => {}
                }
            }
        };
        let result = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, turn).await {
                Ok(result) => result,
                Err(_) => Err(bucket.with(Instant::now(), |estimate, limit| {
                    estimate.wait(limit, Instant::now(), 0)
                })),
            },
            None => turn.await,
        };
        drop(waiting);
        result
    }

    /// Learns from an answer: the remaining count it reports (`header` looks one up by name),
    /// and on 429 the pause (`retry_after`, 1 s when absent; at most `MAX_SHARED_PAUSE`).
    pub fn observe<'a>(
        &self,
        ticket: &Ticket,
        throttled: bool,
        retry_after: Option<Duration>,
        header: impl Fn(&str) -> Option<&'a str>,
    ) {
        let now = Instant::now();
        let reported = ticket
            .key
            .remaining_headers()
            .iter()
            .flatten()
            .filter_map(|name| header(name))
            .filter_map(|value| value.trim().parse::<u32>().ok())
            .min();
        // Resource Graph says when its window resets; an empty quota waits for that.
        let graph_reset = (ticket.key.scope == Scope::Graph && reported == Some(0))
            .then(|| header("x-ms-user-quota-resets-after").and_then(parse_hms))
            .flatten();
        let reported = if throttled { Some(0) } else { reported };
        let pause = if throttled {
            Some(retry_after.unwrap_or(Duration::from_secs(1)))
        } else {
            graph_reset
        };
        let bucket = self.bucket(&ticket.key);
        bucket.with(now, |estimate, limit| {
            if let Some(reported) = reported {
                // What was left then, refilled since, less what was sent after it.
                let since = now.saturating_duration_since(ticket.sent).as_secs_f64();
                let later = estimate.issued.saturating_sub(ticket.seq) as f64;
                let known = (f64::from(reported) + since * limit.refill_per_second)
                    .min(limit.capacity)
                    - later;
                estimate.tokens = known;
            }
            if let Some(until) = pause.and_then(|p| now.checked_add(p.min(MAX_SHARED_PAUSE))) {
                estimate.paused_until = Some(estimate.paused_until.map_or(until, |p| p.max(until)));
            }
        });
        bucket.news.notify_one();
    }

    /// The estimated tokens of a bucket (tests).
    #[cfg(test)]
    fn tokens(&self, key: &BucketKey) -> f64 {
        self.bucket(key)
            .with(Instant::now(), |estimate, _| estimate.tokens)
    }
}

/// `hh:mm:ss` as Resource Graph writes `x-ms-user-quota-resets-after`.
fn parse_hms(text: &str) -> Option<Duration> {
    let mut parts = text.trim().split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || m >= 60 || s >= 60 || h > 24 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests;
