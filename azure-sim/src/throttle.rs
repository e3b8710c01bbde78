//! Azure Resource Manager's request throttling as the service applies it since 2024 (azure-notes
//! §6.1): token buckets per subscription (tenant-level requests share a tenant bucket), per
//! security principal (the token's `oid`) and per operation type — reads (GET, HEAD) 250
//! refilled at 25/s, writes (PUT, PATCH, POST) and deletes 200 refilled at 10/s — plus a global
//! bucket per subscription and operation type for all principals together, 15 times as large.
//! Every ARM answer reports what is left (`x-ms-ratelimit-remaining-subscription-reads`, …); a
//! request finding a bucket empty is refused with 429, ARM's `SubscriptionRequestsThrottled`
//! body and `Retry-After` in whole seconds, and costs nothing.
//!
//! Resource Graph is not counted against those buckets: it has its own quota per user, a
//! window of [`GRAPH_WINDOW`] allowing [`GRAPH_QUOTA`] queries, reported in
//! `x-ms-user-quota-remaining` and `x-ms-user-quota-resets-after` (`hh:mm:ss`).
//!
//! The core ([`Throttle::admit_at`], [`Throttle::query_at`]) takes the time as an argument, so
//! the buckets are tested without a clock; the server passes the time since it started.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::http::{Ctx, Reply, lock};

/// The size and refill rate of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens when full.
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

/// How many times the per-principal bucket a subscription's global bucket holds.
pub const GLOBAL_FACTOR: f64 = 15.0;

/// Resource Graph queries one user may send per window.
pub const GRAPH_QUOTA: u32 = 15;

/// Resource Graph's quota window.
pub const GRAPH_WINDOW: Duration = Duration::from_secs(5);

/// Response headers, name and value.
pub type Headers = Vec<(String, String)>;

/// ARM's operation types, each with buckets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET and HEAD.
    Read,
    /// PUT, PATCH and POST (actions).
    Write,
    /// DELETE.
    Delete,
}

impl Operation {
    /// The operation type of an HTTP method (upper case).
    pub fn of_method(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Self::Read,
            "DELETE" => Self::Delete,
            _ => Self::Write,
        }
    }

    /// The per-principal limit (subscription and tenant alike).
    pub fn limit(self) -> Limit {
        match self {
            Self::Read => Limit {
                capacity: 250.0,
                refill_per_second: 25.0,
            },
            Self::Write | Self::Delete => Limit {
                capacity: 200.0,
                refill_per_second: 10.0,
            },
        }
    }

    /// The global (all principals) limit of a subscription.
    pub fn global_limit(self) -> Limit {
        let limit = self.limit();
        Limit {
            capacity: limit.capacity * GLOBAL_FACTOR,
            refill_per_second: limit.refill_per_second * GLOBAL_FACTOR,
        }
    }

    /// The word ARM's headers and messages use.
    fn plural(self) -> &'static str {
        match self {
            Self::Read => "reads",
            Self::Write => "writes",
            Self::Delete => "deletes",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

/// Where a request is counted: the subscription in its URL, or the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/subscriptions/{id}/…`, the id lower-cased.
    Subscription(String),
    /// Anything without a subscription (management groups, providers, tenants).
    Tenant,
}

impl Scope {
    /// The scope of a request path.
    pub fn of_path(path: &str) -> Self {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        match (segments.next(), segments.next()) {
            (Some(first), Some(id)) if first.eq_ignore_ascii_case("subscriptions") => {
                Self::Subscription(id.to_ascii_lowercase())
            }
            _ => Self::Tenant,
        }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Duration,
}

impl Bucket {
    fn full(limit: Limit, now: Duration) -> Self {
        Self {
            tokens: limit.capacity,
            at: now,
        }
    }

    /// Adds what refilled since the last look (time never runs backwards here).
    fn refill(&mut self, limit: Limit, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.refill_per_second).min(limit.capacity);
        self.at = self.at.max(now);
    }

    /// Whole seconds until one token is there (at least 1, ARM never says 0).
    fn seconds_to_one(&self, limit: Limit) -> u64 {
        let missing = (1.0 - self.tokens).max(0.0);
        ((missing / limit.refill_per_second).ceil() as u64).max(1)
    }
}

/// What an ARM request was told.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Let through; the headers report what is left.
    Granted(Vec<(String, String)>),
    /// Refused: wait this many seconds; the headers report what is left (nothing).
    Refused {
        /// `Retry-After`.
        retry_after: u64,
        /// The remaining-count headers.
        headers: Vec<(String, String)>,
        /// ARM's error code.
        code: &'static str,
        /// ARM's message.
        message: String,
    },
}

/// Resource Graph's quota window of one user.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Duration,
    used: u32,
}

/// All buckets of the simulated ARM.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Off: nothing is refused and the headers report full buckets.
    pub disabled: bool,
    principals: HashMap<(Scope, String, Operation), Bucket>,
    globals: HashMap<(String, Operation), Bucket>,
    graph: HashMap<String, Window>,
}

impl Throttle {
    /// A throttle that enforces the limits (`enabled`) or only reports full buckets.
    pub fn new(enabled: bool) -> Self {
        Self {
            disabled: !enabled,
            ..Self::default()
        }
    }

    /// Counts one ARM request by `principal` in `scope` at `now` (time since any fixed origin).
    pub fn admit_at(
        &mut self,
        now: Duration,
        scope: &Scope,
        principal: &str,
        operation: Operation,
    ) -> Admission {
        let limit = operation.limit();
        let global_limit = operation.global_limit();
        if self.disabled {
            let headers = headers(
                scope,
                operation,
                limit.capacity - 1.0,
                global_limit.capacity - 1.0,
            );
            return Admission::Granted(headers);
        }
        let own = self
            .principals
            .entry((scope.clone(), principal.to_ascii_lowercase(), operation))
            .or_insert_with(|| Bucket::full(limit, now));
        own.refill(limit, now);
        let mut global = match scope {
            Scope::Subscription(id) => {
                let bucket = self
                    .globals
                    .entry((id.clone(), operation))
                    .or_insert_with(|| Bucket::full(global_limit, now));
                bucket.refill(global_limit, now);
                Some(bucket)
            }
            Scope::Tenant => None,
        };
        let own_wait = (own.tokens < 1.0).then(|| own.seconds_to_one(limit));
        let global_wait = global
            .as_ref()
            .filter(|bucket| bucket.tokens < 1.0)
            .map(|bucket| bucket.seconds_to_one(global_limit));
        let global_tokens =
            |global: &Option<&mut Bucket>| global.as_ref().map_or(0.0, |b| b.tokens);
        if own_wait.is_some() || global_wait.is_some() {
            let retry_after = own_wait.max(global_wait).unwrap_or(1);
            let remaining = headers(scope, operation, own.tokens, global_tokens(&global));
            return refused(scope, principal, operation, retry_after, remaining);
        }
        own.tokens -= 1.0;
        if let Some(bucket) = global.as_mut() {
            bucket.tokens -= 1.0;
        }
        Admission::Granted(headers(
            scope,
            operation,
            own.tokens,
            global_tokens(&global),
        ))
    }

    /// Counts one Resource Graph query by `user` at `now`: `Ok` with the quota headers, or
    /// `Err` with the seconds until the window resets and the headers.
    pub fn query_at(&mut self, now: Duration, user: &str) -> Result<Headers, (u64, Headers)> {
        if self.disabled {
            return Ok(quota_headers(GRAPH_QUOTA - 1, GRAPH_WINDOW));
        }
        let window = self
            .graph
            .entry(user.to_ascii_lowercase())
            .or_insert(Window {
                started: now,
                used: 0,
            });
        if now.saturating_sub(window.started) >= GRAPH_WINDOW {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        let resets_after = GRAPH_WINDOW.saturating_sub(now.saturating_sub(window.started));
        if window.used >= GRAPH_QUOTA {
            let seconds = resets_after.as_secs_f64().ceil().max(1.0) as u64;
            return Err((seconds, quota_headers(0, resets_after)));
        }
        window.used += 1;
        Ok(quota_headers(GRAPH_QUOTA - window.used, resets_after))
    }
}

/// The operation name of Resource Graph queries (counted against its quota, not ARM's).
const GRAPH_OPERATION: &str = "ResourceGraph_Resources";

/// Counts an authenticated request (ARM only: `arm`): `Ok` with the headers its answer
/// carries, or `Err` with the 429 to send instead.
pub(crate) fn admit(ctx: &Ctx, arm: bool, operation: &str) -> Result<Vec<(String, String)>, Reply> {
    let Some(principal) = ctx.caller.as_ref().map(|c| c.object_id.as_str()) else {
        return Ok(Vec::new());
    };
    if !arm {
        return Ok(Vec::new());
    }
    let now = ctx.shared.started.elapsed();
    let mut throttle = lock(&ctx.shared.throttle);
    if operation == GRAPH_OPERATION {
        return throttle.query_at(now, principal).map_err(|(retry_after, headers)| {
            let detail = "Client application has been throttled and should not attempt to repeat the request until an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help.";
            let body = json!({"error": {
                "code": "RateLimiting",
                "message": "Please provide below info when asking for support: timestamp, correlationId.",
                "details": [{"code": "RateLimiting", "message": detail}],
            }});
            with_headers(Reply::json(429, body), retry_after, headers)
        });
    }
    let scope = Scope::of_path(&ctx.path);
    match throttle.admit_at(now, &scope, principal, Operation::of_method(&ctx.method)) {
        Admission::Granted(headers) => Ok(headers),
        Admission::Refused {
            retry_after,
            headers,
            code,
            message,
        } => Err(with_headers(
            Reply::error(429, code, &message),
            retry_after,
            headers,
        )),
    }
}

/// Puts the remaining-count headers on an answer, in place of any the operation set.
pub(crate) fn report(reply: &mut Reply, remaining: Vec<(String, String)>) {
    reply.headers.retain(|(name, _)| {
        !remaining
            .iter()
            .any(|(set, _)| set.eq_ignore_ascii_case(name))
    });
    reply.headers.extend(remaining);
}

fn with_headers(reply: Reply, retry_after: u64, headers: Vec<(String, String)>) -> Reply {
    let mut reply = reply.with_header("Retry-After", &retry_after.to_string());
    report(&mut reply, headers);
    reply
}

/// The remaining-count headers ARM sends for `operation` in `scope`.
fn headers(scope: &Scope, operation: Operation, own: f64, global: f64) -> Vec<(String, String)> {
    let whole = |tokens: f64| (tokens.max(0.0).floor() as u64).to_string();
    match scope {
        Scope::Subscription(_) => vec![
            (
                format!(
                    "x-ms-ratelimit-remaining-subscription-{}",
                    operation.plural()
                ),
                whole(own),
            ),
            (
                format!(
                    "x-ms-ratelimit-remaining-subscription-global-{}",
                    operation.plural()
                ),
                whole(global),
            ),
        ],
        Scope::Tenant => vec![(
            format!("x-ms-ratelimit-remaining-tenant-{}", operation.plural()),
            whole(own),
        )],
    }
}

/// ARM's refusal (the wording of its `SubscriptionRequestsThrottled` answers).
fn refused(
    scope: &Scope,
    principal: &str,
    operation: Operation,
    retry_after: u64,
    headers: Vec<(String, String)>,
) -> Admission {
    let (code, what) = match scope {
        Scope::Subscription(id) => (
            "SubscriptionRequestsThrottled",
            format!("subscription '{id}'"),
        ),
        Scope::Tenant => ("TenantRequestsThrottled", "tenant".to_owned()),
    };
    Admission::Refused {
        retry_after,
        headers,
        code,
        message: format!(
            "Number of '{}' requests for {what} actor '{principal}' exceeded. Please try again after '{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information.",
            operation.singular()
        ),
    }
}

/// `x-ms-user-quota-remaining` and `x-ms-user-quota-resets-after` (`hh:mm:ss`).
fn quota_headers(remaining: u32, resets_after: Duration) -> Vec<(String, String)> {
    let seconds = resets_after.as_secs_f64().ceil() as u64;
    vec![
        (
            "x-ms-user-quota-remaining".to_owned(),
            remaining.to_string(),
        ),
        (
            "x-ms-user-quota-resets-after".to_owned(),
            format!(
                "{:02}:{:02}:{:02}",
                seconds / 3600,
                (seconds / 60) % 60,
                seconds % 60
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-0000000000aa";

    fn sub() -> Scope {
        Scope::Subscription(SUB.to_owned())
    }

    fn header(admission: &Admission, name: &str) -> Option<String> {
        let headers = match admission {
            Admission::Granted(headers) | Admission::Refused { headers, .. } => headers,
        };
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn granted(admission: &Admission) -> bool {
        matches!(admission, Admission::Granted(_))
    }

    #[test]
    fn scopes_and_operations_come_from_the_request() {
        assert_eq!(
            Scope::of_path(&format!(
                "/Subscriptions/{}/resourceGroups",
                SUB.to_uppercase()
            )),
            sub()
        );
        assert_eq!(
            Scope::of_path("/providers/Microsoft.Management/managementGroups/mg"),
            Scope::Tenant
        );
        assert_eq!(Scope::of_path("/subscriptions"), Scope::Tenant);
        assert_eq!(Operation::of_method("GET"), Operation::Read);
        assert_eq!(Operation::of_method("HEAD"), Operation::Read);
        assert_eq!(Operation::of_method("POST"), Operation::Write);
        assert_eq!(Operation::of_method("PATCH"), Operation::Write);
        assert_eq!(Operation::of_method("DELETE"), Operation::Delete);
    }

    #[test]
    fn a_burst_of_250_reads_passes_then_the_next_waits_for_a_token() {
        let mut throttle = Throttle::new(true);
        let now = Duration::ZERO;
        for i in 0..250 {
            let admission = throttle.admit_at(now, &sub(), "app", Operation::Read);
            assert!(granted(&admission), "read {i}");
            assert_eq!(
                header(&admission, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
                Some((249 - i).to_string().as_str())
            );
            assert_eq!(
                header(
                    &admission,
                    "x-ms-ratelimit-remaining-subscription-global-reads"
                )
                .as_deref(),
                Some((3749 - i).to_string().as_str())
            );
        }
        let refused = throttle.admit_at(now, &sub(), "app", Operation::Read);
        let Admission::Refused {
            retry_after,
            code,
            message,
            ..
        } = &refused
        else {
            panic!("the 251st read is refused: {refused:?}");
        };
        assert_eq!(*retry_after, 1);
        assert_eq!(*code, "SubscriptionRequestsThrottled");
        assert!(
            message.contains("'read'") && message.contains(SUB),
            "{message}"
        );
        assert_eq!(
            header(&refused, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
            Some("0")
        );
        // A refused request costs nothing: 40 ms later one token has refilled (25/s).
        assert!(granted(&throttle.admit_at(
            Duration::from_millis(40),
            &sub(),
            "app",
            Operation::Read
        )));
        assert!(!granted(&throttle.admit_at(
            Duration::from_millis(40),
            &sub(),
            "app",
            Operation::Read
        )));
    }

    #[test]
    fn the_refill_is_25_reads_and_10_writes_a_second_up_to_the_bucket() {
        let mut throttle = Throttle::new(true);
        for _ in 0..250 {
            throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Read);
        }
        for _ in 0..200 {
            throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Write);
        }
        let at = Duration::from_secs(2);
        let reads = (0..100)
            .filter(|_| granted(&throttle.admit_at(at, &sub(), "app", Operation::Read)))
            .count();
        let writes = (0..100)
            .filter(|_| granted(&throttle.admit_at(at, &sub(), "app", Operation::Write)))
            .count();
        assert_eq!((reads, writes), (50, 20));
        // An hour later the bucket is full again, not fuller.
        let later = Duration::from_secs(3600);
        let reads = (0..300)
            .filter(|_| granted(&throttle.admit_at(later, &sub(), "app", Operation::Read)))
            .count();
        assert_eq!(reads, 250);
    }

    #[test]
    fn writes_wait_longer_and_deletes_have_their_own_bucket() {
        let mut throttle = Throttle::new(true);
        for _ in 0..200 {
            assert!(granted(&throttle.admit_at(
                Duration::ZERO,
                &sub(),
                "app",
                Operation::Write
            )));
        }
        let Admission::Refused { retry_after, .. } =
            throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Write)
        else {
            panic!("the 201st write is refused");
        };
        assert_eq!(retry_after, 1);
        let delete = throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Delete);
        assert_eq!(
            header(&delete, "x-ms-ratelimit-remaining-subscription-deletes").as_deref(),
            Some("199")
        );
        assert!(granted(&throttle.admit_at(
            Duration::ZERO,
            &sub(),
            "app",
            Operation::Read
        )));
    }

    #[test]
    fn buckets_are_per_principal_and_per_subscription() {
        let mut throttle = Throttle::new(true);
        let other = Scope::Subscription("00000000-0000-0000-0000-0000000000bb".to_owned());
        for _ in 0..250 {
            throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Read);
        }
        assert!(!granted(&throttle.admit_at(
            Duration::ZERO,
            &sub(),
            "app",
            Operation::Read
        )));
        assert!(granted(&throttle.admit_at(
            Duration::ZERO,
            &sub(),
            "APP-2",
            Operation::Read
        )));
        assert!(granted(&throttle.admit_at(
            Duration::ZERO,
            &other,
            "app",
            Operation::Read
        )));
        let tenant = throttle.admit_at(Duration::ZERO, &Scope::Tenant, "app", Operation::Read);
        assert_eq!(
            header(&tenant, "x-ms-ratelimit-remaining-tenant-reads").as_deref(),
            Some("249")
        );
        // The same principal under another casing is the same principal.
        assert!(!granted(&throttle.admit_at(
            Duration::ZERO,
            &sub(),
            "App",
            Operation::Read
        )));
    }

    #[test]
    fn the_global_bucket_holds_all_principals_together_to_15_times_one() {
        let mut throttle = Throttle::new(true);
        let mut granted_reads = 0;
        // 16 principals with 250 reads each: the global bucket of 3,750 runs out first.
        for principal in 0..16 {
            for _ in 0..250 {
                let admission = throttle.admit_at(
                    Duration::ZERO,
                    &sub(),
                    &format!("p{principal}"),
                    Operation::Read,
                );
                if granted(&admission) {
                    granted_reads += 1;
                } else {
                    let Admission::Refused { retry_after, .. } = admission else {
                        unreachable!()
                    };
                    assert_eq!(retry_after, 1);
                    assert_eq!(
                        header(
                            &admission,
                            "x-ms-ratelimit-remaining-subscription-global-reads"
                        )
                        .as_deref(),
                        Some("0")
                    );
                }
            }
        }
        assert_eq!(granted_reads, 3750);
    }

    #[test]
    fn a_disabled_throttle_refuses_nothing_and_reports_full_buckets() {
        let mut throttle = Throttle::new(false);
        for _ in 0..1000 {
            let admission = throttle.admit_at(Duration::ZERO, &sub(), "app", Operation::Read);
            assert_eq!(
                header(&admission, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
                Some("249")
            );
        }
        for _ in 0..100 {
            assert!(throttle.query_at(Duration::ZERO, "app").is_ok());
        }
    }

    #[test]
    fn resource_graph_allows_15_queries_per_user_per_5_second_window() {
        let mut throttle = Throttle::new(true);
        for i in 0..15 {
            let headers = throttle
                .query_at(Duration::from_millis(100 * i), "user")
                .expect("within the quota");
            assert_eq!(headers[0].1, (14 - i).to_string());
        }
        let (retry_after, headers) = throttle
            .query_at(Duration::from_millis(2_500), "user")
            .expect_err("the 16th query in the window");
        assert_eq!(retry_after, 3);
        assert_eq!(headers[0].1, "0");
        assert_eq!(headers[1].1, "00:00:03");
        assert!(
            throttle
                .query_at(Duration::from_millis(2_500), "someone-else")
                .is_ok()
        );
        let headers = throttle
            .query_at(Duration::from_secs(5), "user")
            .expect("a new window");
        assert_eq!(headers[0].1, "14");
        assert_eq!(headers[1].1, "00:00:05");
    }
}
