//! The statements of the event and claim calls, each with what its parameters are.

/// Whether event id ?1 was claimed (a count, 0 or 1).
pub(super) const EVENT_CLAIMED: &str =
    "SELECT COUNT(*) FROM event_claims WHERE event_id = ?1 AND claimed_at IS NOT NULL";

/// Claims an event id (?1) at ?2; one changed row when it was not claimed before.
pub(super) const CLAIM_EVENT: &str =
    "INSERT INTO event_claims (event_id, claimed_at) VALUES (?1, ?2)
     ON CONFLICT (event_id) DO UPDATE SET claimed_at = excluded.claimed_at
         WHERE event_claims.claimed_at IS NULL";

/// Gives event ?1's lease to ?2 until ?3 unless the event was claimed or another owner's lease
/// runs past ?4 (now); one changed row when leased. One statement rather than a read and a
/// write in a transaction: the common answer then costs one step instead of four.
pub(super) const LEASE_EVENT: &str =
    "INSERT INTO event_claims (event_id, lease_owner, lease_expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (event_id) DO UPDATE
         SET lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at
         WHERE event_claims.claimed_at IS NULL
           AND (event_claims.lease_owner IS NULL
                OR event_claims.lease_expires_at IS NULL
                OR event_claims.lease_owner = excluded.lease_owner
                OR event_claims.lease_expires_at <= ?4)";

/// Claims event ?1 at ?2 (unless it was claimed before) and ends the lease of owner ?3; once
/// the event is claimed, nobody leases it again, so another owner's lease is moot and ends too.
pub(super) const FINISH_EVENT: &str =
    "INSERT INTO event_claims (event_id, claimed_at) VALUES (?1, ?2)
     ON CONFLICT (event_id) DO UPDATE
         SET claimed_at = coalesce(event_claims.claimed_at, excluded.claimed_at),
             lease_owner = NULL, lease_expires_at = NULL
         WHERE event_claims.claimed_at IS NULL OR event_claims.lease_owner = ?3";

/// Ends owner ?2's lease of event ?1, which was not claimed.
pub(super) const RELEASE_EVENT: &str = "DELETE FROM event_claims
     WHERE event_id = ?1 AND claimed_at IS NULL AND lease_owner = ?2";

/// Takes (resource ?1, rule ?2) for owner ?3 until ?4 when free, expired at ?5, or already
/// this owner's; one changed row when taken.
pub(super) const CLAIM_REMEDIATION: &str =
    "INSERT INTO remediation_claims (resource, rule, owner, expires_at)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (resource, rule) DO UPDATE
         SET owner = excluded.owner, expires_at = excluded.expires_at
         WHERE remediation_claims.expires_at <= ?5
            OR remediation_claims.owner = excluded.owner";

/// Releases (resource ?1, rule ?2) if owner ?3 holds it.
pub(super) const RELEASE_REMEDIATION: &str =
    "DELETE FROM remediation_claims WHERE resource = ?1 AND rule = ?2 AND owner = ?3";

/// Appends an audit record (?2) at ?1.
pub(super) const APPEND_AUDIT: &str = "INSERT INTO audit (at, record) VALUES (?1, ?2)";

/// The columns [`super::rows::read_finding_row`] reads, in its order. A macro, so that the
/// statements below are constants: built with `format!`, they were formatted on every call.
macro_rules! finding_columns {
    () => {
        "workspace, rule, resource, version, state, severity, first_seen, last_seen, \
         last_notified, observed"
    };
}

/// The finding of (workspace ?1, rule ?2, resource ?3).
pub(super) const FINDING: &str = concat!(
    "SELECT ",
    finding_columns!(),
    " FROM findings WHERE workspace = ?1 AND rule = ?2 AND resource = ?3"
);

/// Workspace ?1's findings.
pub(super) const WORKSPACE_FINDINGS: &str = concat!(
    "SELECT ",
    finding_columns!(),
    " FROM findings WHERE workspace = ?1 ORDER BY rule, resource"
);

/// The findings in state ?1 (the open ones).
pub(super) const FINDINGS_IN_STATE: &str = concat!(
    "SELECT ",
    finding_columns!(),
    " FROM findings WHERE state = ?1 ORDER BY workspace, rule, resource"
);
