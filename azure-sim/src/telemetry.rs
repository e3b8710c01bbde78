//! Request accounting: counters per operation, per resource and per status, and a log of every
//! request with its time, so tests can assert "one read per resource" and compute the peak
//! request rate over any window ("never exceeding the configured Azure read rate").

use serde::Serialize;
use std::collections::BTreeMap;

/// One served request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Sequence number since the last reset.
    pub seq: u64,
    /// Wall clock, unix milliseconds.
    pub at_unix_ms: i64,
    /// Milliseconds since the simulator started (monotonic).
    pub at_ms: f64,
    /// HTTP method.
    pub method: String,
    /// Host (without port).
    pub host: String,
    /// Path (without query).
    pub path: String,
    /// Operation name.
    pub operation: String,
    /// Resource the request addressed (normalised, lower case), if any.
    pub resource: Option<String>,
    /// Answered status.
    pub status: u16,
    /// Caller object id, when a valid token was presented.
    pub caller: Option<String>,
    /// The RBAC actions checked for the caller: the ARM action (and any linked one), or the
    /// Key Vault data action. Empty when nothing was checked.
    pub actions: Vec<String>,
    /// Id of the fault rule that affected it.
    pub fault: Option<u64>,
}

/// Counter snapshot.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// All requests.
    pub total: u64,
    /// Per operation name.
    pub by_operation: BTreeMap<String, OperationCounter>,
    /// Per addressed resource (lower-case id or key URL).
    pub by_resource: BTreeMap<String, u64>,
    /// Per `"{operation} {resource}"`.
    pub by_operation_resource: BTreeMap<String, u64>,
}

/// Counts for one operation.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationCounter {
    /// All requests.
    pub total: u64,
    /// Per status code.
    pub by_status: BTreeMap<u16, u64>,
}

impl Counters {
    /// Requests for an operation (case-insensitive name).
    pub fn operation(&self, name: &str) -> u64 {
        self.by_operation
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.total)
            .sum()
    }

    /// Requests for an operation that were answered with `status`.
    pub fn operation_status(&self, name: &str, status: u16) -> u64 {
        self.by_operation
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.by_status.get(&status).copied().unwrap_or(0))
            .sum()
    }

    /// Requests addressing a resource (id compared case-insensitively).
    pub fn resource(&self, id: &str) -> u64 {
        let key = crate::ids::norm(id);
        self.by_resource.get(&key).copied().unwrap_or(0)
    }
}

/// Which records a rate or listing considers.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecordFilter {
    /// Operation name.
    pub operation: Option<String>,
    /// Host (exact, or `*.suffix`).
    pub host: Option<String>,
    /// Only requests after this sequence number.
    pub since: Option<u64>,
    /// Only GETs (reads) when true.
    pub reads_only: bool,
}

impl RecordFilter {
    fn accepts(&self, r: &RequestRecord) -> bool {
        self.operation
            .as_deref()
            .is_none_or(|o| o.eq_ignore_ascii_case(&r.operation))
            && self
                .host
                .as_deref()
                .is_none_or(|h| match h.strip_prefix("*.") {
                    Some(sfx) => r
                        .host
                        .to_ascii_lowercase()
                        .ends_with(&sfx.to_ascii_lowercase()),
                    None => h.eq_ignore_ascii_case(&r.host),
                })
            && self.since.is_none_or(|s| r.seq > s)
            && (!self.reads_only || r.method.eq_ignore_ascii_case("GET"))
    }
}

/// The peak number of requests inside any window of the given length.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeakRate {
    /// Window length in milliseconds.
    pub window_ms: f64,
    /// Most requests inside one window.
    pub peak: usize,
    /// Start of that window, ms since the simulator started.
    pub window_start_ms: f64,
    /// Requests considered.
    pub considered: usize,
}

/// Counters plus the request log.
#[derive(Debug, Default)]
pub struct Telemetry {
    counters: Counters,
    records: Vec<RequestRecord>,
    seq: u64,
}

impl Telemetry {
    /// Records a request.
    pub fn record(&mut self, mut record: RequestRecord) {
        self.seq += 1;
        record.seq = self.seq;
        let c = &mut self.counters;
        c.total += 1;
        let op = c.by_operation.entry(record.operation.clone()).or_default();
        op.total += 1;
        *op.by_status.entry(record.status).or_default() += 1;
        if let Some(resource) = &record.resource {
            *c.by_resource.entry(resource.clone()).or_default() += 1;
            *c.by_operation_resource
                .entry(format!("{} {resource}", record.operation))
                .or_default() += 1;
        }
        self.records.push(record);
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Records matching a filter.
    pub fn records(&self, filter: &RecordFilter) -> Vec<RequestRecord> {
        self.records
            .iter()
            .filter(|r| filter.accepts(r))
            .cloned()
            .collect()
    }

    /// Clears counters and the log.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The most requests (matching `filter`) that fall inside any window of `window_ms`.
    pub fn peak_rate(&self, window_ms: f64, filter: &RecordFilter) -> PeakRate {
        let times: Vec<f64> = self
            .records
            .iter()
            .filter(|r| filter.accepts(r))
            .map(|r| r.at_ms)
            .collect();
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let (mut best, mut best_start, mut lo) = (0usize, 0.0, 0usize);
        for hi in 0..sorted.len() {
            while sorted[hi] - sorted[lo] >= window_ms {
                lo += 1;
            }
            if hi + 1 - lo > best {
                best = hi + 1 - lo;
                best_start = sorted[lo];
            }
        }
        PeakRate {
            window_ms,
            peak: best,
            window_start_ms: best_start,
            considered: sorted.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_ms: f64, op: &str) -> RequestRecord {
        RequestRecord {
            seq: 0,
            at_unix_ms: 0,
            at_ms,
            method: "GET".into(),
            host: "management.azure.com".into(),
            path: "/".into(),
            operation: op.into(),
            resource: Some("/subscriptions/s".into()),
            status: 200,
            caller: None,
            actions: Vec::new(),
            fault: None,
        }
    }

    #[test]
    fn peak_rate_over_sliding_window() {
        let mut t = Telemetry::default();
        for at in [0.0, 100.0, 900.0, 950.0, 999.0, 1500.0, 3000.0] {
            t.record(rec(at, "Vaults_Get"));
        }
        t.record(rec(960.0, "Other"));
        let all = t.peak_rate(1000.0, &RecordFilter::default());
        assert_eq!(all.peak, 6);
        let vaults = t.peak_rate(
            1000.0,
            &RecordFilter {
                operation: Some("vaults_get".into()),
                ..Default::default()
            },
        );
        assert_eq!(vaults.peak, 5);
        assert_eq!(t.counters().operation("VAULTS_GET"), 7);
        assert_eq!(t.counters().resource("/Subscriptions/S/"), 8);
    }
}
