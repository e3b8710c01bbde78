//! The embedded backend: one SQLite file in WAL mode. Every "who acts" decision is a single
//! conditional statement (`INSERT … ON CONFLICT DO NOTHING`, `UPDATE … WHERE version = ?`) or
//! an `IMMEDIATE` transaction, so processes sharing the file get the same exactly-once answers
//! as tasks sharing one store. A call runs on its caller's thread when it can without waiting,
//! else on a thread of the connection's own ([`worker`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::{Duration, OffsetDateTime};

use super::{
    ATTEMPT_RETENTION, AuditEntry, CompareAndSet, EVENT_CLAIM_RETENTION, EventStart, FindingKey,
    FindingRecord, OutboxItem, OutboxMessage, RemediationAttempt, Result,
    SENT_NOTIFICATION_RETENTION, StateError, StateErrorKind, StateStore, Version, Versioned,
};
use crate::outcome::FindingState;

use rows::*;
use schema::*;
use statements::*;

mod rows;
mod schema;
mod statements;
#[cfg(test)]
mod tests;
mod worker;

/// The schema this build reads and writes; bumped with each migration.
const SCHEMA_VERSION: i64 = 2;
/// How long a statement waits for another process's write lock before giving up (transient).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The pause before opening again after SQLite answered busy at once.
const OPEN_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The SQLite store. Cheap to share; calls from one process are serialised on one connection,
/// calls from other processes wait on SQLite's lock for up to [`BUSY_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    worker: worker::Worker,
}

impl SqliteStore {
    /// Opens (creating if needed) the file at `path`, switches it to WAL and creates or checks
    /// the schema.
    pub async fn open(path: &Path) -> Result<Self> {
        let shown = path.to_path_buf();
        // Processes opening a new file together race to switch it to WAL and create the
        // schema; SQLite answers some of those races "database is locked" at once instead of
        // waiting, so a busy open is tried again for as long as a busy statement would wait.
        let started = std::time::Instant::now();
        let connection = loop {
            let path = shown.clone();
            let opened = tokio::task::spawn_blocking(move || open_connection(&path))
                .await
                .map_err(|e| {
                    StateError::new(
                        StateErrorKind::Permanent,
                        format!("opening SQLite failed: {e}"),
                    )
                })?;
            match opened {
                Err(error) if error.is_transient() && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(OPEN_RETRY).await;
                }
                opened => {
                    break opened.map_err(|e| {
                        StateError::new(e.kind, format!("{}: {}", shown.display(), e.message))
                    })?;
                }
            }
        };
        Ok(Self {
            worker: worker::Worker::start(connection)?,
            path: shown,
        })
    }

    /// Runs `work` on the connection (see [`worker`]: it may run twice, so it must be one
    /// statement or one transaction); a failure names the file.
    async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.worker
            .run(work)
            .await
            .map_err(|e| StateError::new(e.kind, format!("{}: {}", self.path.display(), e.message)))
    }
}

/// A JSON value as compact text, written straight into a buffer: `Value`'s `Display` (its
/// `to_string`) goes through the formatting machinery and cost four times as much per record.
fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// More than the store's distinct statements.
const STATEMENT_CACHE_CAPACITY: usize = 48;

/// Runs `body` in a `BEGIN IMMEDIATE` transaction. Unlike rusqlite's `Transaction`, which
/// parses `BEGIN` and `COMMIT` anew each time, the statements stay prepared. A body that fails
/// or panics is rolled back.
fn immediate<T>(connection: &Connection, body: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    /// Rolls back whatever the transaction has not committed when it goes out of scope.
    struct Open<'c>(&'c Connection);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            if !self.0.is_autocommit() {
                let _ = self.0.execute_batch("ROLLBACK");
            }
        }
    }
    connection.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let open = Open(connection);
    let value = body(open.0)?;
    open.0.prepare_cached("COMMIT")?.execute([])?;
    Ok(value)
}

impl From<rusqlite::Error> for StateError {
    fn from(error: rusqlite::Error) -> Self {
        let transient = matches!(
            error.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::OutOfMemory
            )
        );
        let kind = if transient {
            StateErrorKind::Transient
        } else {
            StateErrorKind::Permanent
        };
        StateError::new(kind, format!("SQLite: {error}"))
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn claim_event(&self, event_id: &str, now: OffsetDateTime) -> Result<bool> {
        let event_id = event_id.to_owned();
        let claimed_at = to_nanos(now)?;
        self.run(move |connection| {
            let inserted = connection
                .prepare_cached(CLAIM_EVENT)?
                .execute(params![event_id, claimed_at])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn event_claimed(&self, event_id: &str) -> Result<bool> {
        let event_id = event_id.to_owned();
        self.run(move |connection| {
            let count: i64 = connection
                .prepare_cached(EVENT_CLAIMED)?
                .query_row(params![event_id], |row| row.get(0))?;
            Ok(count > 0)
        })
        .await
    }

    async fn begin_event(
        &self,
        event_id: &str,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<EventStart> {
        let event_id = event_id.to_owned();
        let owner = owner.to_owned();
        let now_nanos = to_nanos(now)?;
        let expires_at = to_nanos(later(now, lease)?)?;
        self.run(move |connection| {
            let leased = connection
                .prepare_cached(LEASE_EVENT)?
                .execute(params![event_id, owner, expires_at, now_nanos])?;
            if leased == 1 {
                return Ok(EventStart::Leased);
            }
            // Not leased: claimed, or another owner's lease runs. Read in a statement of its
            // own, the row may have changed since; claims stay, and an answer of busy only has
            // the event delivered again later.
            let claimed: i64 = connection
                .prepare_cached(EVENT_CLAIMED)?
                .query_row(params![event_id], |row| row.get(0))?;
            Ok(if claimed > 0 {
                EventStart::Handled
            } else {
                EventStart::Busy
            })
        })
        .await
    }

    async fn end_event(
        &self,
        event_id: &str,
        owner: &str,
        finished: bool,
        now: OffsetDateTime,
        audit: Option<&str>,
    ) -> Result<()> {
        let event_id = event_id.to_owned();
        let owner = owner.to_owned();
        let claimed_at = to_nanos(now)?;
        let audit = audit.map(str::to_owned);
        self.run(move |connection| {
            immediate(connection, |connection| {
                if let Some(record) = &audit {
                    connection
                        .prepare_cached(APPEND_AUDIT)?
                        .execute(params![claimed_at, record])?;
                }
                if finished {
                    connection
                        .prepare_cached(FINISH_EVENT)?
                        .execute(params![event_id, claimed_at, owner])?;
                } else {
                    connection
                        .prepare_cached(RELEASE_EVENT)?
                        .execute(params![event_id, owner])?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn finding(&self, key: &FindingKey) -> Result<Option<Versioned<FindingRecord>>> {
        let key = key.clone();
        self.run(move |connection| {
            let row = connection
                .prepare_cached(FINDING)?
                .query_row(
                    params![key.workspace, key.rule, key.resource],
                    read_finding_row,
                )
                .optional()?;
            row.map(|row| finding_from_row(row).map(|(_, versioned)| versioned))
                .transpose()
        })
        .await
    }

    async fn workspace_findings(
        &self,
        workspace: &str,
    ) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>> {
        let workspace = workspace.to_owned();
        self.run(move |connection| {
            let mut statement = connection.prepare_cached(WORKSPACE_FINDINGS)?;
            let rows = statement
                .query_map([&workspace], read_finding_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(finding_from_row).collect()
        })
        .await
    }

    async fn open_findings(&self) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>> {
        let open = enum_text(&FindingState::Open)?;
        self.run(move |connection| {
            let mut statement = connection.prepare_cached(FINDINGS_IN_STATE)?;
            let rows = statement
                .query_map([&open], read_finding_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(finding_from_row).collect()
        })
        .await
    }

    async fn put_finding(
        &self,
        key: &FindingKey,
        record: &FindingRecord,
        expected: Option<&Version>,
    ) -> Result<CompareAndSet> {
        let key = key.clone();
        let columns = FindingColumns::new(record)?;
        let expected = expected.map(parse_version).transpose()?;
        self.run(move |connection| {
            let c = &columns;
            let (changed, new_version) = match expected {
                None => {
                    let changed = connection.prepare_cached("INSERT INTO findings (workspace, rule, resource, version, state, severity,
                             first_seen, last_seen, last_notified, observed)
                         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (workspace, rule, resource) DO NOTHING")?
                .execute(params![
                            key.workspace,
                            key.rule,
                            key.resource,
                            c.state,
                            c.severity,
                            c.first_seen,
                            c.last_seen,
                            c.last_notified,
                            c.observed
                        ],
                    )?;
                    (changed, 1)
                }
                Some(version) => {
                    let changed = connection.prepare_cached("UPDATE findings SET version = version + 1, state = ?5, severity = ?6,
                             first_seen = ?7, last_seen = ?8, last_notified = ?9, observed = ?10
                         WHERE workspace = ?1 AND rule = ?2 AND resource = ?3 AND version = ?4")?
                .execute(params![
                            key.workspace,
                            key.rule,
                            key.resource,
                            version,
                            c.state,
                            c.severity,
                            c.first_seen,
                            c.last_seen,
                            c.last_notified,
                            c.observed
                        ],
                    )?;
                    (changed, version + 1)
                }
            };
            Ok(if changed == 1 {
                CompareAndSet::Won(Version::new(new_version.to_string()))
            } else {
                CompareAndSet::Lost
            })
        })
        .await
    }

    async fn record_attempt(&self, attempt: &RemediationAttempt) -> Result<()> {
        let resource = attempt.resource.clone();
        let rule = attempt.rule.clone();
        let at = to_nanos(attempt.at)?;
        let result = enum_text(&attempt.result)?;
        self.run(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO remediation_attempts (resource, rule, at, result)
                 VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![resource, rule, at, result])?;
            Ok(())
        })
        .await
    }

    async fn count_attempts(&self, resource: &str, since: OffsetDateTime) -> Result<u32> {
        let resource = resource.to_owned();
        let since = to_nanos(since)?;
        self.run(move |connection| {
            let count: i64 = connection
                .prepare_cached(
                    "SELECT COUNT(*) FROM remediation_attempts WHERE resource = ?1 AND at >= ?2",
                )?
                .query_row(params![resource, since], |row| row.get(0))?;
            u32::try_from(count).map_err(|e| corrupt(e.to_string()))
        })
        .await
    }

    async fn count_rule_attempts(
        &self,
        resource: &str,
        rule: &str,
        since: OffsetDateTime,
    ) -> Result<u32> {
        let resource = resource.to_owned();
        let rule = rule.to_owned();
        let since = to_nanos(since)?;
        self.run(move |connection| {
            let count: i64 = connection
                .prepare_cached(
                    "SELECT COUNT(*) FROM remediation_attempts
                     WHERE resource = ?1 AND rule = ?2 AND at >= ?3",
                )?
                .query_row(params![resource, rule, since], |row| row.get(0))?;
            u32::try_from(count).map_err(|e| corrupt(e.to_string()))
        })
        .await
    }

    async fn claim_remediation(
        &self,
        resource: &str,
        rule: &str,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<bool> {
        let resource = resource.to_owned();
        let rule = rule.to_owned();
        let owner = owner.to_owned();
        let now_nanos = to_nanos(now)?;
        let expires_at = to_nanos(later(now, lease)?)?;
        self.run(move |connection| {
            let changed = connection
                .prepare_cached(CLAIM_REMEDIATION)?
                .execute(params![resource, rule, owner, expires_at, now_nanos])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_remediation(&self, resource: &str, rule: &str, owner: &str) -> Result<()> {
        let resource = resource.to_owned();
        let rule = rule.to_owned();
        let owner = owner.to_owned();
        self.run(move |connection| {
            connection
                .prepare_cached(RELEASE_REMEDIATION)?
                .execute(params![resource, rule, owner])?;
            Ok(())
        })
        .await
    }

    async fn append_audit(&self, at: OffsetDateTime, record: &str) -> Result<()> {
        let at = to_nanos(at)?;
        let record = record.to_owned();
        self.run(move |connection| {
            connection
                .prepare_cached(APPEND_AUDIT)?
                .execute(params![at, record])?;
            Ok(())
        })
        .await
    }

    async fn audit_since(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>> {
        let since = to_nanos(since)?;
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT at, record FROM audit WHERE at >= ?1 ORDER BY at, id")?;
            let rows = statement
                .query_map([since], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(at, record)| {
                    Ok(AuditEntry {
                        at: from_nanos(at)?,
                        record: serde_json::from_str(&record)
                            .map_err(|e| corrupt(e.to_string()))?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn enqueue_notification(
        &self,
        notification: &OutboxMessage,
        now: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<bool> {
        let notification = notification.clone();
        let payload = json_text(&notification.payload);
        let enqueued_at = to_nanos(now)?;
        let next_attempt_at = to_nanos(next_attempt_at)?;
        self.run(move |connection| {
            let inserted = connection
                .prepare_cached(
                    "INSERT INTO outbox (id, channel, payload, enqueued_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    notification.id,
                    notification.channel,
                    payload,
                    enqueued_at,
                    next_attempt_at
                ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let now_nanos = to_nanos(now)?;
        let until = to_nanos(later(now, lease)?)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |connection| {
            let rows = immediate(connection, |transaction| {
                let mut statement = transaction.prepare_cached(
                    "UPDATE outbox SET next_attempt_at = ?2, attempts = attempts + 1
                     WHERE id IN (SELECT id FROM outbox
                                  WHERE sent_at IS NULL AND next_attempt_at <= ?1
                                  ORDER BY enqueued_at, id LIMIT ?3)
                     RETURNING id, channel, payload, enqueued_at, next_attempt_at, attempts,
                               last_error",
                )?;
                statement
                    .query_map(params![now_nanos, until, limit], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<OutboxRow>>>()
                    .map_err(StateError::from)
            })?;
            let mut items = rows
                .into_iter()
                .map(outbox_item)
                .collect::<Result<Vec<_>>>()?;
            items.sort_by(|a, b| {
                (a.enqueued_at, &a.notification.id).cmp(&(b.enqueued_at, &b.notification.id))
            });
            Ok(items)
        })
        .await
    }

    async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<()> {
        let id = id.to_owned();
        let sent_at = to_nanos(now)?;
        self.run(move |connection| {
            connection
                .prepare_cached("UPDATE outbox SET sent_at = ?2 WHERE id = ?1 AND sent_at IS NULL")?
                .execute(params![id, sent_at])?;
            Ok(())
        })
        .await
    }

    async fn reschedule_notification(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        let id = id.to_owned();
        let next_attempt_at = to_nanos(next_attempt_at)?;
        let error = error.to_owned();
        self.run(move |connection| {
            connection
                .prepare_cached(
                    "UPDATE outbox SET next_attempt_at = ?2, last_error = ?3
                 WHERE id = ?1 AND sent_at IS NULL",
                )?
                .execute(params![id, next_attempt_at, error])?;
            Ok(())
        })
        .await
    }

    async fn sweep_cursor(&self) -> Result<Option<String>> {
        self.run(|connection| {
            Ok(connection
                .prepare_cached("SELECT value FROM cursors WHERE name = 'sweep'")?
                .query_row([], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<()> {
        let cursor = cursor.map(str::to_owned);
        self.run(move |connection| {
            match &cursor {
                Some(value) => connection
                    .prepare_cached(
                        "INSERT INTO cursors (name, value) VALUES ('sweep', ?1)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )?
                    .execute([value])?,
                None => connection
                    .prepare_cached("DELETE FROM cursors WHERE name = 'sweep'")?
                    .execute([])?,
            };
            Ok(())
        })
        .await
    }

    async fn managed_resource_groups(&self) -> Result<Vec<String>> {
        let stored: Option<String> = self
            .run(|connection| {
                Ok(connection
                    .prepare_cached("SELECT value FROM cursors WHERE name = 'managed-groups'")?
                    .query_row([], |row| row.get(0))
                    .optional()?)
            })
            .await?;
        Ok(super::group_names(stored.as_deref()))
    }

    async fn add_managed_resource_groups(&self, names: &[String]) -> Result<()> {
        let names = names.to_vec();
        self.run(move |connection| {
            immediate(connection, |transaction| {
                let stored: Option<String> = transaction
                    .query_row(
                        "SELECT value FROM cursors WHERE name = 'managed-groups'",
                        [],
                        |row| row.get(0),
                    )
                    .optional()?;
                transaction.execute(
                    "INSERT INTO cursors (name, value) VALUES ('managed-groups', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    [super::merged_group_names(stored.as_deref(), &names)],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<usize> {
        let now_nanos = to_nanos(now)?;
        let events_before = to_nanos(earlier(now, EVENT_CLAIM_RETENTION)?)?;
        let attempts_before = to_nanos(earlier(now, ATTEMPT_RETENTION)?)?;
        let sent_before = to_nanos(earlier(now, SENT_NOTIFICATION_RETENTION)?)?;
        self.run(move |connection| {
            immediate(connection, |transaction| {
                let mut removed = transaction.execute(
                    "DELETE FROM event_claims WHERE claimed_at < ?1",
                    [events_before],
                )?;
                removed += transaction.execute(
                    "DELETE FROM remediation_attempts WHERE at < ?1",
                    [attempts_before],
                )?;
                removed += transaction.execute(
                    "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?1",
                    [sent_before],
                )?;
                removed += transaction.execute(
                    "DELETE FROM remediation_claims WHERE expires_at <= ?1",
                    [now_nanos],
                )?;
                removed += transaction.execute(
                    "DELETE FROM event_claims WHERE claimed_at IS NULL AND lease_expires_at <= ?1",
                    [now_nanos],
                )?;
                Ok(removed)
            })
        })
        .await
    }
}
