//! Pacing from ARM's own counts. ARM throttles per subscription (tenant-level calls in a tenant
//! bucket), per principal and per operation type with token buckets — reads 250 refilled at
//! 25/s, writes and deletes 200 at 10/s — and reports what is left on every answer
//! (`x-ms-ratelimit-remaining-subscription-reads`, …; azure-notes §6.1). Resource Graph keeps a
//! quota per user instead (15 queries per 5 s window, `x-ms-user-quota-remaining`).
//!
//! cmk-guard keeps an estimate of each bucket: it spends a token per request, refills at ARM's
//! rate, and sets the estimate to what the last answer reported, less the requests sent after
//! that one. Until a bucket's first answer, only [`PROBE`] requests go at once (another tool
//! may have spent the budget already); the rest wait for their paced turn. Every instance of the function app signs in as the same managed identity, so the
//! reported count already includes what the other instances spent: together they share one
//! budget instead of multiplying it. While the estimate stays above a reserve
//! ([`RESERVE_SHARE`] of the bucket, left for events and other tools), requests go out at
//! once; below it, each request is scheduled a refill interval after the previous one, so the
//! bucket settles at the reserve instead of running dry. A 429 pauses that bucket only, for its
//! `Retry-After` (at most [`MAX_SHARED_PAUSE`]): another subscription, or
//! writes in the same one, go on.

use std::collections::HashMap;
use std::sync::Mutex;
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
    /// Tokens left after every request already scheduled (negative while a queue waits).
    tokens: f64,
    /// When `tokens` was last refilled.
    at: Instant,
    /// Requests scheduled so far (their sequence numbers).
    issued: u64,
    /// A 429's pause.
    paused_until: Option<Instant>,
}

impl Estimate {
    fn refill(&mut self, limit: Limit, now: Instant) {
        if now > self.at {
            let added = (now - self.at).as_secs_f64() * limit.refill_per_second;
            self.tokens = (self.tokens + added).min(limit.capacity);
            self.at = now;
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
    estimates: Mutex<HashMap<BucketKey, Estimate>>,
}

impl Pacer {
    fn with<R>(
        &self,
        key: &BucketKey,
        now: Instant,
        f: impl FnOnce(&mut Estimate, Limit) -> R,
    ) -> R {
        let limit = key.limit();
        let mut estimates = self
            .estimates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let estimate = estimates.entry(key.clone()).or_insert_with(|| Estimate {
            tokens: limit.reserve + PROBE,
            at: now,
            issued: 0,
            paused_until: None,
        });
        estimate.refill(limit, now);
        f(estimate, limit)
    }

    /// Takes a token for a request at `now`: when it may go (`now` while above the reserve),
    /// or `Err` with the wait when that is not before `deadline` (nothing is taken then).
    pub fn schedule(
        &self,
        key: &BucketKey,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<(Instant, u64), Duration> {
        self.with(key, now, |estimate, limit| {
            let short = limit.reserve + 1.0 - estimate.tokens;
            let paced = if short > 0.0 {
                Duration::from_secs_f64(short / limit.refill_per_second)
            } else {
                Duration::ZERO
            };
            let mut at = now + paced;
            if let Some(paused) = estimate.paused_until.filter(|until| *until > at) {
                at = paused;
            }
            if deadline.is_some_and(|deadline| at >= deadline) {
                return Err(at - now);
            }
            estimate.tokens -= 1.0;
            estimate.issued += 1;
            Ok((at, estimate.issued))
        })
    }

    /// Waits for a request's turn in its bucket; `Err` with the wait when it would come at or
    /// after `deadline`.
    pub async fn admit(
        &self,
        key: BucketKey,
        deadline: Option<Instant>,
    ) -> Result<Ticket, Duration> {
        loop {
            let (at, seq) = self.schedule(&key, Instant::now(), deadline)?;
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            // A pause that began while this request waited holds it too.
            let paused = self.with(&key, now, |estimate, _| {
                let paused = estimate.paused_until.is_some_and(|until| until > now);
                if paused {
                    estimate.tokens += 1.0;
                }
                paused
            });
            if !paused {
                return Ok(Ticket {
                    key,
                    seq,
                    sent: now,
                });
            }
        }
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
        self.with(&ticket.key, now, |estimate, limit| {
            if let Some(reported) = reported {
                // What was left then, refilled since, less what was scheduled after it.
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
    }

    /// The estimated tokens of a bucket (tests).
    #[cfg(test)]
    fn tokens(&self, key: &BucketKey) -> f64 {
        self.with(key, Instant::now(), |estimate, _| estimate.tokens)
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
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-0000000000AA/resourceGroups/rg";

    fn read() -> BucketKey {
        BucketKey::of("GET", SUB)
    }

    #[test]
    fn buckets_come_from_the_request() {
        assert_eq!(
            read().scope,
            Scope::Subscription("00000000-0000-0000-0000-0000000000aa".to_owned())
        );
        assert_eq!(BucketKey::of("POST", SUB).operation, Operation::Write);
        assert_eq!(BucketKey::of("PATCH", SUB).operation, Operation::Write);
        assert_eq!(BucketKey::of("DELETE", SUB).operation, Operation::Delete);
        assert_eq!(
            BucketKey::of("GET", "/providers/Microsoft.Management/managementGroups/mg").scope,
            Scope::Tenant
        );
        assert_eq!(
            BucketKey::of("POST", "/providers/Microsoft.ResourceGraph/resources").scope,
            Scope::Graph
        );
    }

    /// A pacer that has heard `remaining` reads are left in the subscription.
    async fn told(remaining: &'static str) -> Pacer {
        let pacer = Pacer::default();
        let ticket = pacer.admit(read(), None).await.unwrap();
        pacer.observe(&ticket, false, None, |name| {
            (name == "x-ms-ratelimit-remaining-subscription-reads").then_some(remaining)
        });
        pacer
    }

    #[tokio::test(start_paused = true)]
    async fn until_the_first_answer_only_a_probe_goes_at_once() {
        let pacer = Pacer::default();
        let start = Instant::now();
        for _ in 0..PROBE as usize {
            assert_eq!(pacer.schedule(&read(), start, None).unwrap().0, start);
        }
        let (at, _) = pacer.schedule(&read(), start, None).unwrap();
        assert_eq!(at - start, Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn above_the_reserve_requests_go_at_once_then_at_the_refill_rate() {
        let pacer = told("250").await;
        let start = Instant::now();
        // 250 tokens, 50 kept back: 200 go at once.
        for _ in 0..200 {
            let (at, _) = pacer.schedule(&read(), start, None).unwrap();
            assert_eq!(at, start);
        }
        let (next, _) = pacer.schedule(&read(), start, None).unwrap();
        assert_eq!(next - start, Duration::from_millis(40));
        // 25 more are spread over the next second, one every 40 ms.
        let mut last = next;
        for _ in 0..24 {
            let (at, _) = pacer.schedule(&read(), start, None).unwrap();
            assert_eq!(at - last, Duration::from_millis(40));
            last = at;
        }
        assert_eq!(last - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pace_at_ten_a_second_and_separately_from_reads() {
        let pacer = Pacer::default();
        let write = BucketKey::of("PUT", SUB);
        let ticket = pacer.admit(write.clone(), None).await.unwrap();
        pacer.observe(&ticket, false, None, |name| {
            (name == "x-ms-ratelimit-remaining-subscription-writes").then_some("200")
        });
        let start = Instant::now();
        for _ in 0..160 {
            assert_eq!(pacer.schedule(&write, start, None).unwrap().0, start);
        }
        let (at, _) = pacer.schedule(&write, start, None).unwrap();
        assert_eq!(at - start, Duration::from_millis(100));
        assert_eq!(pacer.schedule(&read(), start, None).unwrap().0, start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_reported_count_from_other_instances_slows_this_one() {
        // The same identity spent the bucket elsewhere: 20 left, under the reserve of 50.
        let pacer = told("20").await;
        let tokens = pacer.tokens(&read());
        assert!((19.9..=20.1).contains(&tokens), "{tokens}");
        let start = Instant::now();
        let (at, _) = pacer.schedule(&read(), start, None).unwrap();
        // 31 tokens short of the reserve at 25/s.
        assert_eq!(at - start, Duration::from_millis(1_240));
        // The global count counts too, when lower.
        let global = Pacer::default();
        let ticket = global.admit(read(), None).await.unwrap();
        global.observe(&ticket, false, None, |name| match name {
            "x-ms-ratelimit-remaining-subscription-reads" => Some("200"),
            "x-ms-ratelimit-remaining-subscription-global-reads" => Some("10"),
            _ => None,
        });
        assert!(global.tokens(&read()) < 11.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_older_than_later_requests_is_not_counted_twice() {
        let pacer = told("250").await;
        let first = pacer.admit(read(), None).await.unwrap();
        for _ in 0..9 {
            pacer.admit(read(), None).await.unwrap();
        }
        // The first answer says 249 left; nine more went out since: 240, as estimated.
        pacer.observe(&first, false, None, |name| {
            (name == "x-ms-ratelimit-remaining-subscription-reads").then_some("249")
        });
        assert!((239.9..=240.1).contains(&pacer.tokens(&read())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_its_bucket_only_and_for_at_most_a_minute() {
        let pacer = told("250").await;
        let other = BucketKey::of("GET", "/subscriptions/00000000-0000-0000-0000-0000000000bb");
        let ticket = pacer.admit(read(), None).await.unwrap();
        pacer.observe(&ticket, true, Some(Duration::from_secs(7)), |_| None);
        let start = Instant::now();
        let (at, _) = pacer.schedule(&read(), start, None).unwrap();
        assert!(at - start >= Duration::from_secs(7), "{:?}", at - start);
        assert_eq!(pacer.schedule(&other, start, None).unwrap().0, start);
        assert_eq!(
            pacer
                .schedule(&BucketKey::of("PUT", SUB), start, None)
                .unwrap()
                .0,
            start,
            "writes have their own bucket"
        );
        // A request whose deadline comes first gives up at once and takes nothing.
        let before = pacer.tokens(&read());
        let wait = pacer
            .schedule(&read(), start, Some(start + Duration::from_secs(2)))
            .unwrap_err();
        assert!(wait >= Duration::from_secs(6));
        assert!((pacer.tokens(&read()) - before).abs() < 0.01);
        // A hostile Retry-After is bounded.
        pacer.observe(&ticket, true, Some(Duration::from_secs(86_400)), |_| None);
        let (at, _) = pacer.schedule(&read(), Instant::now(), None).unwrap();
        assert!(at - Instant::now() <= MAX_SHARED_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_that_starts_while_waiting_holds_the_waiter() {
        let pacer = std::sync::Arc::new(told("250").await);
        for _ in 0..200 {
            pacer.admit(read(), None).await.unwrap();
        }
        let ticket = pacer.admit(read(), None).await.unwrap();
        let waiting = {
            let pacer = pacer.clone();
            tokio::spawn(async move { pacer.admit(read(), None).await.map(|t| t.sent) })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        pacer.observe(&ticket, true, Some(Duration::from_secs(3)), |_| None);
        let sent = waiting.await.unwrap().unwrap();
        assert!(sent - start >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn resource_graph_waits_for_its_window_when_the_quota_is_spent() {
        let pacer = Pacer::default();
        let graph = BucketKey::of("POST", "/providers/Microsoft.ResourceGraph/resources");
        let ticket = pacer.admit(graph.clone(), None).await.unwrap();
        pacer.observe(&ticket, false, None, |name| match name {
            "x-ms-user-quota-remaining" => Some("0"),
            "x-ms-user-quota-resets-after" => Some("00:00:04"),
            _ => None,
        });
        let start = Instant::now();
        let (at, _) = pacer.schedule(&graph, start, None).unwrap();
        assert!(at - start >= Duration::from_secs(4));
        assert_eq!(parse_hms("01:02:03"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_hms("00:61:00"), None);
        assert_eq!(parse_hms("5"), None);
    }
}
