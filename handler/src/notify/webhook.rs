//! The generic webhook: one [CloudEvents 1.0] structured-mode event per finding change, signed
//! per [Standard Webhooks] when `CMKGUARD_WEBHOOK_SECRET` is set.
//!
//! A [`WebhookEvent`] is what the outbox stores (id, time, the change); the envelope is put
//! around it when it is sent, with the `source` of the running app. The id is derived from the
//! outbox id (itself derived from the state transitions the alert reports) and the finding, so
//! a retry of the same change carries the same `id` and receivers can drop duplicates.
//!
//! [CloudEvents 1.0]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

use std::fmt;

use azure_core::credentials::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use super::model::{ActionNote, Change, Notification};
use crate::outcome::{FindingState, Severity};

/// The structured-mode media type of one CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Every `type` cmk-guard sends, one per [`Change`].
pub const EVENT_TYPES: [&str; 4] = [
    "com.cmk-guard.finding.opened",
    "com.cmk-guard.finding.escalated",
    "com.cmk-guard.finding.resolved",
    "com.cmk-guard.finding.reminder",
];
/// The Standard Webhooks secret prefix.
const SECRET_PREFIX: &str = "whsec_";
/// The spec asks for keys of 24 to 64 random bytes; shorter ones are refused.
const MIN_KEY_BYTES: usize = 24;

/// One finding change as the outbox keeps it; [`WebhookEvent::cloud_event`] wraps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// The CloudEvents `id` and the Standard Webhooks `webhook-id`.
    pub id: String,
    /// When the change was seen.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub change: Notification,
}

/// A CloudEvents 1.0 structured-mode event; the field order is the order on the wire.
#[derive(Debug, Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    #[serde(rename = "type")]
    event_type: &'static str,
    source: &'a str,
    id: &'a str,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    data: EventData<'a>,
}

/// `data`: what changed, the finding as it is now, and the same advice the cards and emails
/// give.
#[derive(Debug, Serialize)]
struct EventData<'a> {
    change: &'a Change,
    finding: FindingData<'a>,
    advice: Advice<'a>,
}

/// What the finding means and what to do, as every message about it says.
#[derive(Debug, Serialize)]
struct Advice<'a> {
    problem: &'a str,
    why: Option<&'static str>,
    /// What cmk-guard does about it (fixes it, would fix it in remediate mode, needs a person).
    does: &'static str,
    /// The `az` command that fixes it, with the real names, where one exists.
    fix_command: Option<String>,
    doc_url: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct FindingData<'a> {
    rule: &'a str,
    resource: &'a str,
    workspace: &'a str,
    severity: Severity,
    state: FindingState,
    observed: &'a str,
    expected: &'a str,
    /// The remediation taken (or, in `alert` mode, planned); `null` when there is none.
    action: Option<&'a ActionNote>,
    portal_url: Option<&'a str>,
}

impl WebhookEvent {
    /// The events of one outbox message: one per change, ids from `outbox_id` and the finding.
    pub fn for_changes(
        outbox_id: &str,
        changes: &[Notification],
        now: OffsetDateTime,
    ) -> Vec<Self> {
        changes
            .iter()
            .map(|change| {
                let name = format!(
                    "{outbox_id}|{}|{}|{}",
                    change.workspace.to_ascii_lowercase(),
                    change.rule,
                    change.resource.to_ascii_lowercase()
                );
                WebhookEvent {
                    id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string(),
                    time: now,
                    change: change.clone(),
                }
            })
            .collect()
    }

    /// The `type` for this change (one of [`EVENT_TYPES`]).
    pub fn event_type(&self) -> &'static str {
        match self.change.change {
            Change::New => EVENT_TYPES[0],
            Change::Escalated { .. } => EVENT_TYPES[1],
            Change::Resolved => EVENT_TYPES[2],
            Change::Reminder => EVENT_TYPES[3],
        }
    }

    /// The JSON body of the POST: the event in structured mode, `source` from the running app.
    pub fn cloud_event(&self, source: &str) -> Result<Vec<u8>, serde_json::Error> {
        let note = &self.change;
        let state = if note.change == Change::Resolved {
            FindingState::Resolved
        } else {
            FindingState::Open
        };
        let time = self
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        serde_json::to_vec(&CloudEvent {
            specversion: "1.0",
            event_type: self.event_type(),
            source,
            id: &self.id,
            time,
            subject: &note.workspace,
            datacontenttype: "application/json",
            data: EventData {
                change: &note.change,
                finding: FindingData {
                    rule: &note.rule,
                    resource: &note.resource,
                    workspace: &note.workspace,
                    severity: note.severity,
                    state,
                    observed: &note.observed,
                    expected: &note.expected,
                    action: note.action.as_ref(),
                    portal_url: note.portal_url.as_deref(),
                },
                advice: Advice {
                    problem: note.problem(),
                    why: note.why(),
                    does: note.does(),
                    fix_command: note.fix_command(),
                    doc_url: note.doc_url(),
                },
            },
        })
    }
}

/// `/cmk-guard/<app>`: the CloudEvents `source`, from the Function App's name
/// (`WEBSITE_SITE_NAME`, set by the platform), `local` elsewhere. Only URI-safe characters
/// are kept.
pub fn event_source(app: Option<&str>) -> String {
    let app: String = app
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if app.is_empty() {
        "/cmk-guard/local".to_owned()
    } else {
        format!("/cmk-guard/{app}")
    }
}

/// A Standard Webhooks secret (`whsec_` + base64 of the key). `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Secret);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

/// Why a `CMKGUARD_WEBHOOK_SECRET` value is refused; never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("does not start with `whsec_` (a Standard Webhooks secret is `whsec_` + base64 key)")]
    Prefix,
    #[error("the part after `whsec_` is not valid base64")]
    Base64,
    #[error("the key is {0} bytes; at least {MIN_KEY_BYTES} random bytes are needed")]
    Short(usize),
}

impl WebhookSecret {
    /// Checks the format once, at start, so a bad secret is a configuration error.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Base64)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::Short(key.len()));
        }
        Ok(Self(Secret::new(encoded.to_owned())))
    }

    /// The text to scrub from any error, in case a receiver echoes it.
    pub(crate) fn secret_text(&self) -> &str {
        self.0.secret()
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the `webhook-signature` value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // The key was decoded in `parse`; it decodes the same way now.
        let key = BASE64.decode(self.0.secret()).unwrap_or_default();
        signature(&key, id, timestamp, body)
    }
}

fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The headers of one POST: the CloudEvents media type, and the Standard Webhooks headers
/// when a secret is set (`timestamp` is this attempt's, in Unix seconds).
pub fn headers(secret: Option<&WebhookSecret>, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_JSON));
    if let Some(secret) = secret {
        let values = [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", secret.sign(id, timestamp, body)),
        ];
        for (name, value) in values {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RuleId;
    use crate::outcome::{Action, ActionKind, ActionResult, Finding};
    use serde_json::Value;

    const WORKSPACE: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ml/providers/Microsoft.MachineLearningServices/workspaces/ws1";
    const VAULT: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ml/providers/Microsoft.KeyVault/vaults/kv1";

    /// The Standard Webhooks reference libraries' test vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn note(change: Change) -> Notification {
        let finding = Finding {
            rule: RuleId::VaultPurgeProtection,
            resource: VAULT.to_owned(),
            workspace: WORKSPACE.to_owned(),
            severity: Severity::Critical,
            state: FindingState::Open,
            observed: "purge protection off".to_owned(),
            expected: "purge protection on".to_owned(),
        };
        Notification::from_finding(&finding, change, None).with_action(&Action {
            kind: ActionKind::Remediate,
            rule: "vault.purge-protection".to_owned(),
            target: VAULT.to_owned(),
            result: ActionResult::Planned,
            detail: "enable purge protection".to_owned(),
        })
    }

    #[test]
    fn signs_the_spec_test_vector() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn refuses_malformed_secrets_without_quoting_them() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not*base64!").unwrap_err(),
            SecretError::Base64
        );
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Short(5)
        );
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("MfKQ9r8"));
    }

    #[test]
    fn one_event_per_change_with_stable_ids() {
        let now = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        let changes = [note(Change::New), {
            let mut other = note(Change::Resolved);
            other.rule = "workspace.key-access".to_owned();
            other.action = None;
            other
        }];
        let events = WebhookEvent::for_changes("outbox-1", &changes, now);
        assert_eq!(events.len(), 2);
        assert_ne!(events[0].id, events[1].id);
        assert_eq!(events, WebhookEvent::for_changes("outbox-1", &changes, now));
        assert_ne!(
            events[0].id,
            WebhookEvent::for_changes("outbox-2", &changes, now)[0].id
        );

        let body: Value =
            serde_json::from_slice(&events[0].cloud_event("/cmk-guard/app").unwrap()).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["type"], "com.cmk-guard.finding.opened");
        assert_eq!(body["source"], "/cmk-guard/app");
        assert_eq!(body["id"], events[0].id.as_str());
        assert_eq!(body["time"], "2026-05-28T20:26:40Z");
        assert_eq!(body["subject"], WORKSPACE);
        assert_eq!(body["datacontenttype"], "application/json");
        assert_eq!(body["data"]["change"]["kind"], "new");
        assert_eq!(body["data"]["finding"]["state"], "open");
        assert_eq!(body["data"]["finding"]["severity"], "critical");
        assert_eq!(body["data"]["finding"]["action"]["result"], "planned");
        let advice = &body["data"]["advice"];
        assert!(
            advice["why"].as_str().is_some_and(|s| !s.is_empty()),
            "{advice}"
        );
        assert!(
            advice["does"].as_str().is_some_and(|s| !s.is_empty()),
            "{advice}"
        );
        assert!(
            advice["fix_command"]
                .as_str()
                .is_some_and(|c| c.starts_with("az ") && c.contains("kv1")),
            "{advice}"
        );
        assert!(
            advice["doc_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://"))
        );
        let resolved: Value =
            serde_json::from_slice(&events[1].cloud_event("/cmk-guard/app").unwrap()).unwrap();
        assert_eq!(resolved["type"], "com.cmk-guard.finding.resolved");
        assert_eq!(resolved["data"]["finding"]["state"], "resolved");
        assert_eq!(resolved["data"]["advice"]["fix_command"], Value::Null);
    }

    #[test]
    fn every_change_has_a_documented_type() {
        let types: Vec<&str> = [
            Change::New,
            Change::Escalated {
                from: Severity::High,
            },
            Change::Resolved,
            Change::Reminder,
        ]
        .into_iter()
        .map(|change| {
            WebhookEvent::for_changes("o", &[note(change)], OffsetDateTime::UNIX_EPOCH)[0]
                .event_type()
        })
        .collect();
        assert_eq!(types, EVENT_TYPES);
        let docs = include_str!("../../../docs/alerts.md");
        for event_type in EVENT_TYPES {
            assert!(docs.contains(event_type), "{event_type} in docs/alerts.md");
        }
    }

    #[test]
    fn source_is_the_app_name_or_local() {
        assert_eq!(
            event_source(Some("func-cmk-prod")),
            "/cmk-guard/func-cmk-prod"
        );
        assert_eq!(event_source(Some("a/b c")), "/cmk-guard/abc");
        assert_eq!(event_source(None), "/cmk-guard/local");
    }

    #[test]
    fn headers_carry_the_signature_only_with_a_secret() {
        let plain = headers(None, "id-1", 1, b"{}");
        assert_eq!(plain[CONTENT_TYPE], CLOUDEVENTS_JSON);
        assert!(plain.get("webhook-signature").is_none());
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let signed = headers(Some(&secret), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes());
        assert_eq!(signed["webhook-id"], SPEC_ID);
        assert_eq!(signed["webhook-timestamp"], "1614265330");
        assert_eq!(signed["webhook-signature"], SPEC_SIGNATURE);
    }
}
