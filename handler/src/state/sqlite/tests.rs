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
    assert_eq!(version, 1);
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
