//! Which read failures of a snapshot are transient.

use crate::snapshot::{ReadFailure, Snapshot};

/// The transient failures in a snapshot: when any exist, an event invocation fails so that
/// Event Grid redelivers (the state may be fine; cmk-guard just could not see it in time).
pub fn transient_failures(snapshot: &Snapshot) -> Vec<&ReadFailure> {
    snapshot.read_failures().filter(|f| f.transient).collect()
}
