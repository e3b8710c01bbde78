//! Which read failures of a snapshot are transient.

use crate::snapshot::{Read, ReadFailure, Snapshot};

/// The transient failures in a snapshot: when any exist, an event invocation fails so that
/// Event Grid redelivers (the state may be fine; cmk-guard just could not see it in time).
pub fn transient_failures(snapshot: &Snapshot) -> Vec<&ReadFailure> {
    let mut all = read_failures(snapshot);
    all.retain(|f| f.transient);
    all
}

/// Every read failure in a snapshot.
pub(crate) fn read_failures(snapshot: &Snapshot) -> Vec<&ReadFailure> {
    let mut all: Vec<Option<&ReadFailure>> = vec![
        snapshot.workspace.failure(),
        snapshot.vault.as_ref().and_then(Read::failure),
        snapshot.deleted_vault.as_ref().and_then(Read::failure),
        snapshot.key.as_ref().and_then(Read::failure),
        snapshot.latest_key.as_ref().and_then(Read::failure),
        snapshot.rotation_policy.as_ref().and_then(Read::failure),
        snapshot.role_assignments.as_ref().and_then(Read::failure),
        snapshot.endpoints.as_ref().and_then(Read::failure),
        snapshot.providers.as_ref().and_then(Read::failure),
        snapshot.wiring.as_ref().and_then(Read::failure),
    ];
    if let Some(Read::Found(assignments)) = &snapshot.role_assignments {
        all.extend(assignments.iter().map(|a| a.definition.failure()));
    }
    all.into_iter().flatten().collect()
}
