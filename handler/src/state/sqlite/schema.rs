//! The file on disk: the schema, opening a connection, migrating, and the checkpoints that
//! keep the write-ahead log short.

use super::*;

/// The schema of a new file. An event costs few pages because each page a write touches is a
/// frame of the write-ahead log: the event's lease and its claim share one row of a
/// `WITHOUT ROWID` table, and the tables an event appends to have no index beyond their key.
pub(super) const SCHEMA: &str = "
CREATE TABLE event_claims (
    event_id         TEXT PRIMARY KEY,
    claimed_at       INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER
) WITHOUT ROWID;
CREATE TABLE findings (
    workspace     TEXT NOT NULL,
    rule          TEXT NOT NULL,
    resource      TEXT NOT NULL,
    version       INTEGER NOT NULL,
    state         TEXT NOT NULL,
    severity      TEXT NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    last_notified INTEGER,
    observed      TEXT NOT NULL,
    PRIMARY KEY (workspace, rule, resource)
);
CREATE TABLE remediation_attempts (
    id       INTEGER PRIMARY KEY,
    resource TEXT NOT NULL,
    rule     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    result   TEXT NOT NULL
);
CREATE INDEX remediation_attempts_resource_at ON remediation_attempts (resource, at);
CREATE TABLE remediation_claims (
    resource   TEXT NOT NULL,
    rule       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (resource, rule)
) WITHOUT ROWID;
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    enqueued_at     INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (sent_at, next_attempt_at, enqueued_at);
CREATE TABLE cursors (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// From schema 1 to 2, keeping every row and id. Schema 1 kept an event's lease as a
/// remediation claim (`event/{id}`, rule `intake`) and its claim in a rowid table with two
/// indexes, appended audit records and attempts with `AUTOINCREMENT` (one more page per append)
/// and kept an index on audit times that only the history, which reads every record, used.
/// `ALTER TABLE` cannot change any of that, so the tables are copied; ids stay monotonic
/// because a new id is one more than the largest.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE event_claims_2 (
    event_id         TEXT PRIMARY KEY,
    claimed_at       INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER
) WITHOUT ROWID;
INSERT INTO event_claims_2 (event_id, claimed_at) SELECT event_id, claimed_at FROM event_claims;
INSERT INTO event_claims_2 (event_id, lease_owner, lease_expires_at)
    SELECT substr(resource, 7), owner, expires_at FROM remediation_claims
    WHERE rule = 'intake' AND substr(resource, 1, 6) = 'event/'
    ON CONFLICT (event_id) DO UPDATE
        SET lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at;
DROP TABLE event_claims;
ALTER TABLE event_claims_2 RENAME TO event_claims;

CREATE TABLE remediation_claims_2 (
    resource   TEXT NOT NULL,
    rule       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (resource, rule)
) WITHOUT ROWID;
INSERT INTO remediation_claims_2 (resource, rule, owner, expires_at)
    SELECT resource, rule, owner, expires_at FROM remediation_claims
    WHERE NOT (rule = 'intake' AND substr(resource, 1, 6) = 'event/');
DROP TABLE remediation_claims;
ALTER TABLE remediation_claims_2 RENAME TO remediation_claims;

CREATE TABLE audit_2 (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    record TEXT NOT NULL
);
INSERT INTO audit_2 (id, at, record) SELECT id, at, record FROM audit;
DROP TABLE audit;
ALTER TABLE audit_2 RENAME TO audit;

CREATE TABLE remediation_attempts_2 (
    id       INTEGER PRIMARY KEY,
    resource TEXT NOT NULL,
    rule     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    result   TEXT NOT NULL
);
INSERT INTO remediation_attempts_2 (id, resource, rule, at, result)
    SELECT id, resource, rule, at, result FROM remediation_attempts;
DROP TABLE remediation_attempts;
ALTER TABLE remediation_attempts_2 RENAME TO remediation_attempts;
CREATE INDEX remediation_attempts_resource_at ON remediation_attempts (resource, at);
";

/// How often the write-ahead log is copied back into the database file.
pub(super) const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens a connection set up as the store uses it. It is left with no busy timeout: a call
/// tried on the caller's thread must not wait for another process's lock ([`worker`] sets
/// the timeout around the calls it runs).
pub(super) fn open_connection(path: &Path) -> Result<Connection> {
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Every statement of the store stays prepared: preparing took a fifth of a relevant
    // event's CPU (BENCHMARKS.md).
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::new(
            StateErrorKind::Permanent,
            format!(
                "cannot switch to WAL (journal mode is {mode}); is the file on a network share?"
            ),
        ));
    }
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    migrate(&mut connection)?;
    connection.busy_timeout(std::time::Duration::ZERO)?;
    Ok(connection)
}

/// Creates the schema, brings a file of an older schema up to this one, or refuses a file of
/// a newer one. Runs in an IMMEDIATE transaction so that two processes starting together do
/// not both create or migrate it.
pub(super) fn migrate(connection: &mut Connection) -> Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        [],
    )?;
    let found: Option<i64> =
        transaction.query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })?;
    match found {
        None => {
            transaction.execute_batch(SCHEMA)?;
            transaction.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(version) if version == SCHEMA_VERSION => {}
        Some(1) => {
            transaction.execute_batch(MIGRATE_1_TO_2)?;
            transaction.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])?;
        }
        Some(version) => {
            return Err(StateError::new(
                StateErrorKind::Permanent,
                format!(
                    "schema version {version} is not one this build uses ({SCHEMA_VERSION}); \
                     it was written by another cmk-guard version"
                ),
            ));
        }
    }
    transaction.commit()?;
    Ok(())
}
