//! The audit trail's record of one invocation, serialized straight from the Outcome.
//!
//! Records were first built as a `serde_json::Value` and then written out; building and
//! dropping the value cost a relevant event more than writing the text. The text must stay what
//! the value wrote (older records and `crate::history` read it; a test compares the two), and a
//! value writes every object's keys in alphabetical order. So each struct below declares its
//! fields in alphabetical order, and the event, caller and actions go through these shims
//! rather than their own `Serialize`, which follows another order.

use std::borrow::Cow;

use serde::Serialize;

use crate::catalogue::RuleId;
use crate::history::Caller;
use crate::outcome::{
    Action, ActionKind, ActionResult, Disposition, FindingState, Outcome, Severity,
};
use crate::state::{StateError, StateErrorKind};

/// The audit trail's record of one invocation: what came in and from whom (`caller`, when an
/// event named one), what was found, done and alerted (`crate::history` replays these). Fields
/// are added, never renamed: older records must still read. Never a secret.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    actions: Vec<AuditAction<'a>>,
    alerted: Vec<AuditAlerted<'a>>,
    caller: Option<AuditCaller<'a>>,
    disposition: Disposition,
    event: AuditEvent<'a>,
    findings: Vec<AuditFinding<'a>>,
    workspaces: &'a [String],
}

impl AuditRecord<'_> {
    /// The record as one line of compact JSON, as the store keeps it.
    pub fn to_json(&self) -> Result<String, StateError> {
        // An event's record is about 600 bytes: room for it from the start, where
        // `serde_json::to_string` would grow its buffer three times.
        let mut text = Vec::with_capacity(RECORD_BYTES);
        serde_json::to_writer(&mut text, self).map_err(unwritable)?;
        String::from_utf8(text).map_err(|e| unwritable(serde::ser::Error::custom(e)))
    }
}

/// Room for an event's record without growing the buffer.
const RECORD_BYTES: usize = 1024;

/// Unreachable (every field is a string, a list or a plain enum), but a failure is an error.
fn unwritable(error: serde_json::Error) -> StateError {
    StateError::new(
        StateErrorKind::Permanent,
        format!("writing the audit record failed: {error}"),
    )
}

#[derive(Debug, Serialize)]
struct AuditAction<'a> {
    detail: &'a str,
    kind: ActionKind,
    result: ActionResult,
    rule: &'a str,
    target: &'a str,
}

#[derive(Debug, Serialize)]
struct AuditAlerted<'a> {
    channel: &'a str,
    resource: &'a str,
    rule: &'a str,
    workspace: &'a str,
}

/// [`Caller`]'s fields: `name` only when known, `object_id` always (`null` when unknown).
#[derive(Debug, Serialize)]
struct AuditCaller<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    object_id: Option<&'a str>,
}

/// [`crate::outcome::EventRef`]'s fields.
#[derive(Debug, Serialize)]
struct AuditEvent<'a> {
    id: Option<&'a str>,
    subject: Option<&'a str>,
    #[serde(rename = "type")]
    event_type: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct AuditFinding<'a> {
    observed: Cow<'a, str>,
    resource: &'a str,
    rule: RuleId,
    severity: Severity,
    state: FindingState,
    workspace: &'a str,
}

/// The audit record of `outcome`, caused by `caller` when an event named one.
pub fn audit_record<'a>(outcome: &'a Outcome, caller: Option<&'a Caller>) -> AuditRecord<'a> {
    AuditRecord {
        actions: outcome.actions.iter().map(audit_action).collect(),
        alerted: outcome
            .alerted
            .iter()
            .map(|a| AuditAlerted {
                channel: &a.channel,
                resource: &a.resource,
                rule: &a.rule,
                workspace: &a.workspace,
            })
            .collect(),
        caller: caller.map(|c| AuditCaller {
            name: c.name.as_deref(),
            object_id: c.object_id.as_deref(),
        }),
        disposition: outcome.disposition,
        event: AuditEvent {
            id: outcome.event.id.as_deref(),
            subject: outcome.event.subject.as_deref(),
            event_type: outcome.event.event_type.as_deref(),
        },
        findings: outcome
            .findings
            .iter()
            .map(|f| AuditFinding {
                observed: crate::text::clean(&f.observed, crate::text::REASON),
                resource: &f.resource,
                rule: f.rule,
                severity: f.severity,
                state: f.state,
                workspace: &f.workspace,
            })
            .collect(),
        workspaces: &outcome.workspaces,
    }
}

fn audit_action(action: &Action) -> AuditAction<'_> {
    AuditAction {
        detail: &action.detail,
        kind: action.kind,
        result: action.result,
        rule: &action.rule,
        target: &action.target,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::outcome::{Alerted, EventRef, Finding};

    /// The record as it was built before it was serialized straight: a `Value`.
    fn as_value_wrote_it(outcome: &Outcome, caller: Option<&Caller>) -> String {
        json!({
            "event": outcome.event,
            "disposition": outcome.disposition,
            "caller": caller,
            "workspaces": outcome.workspaces,
            "findings": outcome.findings.iter().map(|f| json!({
                "workspace": f.workspace,
                "rule": f.rule,
                "resource": f.resource,
                "severity": f.severity,
                "state": f.state,
                "observed": crate::text::clean(&f.observed, crate::text::REASON),
            })).collect::<Vec<_>>(),
            "actions": outcome.actions,
            "alerted": outcome.alerted.iter().map(|a| json!({
                "workspace": a.workspace,
                "rule": a.rule,
                "resource": a.resource,
                "channel": a.channel,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }

    fn full_outcome() -> Outcome {
        let mut outcome = Outcome::new(
            EventRef {
                id: Some("e\"1".into()),
                event_type: Some("Microsoft.Resources.ResourceWriteSuccess".into()),
                subject: Some("/subscriptions/s/x\u{7}".into()),
            },
            Disposition::Evaluated,
            None,
        );
        outcome.workspaces = vec!["/subscriptions/s/ws1".into(), "/subscriptions/s/ws2".into()];
        outcome.findings.push(Finding {
            rule: RuleId::VaultPurgeProtection,
            resource: "/subscriptions/s/vault".into(),
            workspace: "/subscriptions/s/ws1".into(),
            severity: Severity::High,
            state: FindingState::Open,
            observed: "off\nnext line \u{1b}[31m".into(),
            expected: "on".into(),
        });
        outcome.actions.push(Action {
            kind: ActionKind::Notify,
            rule: "vault-purge-protection".into(),
            target: "teams".into(),
            result: ActionResult::Sent,
            detail: "sent <b>é</b>".into(),
        });
        outcome.alerted.push(Alerted {
            workspace: "/subscriptions/s/ws1".into(),
            rule: "vault-purge-protection".into(),
            resource: "/subscriptions/s/vault".into(),
            channel: "teams".into(),
        });
        outcome
    }

    #[test]
    fn writes_the_bytes_the_value_wrote() {
        let outcome = full_outcome();
        let callers = [
            None,
            Some(Caller {
                object_id: Some("oid".into()),
                name: Some("a@b.c".into()),
            }),
            Some(Caller {
                object_id: None,
                name: None,
            }),
        ];
        for caller in &callers {
            let record = audit_record(&outcome, caller.as_ref());
            assert_eq!(
                record.to_json().unwrap(),
                as_value_wrote_it(&outcome, caller.as_ref())
            );
        }
        let empty = Outcome::new(EventRef::default(), Disposition::Rejected, Some("x".into()));
        assert_eq!(
            audit_record(&empty, None).to_json().unwrap(),
            as_value_wrote_it(&empty, None)
        );
    }
}
