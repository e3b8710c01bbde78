use super::*;
use cmk_guard_blackbox::scratch::Scratch;

/// A database path in a scratch directory of its own, which takes the file and its `-wal`
/// and `-shm` with it when dropped.
fn temp_db(name: &str) -> (Scratch, PathBuf) {
    let scratch = Scratch::new(&format!("sqlite-{name}"));
    let path = scratch.join("state.db");
    (scratch, path)
}

#[tokio::test]
async fn creates_the_schema_once_and_reopens_it() {
    let (_scratch, path) = temp_db("schema");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let version: i64 = second
        .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(version, 1, "one version row");
    let mode: String = first
        .run(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn refuses_a_schema_from_another_version() {
    let (_scratch, path) = temp_db("future");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .run(|c| Ok(c.execute("UPDATE schema_version SET version = 99", [])?))
        .await
        .unwrap();
    let error = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(error.kind, StateErrorKind::Permanent);
    assert!(
        error.message.contains("schema version 99"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_create_the_schema_once() {
    let (_scratch, path) = temp_db("race");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let rows: i64 = store
        .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let error = SqliteStore::open(Path::new("/nonexistent/dir/state.db"))
        .await
        .unwrap_err();
    assert!(
        error.message.contains("/nonexistent/dir/state.db"),
        "{}",
        error.message
    );
}

#[test]
fn times_round_trip_through_nanoseconds() {
    let time = time::macros::datetime!(2026-11-28 13:59:01.123456789 UTC);
    assert_eq!(from_nanos(to_nanos(time).unwrap()).unwrap(), time);
    assert!(to_nanos(time::macros::datetime!(2300-01-01 0:00 UTC)).is_err());
}

#[test]
fn busy_is_transient_and_constraint_failures_are_not() {
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert!(StateError::from(busy).is_transient());
    let constraint = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        None,
    );
    assert!(!StateError::from(constraint).is_transient());
}

#[tokio::test]
async fn a_call_that_panics_fails_alone_and_the_store_goes_on() {
    let (_scratch, path) = temp_db("panic");
    let store = SqliteStore::open(&path).await.unwrap();
    let failed = store
        .run(|_| -> Result<()> { panic!("a bug in one call") })
        .await
        .unwrap_err();
    assert_eq!(failed.kind, StateErrorKind::Permanent);
    assert!(failed.message.contains("panicked"), "{}", failed.message);
    assert!(
        store
            .claim_event("e1", OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    assert!(store.event_claimed("e1").await.unwrap());
}

#[tokio::test]
async fn calls_from_many_tasks_run_one_at_a_time_in_order() {
    let (_scratch, path) = temp_db("order");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .run(|c| Ok(c.execute_batch("CREATE TABLE seen (n INTEGER NOT NULL)")?))
        .await
        .unwrap();
    let calls = (0..50)
        .map(|n| store.run(move |c| Ok(c.execute("INSERT INTO seen (n) VALUES (?1)", [n])?)));
    for inserted in futures_util::future::join_all(calls).await {
        assert_eq!(inserted.unwrap(), 1);
    }
    let order: Vec<i64> = store
        .run(|c| {
            let mut statement = c.prepare("SELECT n FROM seen ORDER BY rowid")?;
            let rows = statement.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
        .unwrap();
    assert_eq!(order, (0..50).collect::<Vec<i64>>());
}

/// The schema of version 1, as the previous release created it.
const SCHEMA_1: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
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

#[tokio::test]
async fn a_file_of_schema_1_is_migrated_with_its_claims_leases_and_records() {
    let (_scratch, path) = temp_db("migrate");
    let t0 = time::macros::datetime!(2026-11-28 12:00 UTC);
    let nanos = |minutes: i64| to_nanos(t0 + Duration::minutes(minutes)).unwrap();
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA_1).unwrap();
        old.execute(
            "INSERT INTO event_claims (event_id, claimed_at) VALUES ('done', ?1)",
            [nanos(0)],
        )
        .unwrap();
        // An invocation of the old version was handling `running` when it stopped.
        old.execute(
            "INSERT INTO remediation_claims (resource, rule, owner, expires_at)
             VALUES ('event/running', 'intake', 'old-owner', ?1),
                    ('/vaults/kv1', 'vault.purge-protection', 'fixer', ?1)",
            [nanos(5)],
        )
        .unwrap();
        // Ids 1 to 3, of which the newest was deleted: AUTOINCREMENT never reuses 3.
        for n in 1..=3 {
            old.execute(
                "INSERT INTO audit (at, record) VALUES (?1, ?2)",
                params![nanos(n), format!("{{\"n\":{n}}}")],
            )
            .unwrap();
        }
        old.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        old.execute(
            "INSERT INTO remediation_attempts (resource, rule, at, result)
             VALUES ('/vaults/kv1', 'vault.purge-protection', ?1, 'applied')",
            [nanos(0)],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&path).await.unwrap();

    let version: i64 = store
        .run(|c| Ok(c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(store.event_claimed("done").await.unwrap());
    assert!(!store.event_claimed("running").await.unwrap());
    let begin = |event: &'static str, minutes: i64| {
        let store = store.clone();
        async move {
            store
                .begin_event(
                    event,
                    "new-owner",
                    t0 + Duration::minutes(minutes),
                    Duration::minutes(5),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(begin("done", 0).await, EventStart::Handled);
    assert_eq!(
        begin("running", 1).await,
        EventStart::Busy,
        "the old lease holds"
    );
    assert_eq!(
        begin("running", 6).await,
        EventStart::Leased,
        "until it ends"
    );
    assert!(
        !store
            .claim_remediation(
                "/vaults/kv1",
                "vault.purge-protection",
                "other",
                t0,
                Duration::minutes(5)
            )
            .await
            .unwrap(),
        "a remediation claim is kept"
    );
    assert_eq!(
        store
            .count_rule_attempts("/vaults/kv1", "vault.purge-protection", t0)
            .await
            .unwrap(),
        1
    );
    store
        .append_audit(
            t0 + Duration::minutes(9),
            &serde_json::json!({"n": 4}).to_string(),
        )
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .run(|c| {
            let mut statement = c.prepare("SELECT id FROM audit ORDER BY id")?;
            let rows = statement.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3], "old ids are kept and a new one is larger");
    let records: Vec<_> = store
        .audit_since(t0)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.record)
        .collect();
    assert_eq!(
        records,
        [
            serde_json::json!({"n": 1}),
            serde_json::json!({"n": 2}),
            serde_json::json!({"n": 4})
        ]
    );
    drop(store);
    SqliteStore::open(&path)
        .await
        .expect("a migrated file opens again");
}

#[tokio::test]
async fn a_call_runs_on_its_callers_thread_when_the_connection_is_free() {
    let (_scratch, path) = temp_db("inline");
    let store = SqliteStore::open(&path).await.unwrap();
    let (ran_on, waits_ms): (_, i64) = store
        .run(|c| {
            let waits = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
            Ok((std::thread::current().id(), waits))
        })
        .await
        .unwrap();
    assert_eq!(ran_on, std::thread::current().id());
    assert_eq!(
        waits_ms, 0,
        "on the caller's thread a call never waits for a lock"
    );
}

/// On a current-thread runtime, as the HTTP workers run: while another process holds the
/// write lock, a call neither fails nor blocks the runtime; it waits on the connection's
/// thread and succeeds once the lock is free.
#[tokio::test(flavor = "current_thread")]
async fn a_call_that_finds_the_file_locked_waits_off_the_callers_thread() {
    let (_scratch, path) = temp_db("locked");
    let store = SqliteStore::open(&path).await.unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
        .execute(
            "INSERT INTO cursors (name, value) VALUES ('held', 'by another process')",
            [],
        )
        .unwrap();

    let claim = store.claim_event("e1", OffsetDateTime::now_utc());
    let mut claim = std::pin::pin!(claim);
    assert!(
        futures_util::poll!(claim.as_mut()).is_pending(),
        "the call waits without holding up this thread"
    );
    other.execute_batch("COMMIT").unwrap();
    assert!(
        claim.await.unwrap(),
        "and succeeds after the holder commits"
    );
    assert!(store.event_claimed("e1").await.unwrap());
    let held: String = store
        .run(|c| {
            Ok(
                c.query_row("SELECT value FROM cursors WHERE name = 'held'", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
        .unwrap();
    assert_eq!(held, "by another process");
}

#[tokio::test]
async fn an_event_lease_lives_in_the_events_row_until_it_is_claimed_or_pruned() {
    let (_scratch, path) = temp_db("lease-row");
    let store = SqliteStore::open(&path).await.unwrap();
    let t0 = time::macros::datetime!(2026-11-28 12:00 UTC);
    let lease = Duration::minutes(1);
    // A crashed invocation's lease is taken over when it ends; the late first owner's finish
    // still claims the event, and the event is handled for everyone from then on.
    assert_eq!(
        store.begin_event("e1", "first", t0, lease).await.unwrap(),
        EventStart::Leased
    );
    let later = t0 + Duration::minutes(2);
    assert_eq!(
        store
            .begin_event("e1", "second", later, lease)
            .await
            .unwrap(),
        EventStart::Leased
    );
    store
        .end_event("e1", "first", true, later, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .begin_event("e1", "third", later, lease)
            .await
            .unwrap(),
        EventStart::Handled
    );
    assert_eq!(
        event_rows(&store).await.unwrap(),
        [("e1".to_owned(), true, None)],
        "one row: claimed, leased by nobody"
    );

    // A lease nobody ends is pruned once it has run out, and only then.
    store.begin_event("e2", "gone", t0, lease).await.unwrap();
    assert_eq!(store.prune(t0).await.unwrap(), 0);
    assert_eq!(store.prune(t0 + lease).await.unwrap(), 1);
    assert_eq!(
        event_rows(&store).await.unwrap().len(),
        1,
        "the claim of e1 is kept"
    );
    assert!(!store.event_claimed("e2").await.unwrap());
}

/// Every `event_claims` row: the event id, whether it is claimed, and who holds its lease.
async fn event_rows(store: &SqliteStore) -> Result<Vec<(String, bool, Option<String>)>> {
    store
        .run(|c| {
            let mut statement = c.prepare(
                "SELECT event_id, claimed_at IS NOT NULL, lease_owner FROM event_claims
                 ORDER BY event_id",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
}
