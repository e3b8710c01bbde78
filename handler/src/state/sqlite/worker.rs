//! Who runs a store call on the connection. A call runs at once on the caller's thread when
//! the connection is free, nothing is queued before it, and SQLite's write lock is free: the
//! connection has no busy timeout, so such a call never waits for another process. Otherwise
//! (another call holds the connection, or another process the lock) the call is a job for the
//! connection's own thread, which runs jobs one at a time in the order they were sent, waits
//! for the lock up to [`BUSY_TIMEOUT`], and answers through a oneshot channel. Between jobs that
//! thread checkpoints the write-ahead log every [`CHECKPOINT_INTERVAL`].
//!
//! A call's work may therefore run twice: once on the caller's thread, failing transiently
//! (busy) without effect, and again on the connection's thread. Every call of the store is one
//! statement or one transaction, so a failed try has changed nothing.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::super::{Result, StateError, StateErrorKind};
use super::BUSY_TIMEOUT;
use super::schema::CHECKPOINT_INTERVAL;

/// One call of the store, run on the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection and the count of jobs sent to its thread and not yet finished.
#[derive(Debug)]
struct Shared {
    connection: Mutex<Connection>,
    queued: AtomicUsize,
}

/// The store's connection and its thread; the thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Worker {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
}

impl Worker {
    /// Starts the thread that runs the calls that cannot run on their caller's thread.
    pub(super) fn start(connection: Connection) -> Result<Self> {
        let shared = Arc::new(Shared {
            connection: Mutex::new(connection),
            queued: AtomicUsize::new(0),
        });
        let (jobs, queue) = mpsc::channel::<Job>();
        let served = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cmk-guard-sqlite".into())
            .spawn(move || serve(&served, &queue))
            .map_err(|e| {
                StateError::new(
                    StateErrorKind::Permanent,
                    format!("starting the SQLite thread failed: {e}"),
                )
            })?;
        Ok(Self { shared, jobs })
    }

    /// Runs `work` on the connection, on this thread if it can do so without waiting, else on
    /// the connection's thread. `work` must be one statement or one transaction (see above).
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
    {
        if let Some(answer) = self.try_inline(&work) {
            return answer;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            // The caller may have stopped waiting; its answer is then dropped.
            let _ = reply.send(work(connection));
        });
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(job).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(task_failed("the SQLite thread has stopped"));
        }
        // The reply is dropped unsent only when the work panicked.
        answer
            .await
            .map_err(|_| task_failed("the SQLite call panicked"))?
    }

    /// The answer of `work` run on this thread, or `None` when it has to wait: the connection
    /// is in use, jobs are queued before it, or SQLite answered busy.
    fn try_inline<T>(&self, work: &impl Fn(&mut Connection) -> Result<T>) -> Option<Result<T>> {
        if self.shared.queued.load(Ordering::Acquire) != 0 {
            return None;
        }
        let mut connection = match self.shared.connection.try_lock() {
            Ok(connection) => connection,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut connection))) {
            Ok(Err(error)) if error.is_transient() => None,
            Ok(answer) => Some(answer),
            Err(_) => Some(Err(task_failed("the SQLite call panicked"))),
        }
    }
}

fn task_failed(why: &str) -> StateError {
    StateError::new(
        StateErrorKind::Permanent,
        format!("SQLite task failed: {why}"),
    )
}

/// Runs jobs until every sender is gone, checkpointing between them. A job that panics fails
/// only its own call: a statement or transaction is atomic, so the connection is still sound.
fn serve(shared: &Shared, queue: &Receiver<Job>) {
    let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
    loop {
        match queue.recv_timeout(next_checkpoint.saturating_duration_since(Instant::now())) {
            Ok(job) => {
                let mut connection = lock(shared);
                // Only here, off the callers' threads, does a call wait for the lock.
                set_busy_timeout(&connection, BUSY_TIMEOUT);
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut connection)));
                set_busy_timeout(&connection, Duration::ZERO);
                drop(connection);
                shared.queued.fetch_sub(1, Ordering::AcqRel);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_checkpoint {
            checkpoint(&lock(shared));
            next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
        }
    }
}

fn set_busy_timeout(connection: &Connection, timeout: Duration) {
    if let Err(error) = connection.busy_timeout(timeout) {
        tracing::warn!(message = "Setting the SQLite busy timeout failed.", %error);
    }
}

/// The connection; a panic while it was held left it sound (see [`serve`]).
fn lock(shared: &Shared) -> MutexGuard<'_, Connection> {
    shared
        .connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies the write-ahead log back into the database file. Automatic checkpoints are off:
/// SQLite would run them inside whichever write crosses 1,000 pages, and that event would pay a
/// few milliseconds for it. `PASSIVE` never waits for readers or writers; what it cannot copy
/// now it copies next time.
fn checkpoint(connection: &Connection) {
    if let Err(error) = connection
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .map_err(StateError::from)
    {
        tracing::debug!(message = "SQLite checkpoint failed; the next one retries.", %error);
    }
}
