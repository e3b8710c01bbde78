//! The state every cmk-guard instance shares: which events were already handled, what was last
//! decided about each finding, which remediations ran or are running, the audit trail, the
//! notification outbox and the sweep cursor.
//!
//! Event Grid delivers at least once and the Function app may run several instances against one
//! store (docs/architecture.md, *Quality bars*), so every write that decides "who acts" is atomic
//! in the store itself: an insert that fails when the row or blob exists, or a compare-and-set on a
//! version. Nothing here reads the clock; callers pass the time in.
//!
//! Two backends implement [`StateStore`]: [`sqlite`] (the embedded default, also safe for two
//! processes sharing one file) and [`blob`] (an Azure Blob container, for scaled-out
//! instances). [`open`] picks one from `CMKGUARD_STATE`; `docs/state.md` describes both.

pub mod blob;
mod spec;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::outcome::{ActionResult, FindingState, Severity};

pub use spec::{DEFAULT_STATE, StateSpec};

/// How long a claimed event id is remembered. Event Grid stops redelivering after 24 hours, so
/// a redelivery within this window is always recognised as a duplicate.
pub const EVENT_CLAIM_RETENTION: Duration = Duration::hours(24);
/// How long remediation attempts are kept; the budget only looks back an hour, the rest is for
/// people reading the store after an incident.
pub const ATTEMPT_RETENTION: Duration = Duration::days(7);
/// How long a sent notification is kept, so that re-enqueueing the same id stays a no-op.
pub const SENT_NOTIFICATION_RETENTION: Duration = Duration::days(7);

/// Why the store failed, with the one decision the caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateErrorKind {
    /// `CMKGUARD_STATE` is not usable (bad syntax, missing credential): fix the configuration.
    Config,
    /// The store is unreachable, busy or throttled: fail the invocation (non-2xx) so that the
    /// event is redelivered; a later attempt may succeed.
    Transient,
    /// The store answered but refused (no permission, missing container, data from a newer
    /// version): repeating will not help until someone acts.
    Permanent,
}

/// A failed state operation. The message never holds a SAS token or any other secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store: {message}")]
pub struct StateError {
    pub kind: StateErrorKind,
    pub message: String,
}

impl StateError {
    pub(crate) fn new(kind: StateErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when a later attempt may succeed, so the invocation should fail and be retried.
    pub fn is_transient(&self) -> bool {
        self.kind == StateErrorKind::Transient
    }
}

/// Shorthand for state results.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Which finding a record is about: one rule's verdict on one resource of one workspace.
///
/// Serialised and stored as written. Compared, ordered and hashed the way Azure compares
/// them: ARM ids (the workspace, and the resource when it is one) ignoring ASCII case, the
/// rule id exactly. Every comparison of finding identities goes through this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingKey {
    pub workspace: String,
    pub rule: String,
    pub resource: String,
}

impl FindingKey {
    /// The key of `finding`.
    pub fn of(finding: &crate::outcome::Finding) -> Self {
        Self {
            workspace: finding.workspace.clone(),
            rule: finding.rule.as_str().to_owned(),
            resource: finding.resource.clone(),
        }
    }

    /// Whether `finding` is the finding this key names.
    pub fn names(&self, finding: &crate::outcome::Finding) -> bool {
        self.rule == finding.rule.as_str()
            && self.workspace.eq_ignore_ascii_case(&finding.workspace)
            && self.resource.eq_ignore_ascii_case(&finding.resource)
    }

    /// The parts in the order keys sort by, ids folded to lower case byte by byte.
    fn folded(&self) -> impl Iterator<Item = u8> + '_ {
        fn fold(text: &str) -> impl Iterator<Item = u8> + '_ {
            text.bytes().map(|b| b.to_ascii_lowercase())
        }
        // 0 cannot occur in any of the parts: it separates them.
        fold(&self.workspace)
            .chain([0])
            .chain(self.rule.bytes())
            .chain([0])
            .chain(fold(&self.resource))
    }
}

impl PartialEq for FindingKey {
    fn eq(&self, other: &Self) -> bool {
        self.rule == other.rule
            && self.workspace.eq_ignore_ascii_case(&other.workspace)
            && self.resource.eq_ignore_ascii_case(&other.resource)
    }
}

impl Eq for FindingKey {}

impl std::hash::Hash for FindingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for byte in self.folded() {
            state.write_u8(byte);
        }
    }
}

impl PartialOrd for FindingKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FindingKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.folded().cmp(other.folded())
    }
}

/// What was last decided about a finding; the planner compares it with the new verdict to
/// notify only on a change of state (or a due reminder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub state: FindingState,
    pub severity: Severity,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// When a notification about this finding was last sent; `None` before the first one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_notified: Option<OffsetDateTime>,
    /// The rule's `observed` text at the last write.
    pub observed: String,
}

/// An opaque token naming one stored version of a record: a row version in SQLite, an ETag in
/// Blob storage. Only meaningful to the store that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub(crate) fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A record with the version it was read at, to pass back to a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Version,
}

/// The result of a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareAndSet {
    /// This write took effect; the record now has this version.
    Won(Version),
    /// Another writer changed (or created) the record first; nothing was written. Of two
    /// instances making the same transition exactly one wins, and only the winner acts on it.
    Lost,
}

/// One remediation attempt, counted against the per-resource budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationAttempt {
    pub resource: String,
    pub rule: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub result: ActionResult,
}

/// One decision, kept for people and tools; never read back on the hot path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub record: serde_json::Value,
}

/// A notification to deliver: the channel it goes to and what to send, opaque to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Chosen by the caller and unique per notification; enqueueing the same id twice keeps
    /// one item, so a retried invocation does not send twice. Derive it from what the
    /// notification is about (finding key and transition), not from a random number.
    pub id: String,
    /// `teams`, `email`, `webhook`, …
    pub channel: String,
    pub payload: serde_json::Value,
}

/// A queued notification and its delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub notification: OutboxMessage,
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    /// When the item is next handed out by [`StateStore::claim_due_notifications`].
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// How many times the item was handed out for sending, this time included.
    pub attempts: u32,
    /// Why the last attempt failed, as given to [`StateStore::reschedule_notification`].
    pub last_error: Option<String>,
}

/// What [`StateStore::begin_event`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStart {
    /// The event id was claimed before: a duplicate.
    Handled,
    /// Another invocation holds the event's lease right now.
    Busy,
    /// This owner holds the lease now.
    Leased,
}

/// The remediation-claim row an event's lease is kept in: (`event/<id>`, `intake`).
pub fn event_lease(event_id: &str) -> String {
    format!("event/{event_id}")
}

/// The rule name of event leases.
pub const EVENT_LEASE_RULE: &str = "intake";

/// The state store every instance shares. Every method is safe to call concurrently from many
/// tasks and many processes sharing one store; the guarantees hold across all of them.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Claims an event id: `true` exactly once per id, however many callers race; `false`
    /// means the event was already handled (disposition `duplicate`). Claims are kept at
    /// least [`EVENT_CLAIM_RETENTION`].
    async fn claim_event(&self, event_id: &str, now: OffsetDateTime) -> Result<bool>;

    /// Whether an event id was already claimed, without claiming it: the cheap first check
    /// for a redelivered event.
    async fn event_claimed(&self, event_id: &str) -> Result<bool>;

    /// The stored record of a finding and its version, or `None` if it was never written.
    async fn finding(&self, key: &FindingKey) -> Result<Option<Versioned<FindingRecord>>>;

    /// Every stored finding of a workspace (for reminders and for findings that disappeared).
    async fn workspace_findings(
        &self,
        workspace: &str,
    ) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>>;

    /// Every open finding of every workspace, ordered by workspace, rule and resource: the
    /// sweep re-checks the workspaces they belong to, so that the findings of a workspace that
    /// was deleted (and no longer listed) are closed too.
    async fn open_findings(&self) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>>;

    /// Writes a finding if it is still at `expected` (`None`: only if it does not exist yet).
    async fn put_finding(
        &self,
        key: &FindingKey,
        record: &FindingRecord,
        expected: Option<&Version>,
    ) -> Result<CompareAndSet>;

    /// Records a remediation attempt.
    async fn record_attempt(&self, attempt: &RemediationAttempt) -> Result<()>;

    /// How many attempts on `resource` (any rule) were recorded at or after `since`; the caller
    /// enforces the budget.
    async fn count_attempts(&self, resource: &str, since: OffsetDateTime) -> Result<u32>;

    /// How many attempts on `resource` with `rule` were recorded at or after `since`: the loop
    /// guard asks whether cmk-guard itself recently changed exactly this (resource, rule), so
    /// that its own write coming back as an event suppresses that and nothing else.
    async fn count_rule_attempts(
        &self,
        resource: &str,
        rule: &str,
        since: OffsetDateTime,
    ) -> Result<u32>;

    /// Marks a remediation of (`resource`, `rule`) as in progress by `owner` until
    /// `now + lease`. `true` if this owner holds it now: it was free, the previous holder's
    /// lease ran out, or this owner already held it (the lease is extended). A process killed
    /// mid-remediation leaves its claim behind, so a restarted one does not act again until
    /// the lease expires.
    async fn claim_remediation(
        &self,
        resource: &str,
        rule: &str,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<bool>;

    /// Ends `owner`'s claim on (`resource`, `rule`); a claim held by another owner is left.
    async fn release_remediation(&self, resource: &str, rule: &str, owner: &str) -> Result<()>;

    /// Starts handling an event, in one round trip where the backend can: answers
    /// [`EventStart::Handled`] when its id was already claimed, [`EventStart::Busy`] when
    /// another invocation holds the event's lease, else takes the lease for `owner` until
    /// `now + lease` ([`EventStart::Leased`]).
    async fn begin_event(
        &self,
        event_id: &str,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<EventStart> {
        if self.event_claimed(event_id).await? {
            return Ok(EventStart::Handled);
        }
        let taken = self
            .claim_remediation(&event_lease(event_id), EVENT_LEASE_RULE, owner, now, lease)
            .await?;
        Ok(if taken {
            EventStart::Leased
        } else {
            EventStart::Busy
        })
    }

    /// Ends handling an event [`begin_event`](StateStore::begin_event) leased: appends its
    /// `audit` record (JSON text: the event's record is written straight from the Outcome, see
    /// [`crate::act::audit_record`]), claims its id when it `finished` (a redelivery is then a
    /// duplicate), and releases the lease; in one write where the backend can.
    async fn end_event(
        &self,
        event_id: &str,
        owner: &str,
        finished: bool,
        now: OffsetDateTime,
        audit: Option<&str>,
    ) -> Result<()> {
        if let Some(record) = audit {
            self.append_audit(now, record).await?;
        }
        let claimed = if finished {
            self.claim_event(event_id, now).await.map(|_| ())
        } else {
            Ok(())
        };
        let released = self
            .release_remediation(&event_lease(event_id), EVENT_LEASE_RULE, owner)
            .await;
        claimed.and(released)
    }

    /// Appends one audit record, given as its JSON text (what [`crate::act::audit_record`]
    /// writes, and what `end_event` takes).
    async fn append_audit(&self, at: OffsetDateTime, record: &str) -> Result<()>;

    /// Audit records at or after `since`, oldest first (tests and the CLI; not the hot path).
    async fn audit_since(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>>;

    /// Queues a notification, first due at `next_attempt_at`. A caller that sends at once
    /// passes `now` plus a lease, so that no other instance sends it meanwhile. `false` if an
    /// item with this id is already queued or was sent within [`SENT_NOTIFICATION_RETENTION`].
    async fn enqueue_notification(
        &self,
        notification: &OutboxMessage,
        now: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<bool>;

    /// Hands out up to `limit` unsent items due at `now`, oldest enqueued first, and moves each one's
    /// next attempt to `now + lease` so that no other instance takes it meanwhile. An item
    /// whose sender dies is handed out again when the lease runs out: nothing is lost.
    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxItem>>;

    /// Marks an item sent; it is never handed out again. Unknown ids are ignored.
    async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<()>;

    /// Records a failed send and when to try again. Unknown or sent ids are ignored.
    async fn reschedule_notification(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()>;

    /// Where the sweep stopped, as it last saved it.
    async fn sweep_cursor(&self) -> Result<Option<String>>;

    /// Saves (or with `None` clears) the sweep cursor. The Functions host runs one timer
    /// invocation at a time, so the last write wins.
    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<()>;

    /// The names of the resource groups Azure ML provisioned for workspaces, as learned from
    /// evaluations (lower-case, sorted), so that a cold instance's intake knows them.
    async fn managed_resource_groups(&self) -> Result<Vec<String>>;

    /// Adds names to that set. A union: what other instances added stays.
    async fn add_managed_resource_groups(&self, names: &[String]) -> Result<()>;

    /// Removes what has outlived its retention: event claims older than
    /// [`EVENT_CLAIM_RETENTION`], attempts older than [`ATTEMPT_RETENTION`], notifications sent
    /// more than [`SENT_NOTIFICATION_RETENTION`] ago and expired remediation claims. Returns
    /// how many entries were removed. Findings, queued notifications and the audit trail stay.
    async fn prune(&self, now: OffsetDateTime) -> Result<usize>;
}

/// Opens the store named by `spec` (the parsed `CMKGUARD_STATE`). The Blob backend sends its
/// requests through `transport`, the shared one of [`crate::azure::Azure`], so
/// `CMKGUARD_CA_BUNDLE` and `CMKGUARD_CONNECT_TO` apply, and authenticates with `credential`
/// unless the URL carries a SAS. SQLite uses neither.
pub async fn open(
    spec: &StateSpec,
    transport: &Transport,
    credential: &Arc<dyn TokenCredential>,
) -> Result<Arc<dyn StateStore>> {
    match spec {
        StateSpec::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
        StateSpec::Blob(location) => Ok(Arc::new(blob::BlobStore::open(
            location.clone(),
            transport.clone(),
            credential.clone(),
        )?)),
    }
}

/// The stored set of managed resource group names (a JSON array) with `names` added, as both
/// backends keep it; what is not a list of names is replaced. Only resource group names are
/// kept, at most [`crate::ids::MAX_MANAGED_GROUPS`]: the stored ones first, then new ones in
/// order while there is room.
pub(crate) fn merged_group_names(stored: Option<&str>, names: &[String]) -> String {
    let mut set: std::collections::BTreeSet<String> = group_names(stored).into_iter().collect();
    for name in names {
        let name = name.trim();
        if set.len() >= crate::ids::MAX_MANAGED_GROUPS {
            break;
        }
        if crate::ids::is_resource_group_name(name) {
            set.insert(name.to_ascii_lowercase());
        }
    }
    serde_json::to_string(&set).unwrap_or_else(|_| "[]".to_owned())
}

/// The names in a stored set (see [`merged_group_names`]): those that are resource group
/// names, at most [`crate::ids::MAX_MANAGED_GROUPS`].
pub(crate) fn group_names(stored: Option<&str>) -> Vec<String> {
    stored
        .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| crate::ids::is_resource_group_name(name))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(crate::ids::MAX_MANAGED_GROUPS)
        .collect()
}

/// Lower-case hex SHA-256 of `parts` joined by newlines: a fixed-length, path-safe name for
/// keys that are long, user-controlled or contain `/`.
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update(b"\n");
        }
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_keys_compare_ids_ignoring_case_and_rules_exactly() {
        use std::collections::HashSet;
        let key = |workspace: &str, rule: &str, resource: &str| FindingKey {
            workspace: workspace.to_owned(),
            rule: rule.to_owned(),
            resource: resource.to_owned(),
        };
        let a = key("/subscriptions/s/x/WS1", "key.expiry", "/Vaults/KV");
        let same = key("/SUBSCRIPTIONS/S/X/ws1", "key.expiry", "/vaults/kv");
        assert_eq!(a, same);
        assert_eq!(a.cmp(&same), std::cmp::Ordering::Equal);
        assert_eq!(HashSet::from([a.clone(), same.clone()]).len(), 1);
        assert_eq!(
            serde_json::to_value(&same).unwrap()["workspace"],
            "/SUBSCRIPTIONS/S/X/ws1",
            "serialised as written"
        );
        assert_ne!(
            a,
            key("/subscriptions/s/x/WS1", "key.expiry-set", "/Vaults/KV")
        );
        assert_ne!(
            a,
            key("/subscriptions/s/x/WS1x", "key.expiry", "/Vaults/KV")
        );
        assert!(key("a", "r", "b") < key("A", "r", "c"));
    }

    #[test]
    fn digests_are_stable_hex_and_separate_parts() {
        let one = digest(&["a", "bc"]);
        assert_eq!(one.len(), 64);
        assert!(
            one.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(one, digest(&["a", "bc"]));
        assert_ne!(one, digest(&["ab", "c"]));
        assert_eq!(
            digest(&["abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_transient_errors_ask_for_a_retry() {
        assert!(StateError::new(StateErrorKind::Transient, "busy").is_transient());
        assert!(!StateError::new(StateErrorKind::Permanent, "403").is_transient());
        assert_eq!(
            StateError::new(StateErrorKind::Config, "bad").to_string(),
            "state store: bad"
        );
    }

    #[test]
    fn the_stored_set_of_group_names_keeps_only_names_and_is_bounded() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let merged = merged_group_names(
            Some(r#"["Rg-A", "a/b", "ends."]"#),
            &names(&["RG-B", "", &"x".repeat(91), "rg-a"]),
        );
        assert_eq!(group_names(Some(&merged)), ["rg-a", "rg-b"]);
        assert!(group_names(Some("{\"not\": \"a list\"}")).is_empty());

        let full: Vec<String> = (0..crate::ids::MAX_MANAGED_GROUPS + 3)
            .map(|i| format!("rg-{i:04}"))
            .collect();
        let merged = merged_group_names(None, &full);
        assert_eq!(
            group_names(Some(&merged)).len(),
            crate::ids::MAX_MANAGED_GROUPS
        );
        let merged = merged_group_names(Some(&merged), &names(&["rg-late"]));
        assert!(!group_names(Some(&merged)).contains(&"rg-late".to_owned()));
        let oversized = serde_json::to_string(&full).unwrap();
        assert_eq!(
            group_names(Some(&oversized)).len(),
            crate::ids::MAX_MANAGED_GROUPS
        );
    }
}
