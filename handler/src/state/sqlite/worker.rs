//! The thread that owns the SQLite connection. Every call of the store is a job sent to it and
//! answered through a oneshot channel: one hand-over each way, instead of a task on tokio's
//! blocking pool per call (a relevant event makes several). Jobs run one at a time in the order
//! they were sent, as they did on one locked connection; between them the thread checkpoints the
//! write-ahead log every [`CHECKPOINT_INTERVAL`].

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use rusqlite::Connection;

use super::super::{Result, StateError, StateErrorKind};
use super::schema::CHECKPOINT_INTERVAL;

/// One call of the store, run on the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The sending side of the connection's thread; the thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Worker {
    jobs: Sender<Job>,
}

impl Worker {
    /// Starts the thread that owns `connection` from now on.
    pub(super) fn start(connection: Connection) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cmk-guard-sqlite".into())
            .spawn(move || serve(connection, &queue))
            .map_err(|e| {
                StateError::new(
                    StateErrorKind::Permanent,
                    format!("starting the SQLite thread failed: {e}"),
                )
            })?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the connection's thread and waits for its answer.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            // The caller may have stopped waiting; its answer is then dropped.
            let _ = reply.send(work(connection));
        });
        if self.jobs.send(job).is_err() {
            return Err(task_failed("the SQLite thread has stopped"));
        }
        // The reply is dropped unsent only when the work panicked.
        answer
            .await
            .map_err(|_| task_failed("the SQLite call panicked"))?
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
fn serve(mut connection: Connection, queue: &Receiver<Job>) {
    let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
    loop {
        match queue.recv_timeout(next_checkpoint.saturating_duration_since(Instant::now())) {
            Ok(job) => {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut connection)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_checkpoint {
            checkpoint(&connection);
            next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
        }
    }
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
