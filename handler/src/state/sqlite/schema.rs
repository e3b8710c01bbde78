//! The file on disk: the schema, opening a connection, migrating, and the checkpoints that
//! keep the write-ahead log short.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE event_claims (
    event_id   TEXT PRIMARY KEY,
    claimed_at INTEGER NOT NULL
);
CREATE INDEX event_claims_claimed_at ON event_claims (claimed_at);
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
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
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
);
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
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

/// How often the write-ahead log is copied back into the database file.
pub(super) const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    Ok(connection)
}

/// Creates the schema, or checks that the file's schema is one this build understands. Runs in
/// an IMMEDIATE transaction so that two processes starting together do not both create it.
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
        Some(version) => {
            return Err(StateError::new(
                StateErrorKind::Permanent,
                format!(
                    "schema version {version} is not the one this build uses ({SCHEMA_VERSION}); \
                     it was written by another cmk-guard version"
                ),
            ));
        }
    }
    transaction.commit()?;
    Ok(())
}
