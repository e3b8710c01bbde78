//! The Outcome: what cmk-guard decided about one invocation. It is the public contract of
//! docs/architecture.md (*Outcome*): the host's `ReturnValue`, the `Evaluate` response and the
//! CLI's JSON.
//! Field names and rule ids are stable; new fields may be added, none renamed.

use serde::{Deserialize, Serialize};

/// Which event the outcome is about. Fields are `null` when the input was too broken to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub subject: Option<String>,
}

impl EventRef {
    /// The reference to an event from the fields the event itself carries. They are input, and
    /// every Outcome and log line repeats them, so each is cleaned and bounded here
    /// ([`crate::text::FIELD`]): a 500 KB id or a newline in a subject goes no further.
    pub fn from_event(
        id: Option<String>,
        event_type: Option<String>,
        subject: Option<String>,
    ) -> Self {
        let field = |text: Option<String>| {
            text.map(|text| crate::text::clean_owned(text, crate::text::FIELD))
        };
        Self {
            id: field(id),
            event_type: field(event_type),
            subject: field(subject),
        }
    }
}

/// What happened to the invocation as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// The event was relevant and the affected resources were checked.
    Evaluated,
    /// Nothing cmk-guard watches changed (irrelevant type, failed or cancelled operation).
    Ignored,
    /// The same event id was already handled.
    Duplicate,
    /// The input was malformed or out of scope; acknowledged so the host does not retry it.
    Rejected,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Whether a finding is still a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingState {
    Open,
    Resolved,
}

/// One rule's verdict on one resource of one workspace's CMK chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: crate::catalogue::RuleId,
    pub resource: String,
    pub workspace: String,
    pub severity: Severity,
    pub state: FindingState,
    pub observed: String,
    pub expected: String,
}

/// The kind of an action taken or planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Remediate,
    Notify,
}

/// What became of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionResult {
    Applied,
    Planned,
    Skipped,
    Failed,
    Sent,
    Suppressed,
}

/// `as_str` for an enum serialised `rename_all = "lowercase"`: the one name a value has in the
/// Outcome JSON, log lines, spans and metrics (a test checks it against serde).
macro_rules! lowercase_names {
    ($($enum:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {
        $(impl $enum {
            /// The value's name, as the Outcome JSON writes it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $name),+
                }
            }

            /// Every value, for the check against serde.
            #[cfg(test)]
            const ALL: &'static [$enum] = &[$($enum::$variant),+];
        })+
    };
}

lowercase_names! {
    Disposition {
        Evaluated => "evaluated",
        Ignored => "ignored",
        Duplicate => "duplicate",
        Rejected => "rejected",
    }
    Severity {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
    FindingState {
        Open => "open",
        Resolved => "resolved",
    }
    ActionKind {
        Remediate => "remediate",
        Notify => "notify",
    }
    ActionResult {
        Applied => "applied",
        Planned => "planned",
        Skipped => "skipped",
        Failed => "failed",
        Sent => "sent",
        Suppressed => "suppressed",
    }
}

/// A remediation or notification with its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub rule: String,
    pub target: String,
    pub result: ActionResult,
    pub detail: String,
}

/// The decision about one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub event: EventRef,
    pub disposition: Disposition,
    /// Why the event was ignored or rejected; absent when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The resource the trigger points at (ARM id or key URL), when known. An extension of the
    /// contract in docs/architecture.md: it tells a reader what was resolved before any workspace
    /// is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub workspaces: Vec<String>,
    pub findings: Vec<Finding>,
    pub actions: Vec<Action>,
    /// Failing checks a live policy exemption covers: reported for the audit trail, never
    /// alerted or remediated. An extension of the contract in docs/architecture.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempted: Vec<Exempted>,
    /// Which findings' alerts went out, on which channel: for the audit trail only (the
    /// `notify` actions say where messages went, not which findings they carried), never in
    /// the Outcome JSON.
    #[serde(skip)]
    pub alerted: Vec<Alerted>,
}

/// One finding told on one channel by this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerted {
    pub workspace: String,
    pub rule: String,
    pub resource: String,
    pub channel: String,
}

/// A finding covered by an exemption, with the exemption's reason and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exempted {
    #[serde(flatten)]
    pub finding: Finding,
    pub exemption_reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemption_expires: Option<String>,
}

impl Outcome {
    /// An outcome with no workspaces, findings or actions. Reasons often quote input, so the
    /// reason is cleaned and bounded ([`crate::text::REASON`]).
    pub fn new(event: EventRef, disposition: Disposition, reason: Option<String>) -> Self {
        Self {
            event,
            disposition,
            reason: reason.map(|reason| crate::text::clean_owned(reason, crate::text::REASON)),
            resource: None,
            workspaces: Vec::new(),
            findings: Vec::new(),
            actions: Vec::new(),
            exempted: Vec::new(),
            alerted: Vec::new(),
        }
    }

    /// Counts the open findings, remediations and notifications in the metrics (one place for
    /// all, so every reply path counts alike).
    pub fn record_metrics(&self) {
        for finding in self
            .findings
            .iter()
            .filter(|f| f.state == FindingState::Open)
        {
            crate::telemetry::record_finding(finding.rule.as_str(), finding.severity.as_str());
        }
        for action in &self.actions {
            let result = action.result.as_str();
            match action.kind {
                ActionKind::Remediate => crate::telemetry::record_remediation(&action.rule, result),
                ActionKind::Notify => crate::telemetry::record_notification(&action.target, result),
            }
        }
    }

    /// One human-readable line for the host's `Logs`; each part bounded, so the line is too.
    pub fn log_line(&self) -> String {
        use crate::text::{REASON, clean, field};
        use std::fmt::Write as _;
        let id = field(self.event.id.as_deref().unwrap_or("(no id)"));
        let event_type = field(self.event.event_type.as_deref().unwrap_or("(no type)"));
        // Written piece by piece into one buffer: a `format!` per part cost a buffer each.
        let resource = self.resource.as_deref().map(field);
        let reason = self.reason.as_deref().map(|reason| clean(reason, REASON));
        let parts = [
            Some(&id),
            Some(&event_type),
            resource.as_ref(),
            reason.as_ref(),
        ];
        let mut line = String::with_capacity(
            parts.iter().flatten().map(|part| part.len()).sum::<usize>() + LOG_LINE_WORDS,
        );
        line.push_str(self.disposition.as_str());
        line.push_str(" event ");
        line.push_str(&id);
        line.push_str(" (");
        line.push_str(&event_type);
        line.push(')');
        if let Some(resource) = &resource {
            line.push_str(" on ");
            line.push_str(resource);
        }
        if let Some(reason) = &reason {
            line.push_str(": ");
            line.push_str(reason);
        }
        if self.disposition == Disposition::Evaluated {
            // Writing to a `String` cannot fail.
            let _ = write!(
                line,
                ": {} workspace(s), {} finding(s), {} action(s)",
                self.workspaces.len(),
                self.findings.len(),
                self.actions.len()
            );
        }
        line
    }
}

/// Room in a log line for what [`Outcome::log_line`] writes besides the event's own fields.
const LOG_LINE_WORDS: usize = 96;

/// The reply to the Functions host for a non-HTTP trigger (`HttpScriptInvocationResult`).
/// Always a JSON object: an empty 200 body would leave the invocation hanging until timeout.
/// `R` is the return value: an `&Outcome` is serialized straight into the body, no `Value` between.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostResponse<R = serde_json::Value> {
    #[serde(rename = "Outputs")]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: R,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_documented_shape() {
        let mut outcome = Outcome::new(
            EventRef {
                id: Some("e1".into()),
                event_type: Some("t".into()),
                subject: Some("s".into()),
            },
            Disposition::Ignored,
            Some("why".into()),
        );
        outcome.findings.push(Finding {
            rule: crate::catalogue::RuleId::VaultPurgeProtection,
            resource: "/subscriptions/x".into(),
            workspace: "/subscriptions/x/ws".into(),
            severity: Severity::High,
            state: FindingState::Open,
            observed: "off".into(),
            expected: "on".into(),
        });
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["event"]["type"], "t");
        assert_eq!(json["disposition"], "ignored");
        assert_eq!(json["reason"], "why");
        assert_eq!(json["findings"][0]["severity"], "high");
        assert_eq!(json["findings"][0]["state"], "open");
        assert!(json.get("resource").is_none());
        assert_eq!(json["actions"], serde_json::json!([]));
    }

    #[test]
    fn event_fields_and_reasons_from_input_are_bounded_and_clean() {
        let outcome = Outcome::new(
            EventRef::from_event(
                Some("x".repeat(500_000)),
                Some("T\n\u{1b}[31m".into()),
                Some("s\u{2028}".into()),
            ),
            Disposition::Rejected,
            Some(format!("why: {}", "\r\n".repeat(100_000))),
        );
        assert_eq!(
            outcome.event.id.as_ref().map(|id| id.chars().count()),
            Some(200)
        );
        assert_eq!(outcome.event.event_type.as_deref(), Some("T\\n\\u{1b}[31m"));
        assert_eq!(outcome.event.subject.as_deref(), Some("s\\u{2028}"));
        let reason = outcome.reason.clone().unwrap_or_default();
        assert!(reason.len() <= crate::text::LINE_BYTES, "{}", reason.len());
        let line = outcome.log_line();
        assert!(!line.chars().any(crate::text::is_control), "{line:?}");
        assert!(line.len() < 2 * crate::text::LINE_BYTES, "{}", line.len());
    }

    #[test]
    fn evaluated_outcomes_have_no_reason() {
        let outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        let json = serde_json::to_value(&outcome).unwrap();
        assert!(json.get("reason").is_none());
        assert!(outcome.log_line().starts_with("evaluated event (no id)"));
    }

    #[test]
    fn every_name_is_what_serde_writes() {
        fn check<T: Serialize + Copy + std::fmt::Debug>(all: &[T], name: fn(T) -> &'static str) {
            for value in all {
                assert_eq!(
                    serde_json::to_value(value).unwrap(),
                    name(*value),
                    "{value:?}"
                );
            }
        }
        check(Disposition::ALL, Disposition::as_str);
        check(Severity::ALL, Severity::as_str);
        check(FindingState::ALL, FindingState::as_str);
        check(ActionKind::ALL, ActionKind::as_str);
        check(ActionResult::ALL, ActionResult::as_str);
    }
}
