//! Blob names and the times in them: zero-padded UTC nanoseconds, so names sort by time and
//! listing a prefix answers time-range questions without downloads.

use super::*;

/// Zero-padded UTC nanoseconds: sorts like the time it names.
pub(super) fn nanos_text(time: OffsetDateTime) -> Result<String> {
    u64::try_from(time.unix_timestamp_nanos())
        .map(|nanos| format!("{nanos:020}"))
        .map_err(|_| {
            StateError::new(
                StateErrorKind::Permanent,
                format!("time {time} is outside the range the store keeps"),
            )
        })
}

pub(super) fn parse_nanos(text: &str) -> Option<OffsetDateTime> {
    let nanos: u64 = text.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()
}

/// The time at the start of the last segment of `{prefix}/{time}-{uuid}` names.
pub(super) fn name_time(name: &str) -> Option<OffsetDateTime> {
    let last = name.rsplit('/').next()?;
    parse_nanos(last.split('-').next()?)
}

/// A time-ordered unique name under `prefix`.
pub(super) fn timed_name(prefix: &str, at: OffsetDateTime) -> Result<String> {
    Ok(format!(
        "{prefix}/{}-{}",
        nanos_text(at)?,
        uuid::Uuid::new_v4()
    ))
}

pub(super) fn finding_name(key: &FindingKey) -> String {
    format!(
        "findings/{}/{}",
        digest(&[&key.workspace]),
        digest(&[&key.rule, &key.resource])
    )
}

/// A finding state as the listing metadata holds it.
pub(super) fn state_label(state: FindingState) -> &'static str {
    match state {
        FindingState::Open => "open",
        FindingState::Resolved => "resolved",
    }
}

pub(super) fn metadata_time(listed: &Listed, key: &str) -> Option<OffsetDateTime> {
    listed.metadata.get(key).and_then(|text| parse_nanos(text))
}

pub(super) fn earlier(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_sub(by)
        .ok_or_else(|| StateError::new(StateErrorKind::Permanent, "time out of range"))
}

pub(super) fn later(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_add(by)
        .ok_or_else(|| StateError::new(StateErrorKind::Permanent, "time out of range"))
}
