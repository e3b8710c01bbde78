//! Rows and columns: how times, enums, versions, findings and outbox items are stored.

use super::*;

/// Times are stored as UTC nanoseconds since the epoch, which sort and compare in SQL.
pub(super) fn to_nanos(time: OffsetDateTime) -> Result<i64> {
    i64::try_from(time.unix_timestamp_nanos()).map_err(|_| {
        StateError::new(
            StateErrorKind::Permanent,
            format!("time {time} is outside the range the store keeps"),
        )
    })
}

pub(super) fn from_nanos(nanos: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(|e| corrupt(e.to_string()))
}

pub(super) fn corrupt(message: impl Into<String>) -> StateError {
    StateError::new(
        StateErrorKind::Permanent,
        format!("unreadable stored value: {}", message.into()),
    )
}

/// Enums are stored as their JSON names (`open`, `critical`, `applied`).
pub(super) fn enum_text<T: Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        _ => Err(StateError::new(
            StateErrorKind::Permanent,
            "value is not a named variant",
        )),
    }
}

pub(super) fn parse_enum<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| corrupt(format!("`{text}`: {e}")))
}

pub(super) fn parse_version(version: &Version) -> Result<i64> {
    version.as_str().parse().map_err(|_| {
        StateError::new(
            StateErrorKind::Permanent,
            "the version was not issued by the SQLite store",
        )
    })
}

/// The columns of one `findings` row, read before conversion.
pub(super) type FindingRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    String,
);

pub(super) fn read_finding_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FindingRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

pub(super) fn finding_from_row(row: FindingRow) -> Result<(FindingKey, Versioned<FindingRecord>)> {
    let (
        workspace,
        rule,
        resource,
        version,
        state,
        severity,
        first_seen,
        last_seen,
        last_notified,
        observed,
    ) = row;
    let record = FindingRecord {
        state: parse_enum(&state)?,
        severity: parse_enum(&severity)?,
        first_seen: from_nanos(first_seen)?,
        last_seen: from_nanos(last_seen)?,
        last_notified: last_notified.map(from_nanos).transpose()?,
        observed,
    };
    Ok((
        FindingKey {
            workspace,
            rule,
            resource,
        },
        Versioned {
            value: record,
            version: Version::new(version.to_string()),
        },
    ))
}

/// The bound values of a finding write.
pub(super) struct FindingColumns {
    pub(super) state: String,
    pub(super) severity: String,
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    pub(super) last_notified: Option<i64>,
    pub(super) observed: String,
}

impl FindingColumns {
    pub(super) fn new(record: &FindingRecord) -> Result<Self> {
        Ok(Self {
            state: enum_text(&record.state)?,
            severity: enum_text(&record.severity)?,
            first_seen: to_nanos(record.first_seen)?,
            last_seen: to_nanos(record.last_seen)?,
            last_notified: record.last_notified.map(to_nanos).transpose()?,
            observed: record.observed.clone(),
        })
    }
}

/// The columns of one `outbox` row, read before conversion.
pub(super) type OutboxRow = (String, String, String, i64, i64, i64, Option<String>);

pub(super) fn outbox_item(row: OutboxRow) -> Result<OutboxItem> {
    let (id, channel, payload, enqueued_at, next_attempt_at, attempts, last_error) = row;
    Ok(OutboxItem {
        notification: OutboxMessage {
            id,
            channel,
            payload: serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?,
        },
        enqueued_at: from_nanos(enqueued_at)?,
        next_attempt_at: from_nanos(next_attempt_at)?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(e.to_string()))?,
        last_error,
    })
}

pub(super) fn later(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_add(by)
        .ok_or_else(|| StateError::new(StateErrorKind::Permanent, "time out of range"))
}

pub(super) fn earlier(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_sub(by)
        .ok_or_else(|| StateError::new(StateErrorKind::Permanent, "time out of range"))
}
