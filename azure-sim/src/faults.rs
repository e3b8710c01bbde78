//! Fault injection: a rule matches requests by operation name and/or method, host and path
//! pattern, and answers with a status (429 with `Retry-After`, 5xx, 403, …), adds latency, or
//! both — for the first N matching requests or always. Rules are checked in insertion order
//! after authentication, so a fault never hides the Key Vault challenge.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A fault rule as given by a test (also the admin API's JSON body).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Fault {
    /// Operation name to match (e.g. `Vaults_Get`, `GetKey`, `Identity_GetToken`), case-insensitive.
    pub operation: Option<String>,
    /// HTTP method to match.
    pub method: Option<String>,
    /// Host to match (`management.azure.com`, `kv1.vault.azure.net`, `*.vault.azure.net`).
    pub host: Option<String>,
    /// Path pattern, case-insensitive: `*` matches within one segment, `**` across segments.
    pub path: Option<String>,
    /// Status to answer with; `None` = only add latency, then serve normally.
    pub status: Option<u16>,
    /// `Retry-After` seconds (defaults to 1 for 429 and 503).
    pub retry_after: Option<u64>,
    /// Latency added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Number of matching requests to affect; `None` = always.
    pub count: Option<u32>,
    /// Error body to send instead of the surface's default for `status`.
    pub body: Option<Value>,
}

impl Fault {
    /// A rule matching one operation name.
    pub fn on_operation(operation: &str) -> Self {
        Self {
            operation: Some(operation.to_owned()),
            ..Self::default()
        }
    }
    /// A rule matching a method and path pattern.
    pub fn on_path(method: &str, path: &str) -> Self {
        Self {
            method: Some(method.to_owned()),
            path: Some(path.to_owned()),
            ..Self::default()
        }
    }
    /// A rule matching every request.
    pub fn on_everything() -> Self {
        Self::default()
    }
    /// Answer with `status`.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// Answer 429 with `Retry-After: seconds`.
    pub fn throttle(mut self, retry_after_seconds: u64) -> Self {
        self.status = Some(429);
        self.retry_after = Some(retry_after_seconds);
        self
    }
    /// Add latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency_ms = latency.as_millis() as u64;
        self
    }
    /// Affect only the first `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
    /// Restrict to a host.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }
}

/// A rule with its id and how often it fired.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultState {
    /// Id for deletion.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub fault: Fault,
    /// How many requests it affected.
    pub hits: u32,
}

/// What a matched rule asks the dispatcher to do.
#[derive(Debug, Clone)]
pub struct FaultAction {
    /// Id of the rule.
    pub id: u64,
    /// Latency to add.
    pub latency: Duration,
    /// Status to answer with, if any.
    pub status: Option<u16>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// Body override.
    pub body: Option<Value>,
}

/// The ordered rule table.
#[derive(Debug, Default)]
pub struct FaultTable {
    rules: Vec<FaultState>,
    next_id: u64,
}

impl FaultTable {
    /// Adds a rule; returns its id.
    pub fn add(&mut self, fault: Fault) -> u64 {
        self.next_id += 1;
        self.rules.push(FaultState {
            id: self.next_id,
            fault,
            hits: 0,
        });
        self.next_id
    }

    /// Removes one rule.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules and their hit counts.
    pub fn list(&self) -> Vec<FaultState> {
        self.rules.clone()
    }

    /// Finds the first rule with budget left that matches, and charges it.
    pub fn take(
        &mut self,
        operation: &str,
        method: &str,
        host: &str,
        path: &str,
    ) -> Option<FaultAction> {
        let rule = self.rules.iter_mut().find(|r| {
            r.fault.count.is_none_or(|c| r.hits < c)
                && matches(&r.fault, operation, method, host, path)
        })?;
        rule.hits += 1;
        let f = &rule.fault;
        let retry_after = f
            .retry_after
            .or(matches!(f.status, Some(429) | Some(503)).then_some(1));
        Some(FaultAction {
            id: rule.id,
            latency: Duration::from_millis(f.latency_ms),
            status: f.status,
            retry_after,
            body: f.body.clone(),
        })
    }
}

fn matches(f: &Fault, operation: &str, method: &str, host: &str, path: &str) -> bool {
    f.operation
        .as_deref()
        .is_none_or(|o| o.eq_ignore_ascii_case(operation))
        && f.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
        && f.host.as_deref().is_none_or(|h| host_matches(h, host))
        && f.path.as_deref().is_none_or(|p| path_matches(p, path))
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len()
                && host
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Path glob: `*` within a segment, `**` across segments, case-insensitive, trailing `/` ignored.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let p = pattern.trim_end_matches('/').to_ascii_lowercase();
    let s = path.trim_end_matches('/').to_ascii_lowercase();
    glob(p.as_bytes(), s.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => {
            let limit = s.iter().position(|c| *c == b'/').unwrap_or(s.len());
            (0..=limit).any(|i| glob(rest, &s[i..]))
        }
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs() {
        let vault = "/subscriptions/S/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
        assert!(path_matches(
            "/subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*",
            vault
        ));
        assert!(!path_matches(
            "/subscriptions/*/providers/microsoft.keyvault/vaults/*",
            vault
        ));
        assert!(path_matches("/subscriptions/**/vaults/*", vault));
        assert!(path_matches("**", vault));
    }

    #[test]
    fn counted_rules_expire_in_order() {
        let mut table = FaultTable::default();
        table.add(Fault::on_operation("Vaults_Get").throttle(2).times(2));
        table.add(Fault::on_operation("Vaults_Get").status(500).times(1));
        let statuses: Vec<Option<u16>> = (0..4)
            .map(|_| {
                table
                    .take("vaults_get", "GET", "management.azure.com", "/x")
                    .map(|a| a.status.unwrap_or(0))
            })
            .collect();
        assert_eq!(statuses, vec![Some(429), Some(429), Some(500), None]);
        assert_eq!(table.list()[0].hits, 2);
    }

    #[test]
    fn host_wildcards() {
        assert!(host_matches("*.vault.azure.net", "kv1.vault.azure.net"));
        assert!(!host_matches("*.vault.azure.net", "management.azure.com"));
    }
}
