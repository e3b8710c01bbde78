//! Findings in Azure Monitor: every finding change (opened, escalated, reminded, resolved,
//! remediated) becomes one row of the Log Analytics table `CmkGuardFindings_CL`, sent through the
//! Logs Ingestion API (`POST {endpoint}/dataCollectionRules/{immutableId}/streams/{stream}`,
//! api-version 2023-01-01) with a Microsoft Entra token from cmk-guard's credential.
//!
//! The state store stays the record: rows are sent after the change is stored, and a failed
//! send is logged (without the token) and never fails the invocation or loses the finding.

mod client;

pub use client::FindingsLog;

use serde::Serialize;
use time::OffsetDateTime;
use url::Url;

use crate::config::ConfigError;
use crate::notify::Change;
use crate::outcome::{Action, ActionKind, ActionResult, Finding, FindingState};

/// The data collection endpoint (or the rule's own logs ingestion endpoint).
pub const ENDPOINT_VARIABLE: &str = "CMKGUARD_LOGS_INGESTION_ENDPOINT";
/// The data collection rule's immutable id (`dcr-…`).
pub const RULE_VARIABLE: &str = "CMKGUARD_LOGS_DCR_ID";
/// The rule's input stream.
pub const STREAM_VARIABLE: &str = "CMKGUARD_LOGS_STREAM";
/// The stream the Bicep declares.
pub const DEFAULT_STREAM: &str = "Custom-CmkGuardFindings";

/// Where finding changes are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsSettings {
    pub endpoint: Url,
    pub rule_id: String,
    pub stream: String,
}

impl LogsSettings {
    /// Reads the three variables through `value` (trimmed, non-empty values); `None` when no
    /// endpoint is set. An endpoint without a rule id, or a malformed value, is an error.
    pub fn from_lookup(
        value: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let stream = value(STREAM_VARIABLE).unwrap_or_else(|| DEFAULT_STREAM.to_owned());
        let Some(text) = value(ENDPOINT_VARIABLE) else {
            if value(RULE_VARIABLE).is_some() {
                return Err(ConfigError::new(
                    RULE_VARIABLE,
                    format!("set, but {ENDPOINT_VARIABLE} is not: both are needed"),
                ));
            }
            return Ok(None);
        };
        let endpoint = Url::parse(&text)
            .ok()
            .filter(|url| url.scheme() == "https" && url.host_str().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    ENDPOINT_VARIABLE,
                    "not an https:// URL (the data collection endpoint's logs ingestion URL)",
                )
            })?;
        let rule_id = value(RULE_VARIABLE).ok_or_else(|| {
            ConfigError::new(
                RULE_VARIABLE,
                format!(
                    "missing: {ENDPOINT_VARIABLE} is set, so the rule's immutable id is needed"
                ),
            )
        })?;
        for (variable, text) in [(RULE_VARIABLE, &rule_id), (STREAM_VARIABLE, &stream)] {
            let plain = text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !plain || text.len() > 128 {
                return Err(ConfigError::new(
                    variable,
                    "only letters, digits, `-` and `_` (at most 128)",
                ));
            }
        }
        Ok(Some(Self {
            endpoint,
            rule_id,
            stream,
        }))
    }

    /// The upload URL.
    pub fn upload_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        url.set_path(&format!(
            "/dataCollectionRules/{}/streams/{}",
            self.rule_id, self.stream
        ));
        url.set_query(Some("api-version=2023-01-01"));
        url
    }
}

/// One row of `CmkGuardFindings_CL`; the column names are the table's (infra/modules/monitor.bicep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FindingRow {
    #[serde(with = "time::serde::rfc3339")]
    pub time_generated: OffsetDateTime,
    /// `opened`, `escalated`, `reminder`, `resolved` or `remediated`.
    pub change: &'static str,
    pub rule: String,
    pub severity: String,
    /// `open` or `resolved` after the change.
    pub state: String,
    pub workspace_id: String,
    pub subscription_id: String,
    pub resource_id: String,
    pub observed: String,
    pub expected: String,
    /// The remediation's result when one was attempted (`applied`, `failed`, …), else empty.
    pub remediation: String,
}

impl FindingRow {
    /// The row for `change` of `finding`, with the remediation `action` that went with it.
    pub fn new(
        finding: &Finding,
        change: Change,
        action: Option<&Action>,
        now: OffsetDateTime,
    ) -> Self {
        let remediation = action
            .filter(|a| a.kind == ActionKind::Remediate)
            .map(|a| a.result);
        let fixed = finding.state == FindingState::Resolved;
        let change = match (change, remediation) {
            // Found and fixed in one invocation, or fixed after it was opened.
            (_, Some(ActionResult::Applied)) if fixed => "remediated",
            (Change::Resolved, _) => "resolved",
            (Change::New, _) => "opened",
            (Change::Escalated { .. }, _) => "escalated",
            (Change::Reminder, _) => "reminder",
        };
        Self {
            time_generated: now,
            change,
            rule: finding.rule.as_ref().to_owned(),
            severity: word(&finding.severity),
            state: word(&finding.state),
            workspace_id: finding.workspace.clone(),
            subscription_id: subscription_of(&finding.workspace),
            resource_id: finding.resource.clone(),
            observed: finding.observed.clone(),
            expected: finding.expected.clone(),
            remediation: remediation.map(|r| word(&r)).unwrap_or_default(),
        }
    }
}

/// A serde enum's wire word (`critical`, `open`, `applied`).
fn word(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

/// The subscription id of an ARM id (`/subscriptions/{id}/…`), lower case; empty when none.
fn subscription_of(id: &str) -> String {
    let mut segments = id.split('/').filter(|s| !s.is_empty());
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case("subscriptions") {
            return segments.next().unwrap_or_default().to_ascii_lowercase();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests;
