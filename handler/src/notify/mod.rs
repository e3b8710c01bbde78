//! Alerts: rendering findings for people and sending them to Teams (Workflows webhook with an
//! Adaptive Card), email (Azure Communication Services or SMTP) and a generic webhook
//! (CloudEvents signed per Standard Webhooks, [`webhook`]).
//!
//! The engine decides *whether* to alert (a change of state, a reminder) and *where* (routing
//! by severity, [`route`]); this module decides *what* the alert says and delivers it:
//! 1. build [`Notification`]s from findings (or a [`Digest`] for the sweep);
//! 2. render one [`Message`] per channel — plain serialisable data, so a failed send can be
//!    kept in the outbox and sent again later;
//! 3. [`Notifier::send`] it and record the [`Delivery`] as an Action.
//!
//! Secrets (webhook URLs with their `sig`, the SMTP password, tokens) never leave this module
//! in any text: logs, delivery reasons and Actions show only scheme and host.

mod acs;
mod email;
pub(crate) mod escape;
pub(crate) mod http;
mod model;
mod retry;
mod routing;
mod secret;
mod settings;
mod smtp;
mod teams;
mod webhook;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub use email::EmailContent;
pub(crate) use model::advice;
pub use model::{ActionNote, Alert, Change, DIGEST_WORST, DependentCounts, Digest, Notification};
pub use retry::RetryBudget;
pub use routing::{Channel, Routes};
pub use secret::{REDACTED, SecretUrl};
pub use settings::{EmailSettings, EmailTransport, NotifySettings, SmtpSettings};
pub use webhook::{CLOUDEVENTS_JSON, EVENT_TYPES, SecretError, WebhookEvent, WebhookSecret};

use crate::azure::TransportSettings;
use crate::config::ConfigError;
use crate::outcome::{Action, ActionKind, ActionResult};
use acs::AcsSender;
use http::post_json;
use retry::Failure;
use smtp::SmtpSender;

/// A rendered alert for one channel. It holds no secret and no address: the channel's URL
/// and recipients come from the configuration when it is sent, so a stored message follows a
/// rotated webhook URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum Message {
    /// The Workflows webhook body (Adaptive Card 1.5 in a `message`).
    Teams {
        payload: Value,
    },
    Email(EmailContent),
    /// The generic webhook's events, one per finding change, posted one by one.
    Webhook {
        events: Vec<WebhookEvent>,
    },
}

impl Message {
    /// The Teams card for `alert`.
    pub fn teams(alert: Alert<'_>) -> Self {
        Message::Teams {
            payload: teams::payload(alert),
        }
    }

    /// The email for `alert`.
    pub fn email(alert: Alert<'_>) -> Self {
        Message::Email(email::content(alert))
    }

    /// The generic webhook's events for `changes`, seen at `now`; their ids derive from
    /// `outbox_id`, so the same change always carries the same id.
    pub fn webhook(outbox_id: &str, changes: &[Notification], now: OffsetDateTime) -> Self {
        Message::Webhook {
            events: WebhookEvent::for_changes(outbox_id, changes, now),
        }
    }

    /// Renders `alert` for `channel`, to be stored under `outbox_id`. The webhook takes finding
    /// changes only: a digest is a summary for people and makes no event.
    pub fn for_channel(
        channel: Channel,
        alert: Alert<'_>,
        outbox_id: &str,
        now: OffsetDateTime,
    ) -> Self {
        match (channel, alert) {
            (Channel::Teams, alert) => Self::teams(alert.relative_to(now).as_alert()),
            (Channel::Email, alert) => Self::email(alert.relative_to(now).as_alert()),
            (Channel::Webhook, Alert::Changes(changes)) => Self::webhook(outbox_id, changes, now),
            (Channel::Webhook, Alert::Digest(_)) => Message::Webhook { events: Vec::new() },
        }
    }

    /// Which channel the message is for.
    pub fn channel(&self) -> Channel {
        match self {
            Message::Teams { .. } => Channel::Teams,
            Message::Email(_) => Channel::Email,
            Message::Webhook { .. } => Channel::Webhook,
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: Channel,
    #[serde(flatten)]
    pub status: DeliveryStatus,
}

/// Sent, or failed with a reason that is safe to store and show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Sent {
        detail: String,
    },
    Failed {
        reason: String,
        /// Whether the outbox should try again (throttling, outage) or a person must act
        /// (rejected card, unconfigured channel, refused TLS).
        retryable: bool,
    },
}

impl Delivery {
    /// Whether the message went out.
    pub fn is_sent(&self) -> bool {
        matches!(self.status, DeliveryStatus::Sent { .. })
    }

    /// The Outcome's record of this delivery for `rule`: kind `notify`, the channel as target.
    pub fn action(&self, rule: &str) -> Action {
        let (result, detail) = match &self.status {
            DeliveryStatus::Sent { detail } => (ActionResult::Sent, detail.clone()),
            DeliveryStatus::Failed { reason, .. } => (ActionResult::Failed, reason.clone()),
        };
        Action {
            kind: ActionKind::Notify,
            rule: rule.to_owned(),
            target: self.channel.as_str().to_owned(),
            result,
            detail,
        }
    }
}

/// How email leaves, once configured.
#[derive(Debug, Clone)]
enum EmailSender {
    Acs(AcsSender),
    Smtp(SmtpSender),
}

/// `alert` with its portal links on `cloud`'s portal (they are built on the public one).
fn on_portal(alert: Alert<'_>, cloud: crate::cloud::Cloud) -> model::OwnedAlert {
    let local = |n: &Notification| Notification {
        portal_url: n
            .portal_url
            .as_deref()
            .map(|url| cloud.localise_portal_link(url)),
        ..n.clone()
    };
    match alert {
        Alert::Changes(notifications) => {
            model::OwnedAlert::Changes(notifications.iter().map(local).collect())
        }
        Alert::Digest(digest) => model::OwnedAlert::Digest(Digest {
            worst: digest.worst.iter().map(local).collect(),
            ..digest.clone()
        }),
    }
}

/// Sends messages to the configured channels through the shared HTTP client.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    teams: Option<SecretUrl>,
    webhook: Option<SecretUrl>,
    webhook_secret: Option<WebhookSecret>,
    event_source: String,
    email: Option<EmailSender>,
    budget: RetryBudget,
    /// Everything to scrub from reasons: URLs, query values, the SMTP password.
    secrets: Vec<String>,
    /// The cloud whose portal the alerts link to.
    cloud: crate::cloud::Cloud,
}

/// Shows the channels as [`Notifier::describe`] does: never the secrets.
impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.describe())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// `http` is the shared client ([`crate::azure::transport::http_client`]); `transport`
    /// gives SMTP the same trusted roots and connection overrides; `credential` is the managed
    /// identity, needed only for ACS.
    pub fn new(
        settings: &NotifySettings,
        http: reqwest::Client,
        transport: &TransportSettings,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self, ConfigError> {
        let settings = settings.clone();
        let mut secrets = Vec::new();
        for url in settings.teams.iter().chain(settings.webhook.iter()) {
            secrets.extend(url.secret_parts());
        }
        if let Some(secret) = &settings.webhook_secret {
            secrets.push(secret.secret_text().to_owned());
        }
        let email = match settings.email {
            None => None,
            Some(EmailSettings {
                from,
                to,
                transport: EmailTransport::Acs { endpoint },
            }) => {
                let credential = credential.ok_or_else(|| ConfigError {
                    variable: "CMKGUARD_ACS_ENDPOINT",
                    message: "needs the managed identity credential, and none is available".into(),
                })?;
                let sender = AcsSender::new(&endpoint, credential, settings.cloud, from, to)
                    .map_err(|error| ConfigError {
                        variable: "CMKGUARD_ACS_ENDPOINT",
                        message: crate::text::chain(&error),
                    })?;
                Some(EmailSender::Acs(sender))
            }
            Some(EmailSettings {
                from,
                to,
                transport: EmailTransport::Smtp(smtp),
            }) => {
                if let Some(password) = &smtp.password {
                    secrets.push(password.secret().to_owned());
                }
                let sender =
                    SmtpSender::new(&smtp, transport, from, to).map_err(|error| ConfigError {
                        variable: error.variable(),
                        message: crate::text::chain(&error),
                    })?;
                Some(EmailSender::Smtp(sender))
            }
        };
        Ok(Self {
            http,
            teams: settings.teams,
            webhook: settings.webhook,
            webhook_secret: settings.webhook_secret,
            event_source: match settings.event_source {
                source if source.is_empty() => webhook::event_source(None),
                source => source,
            },
            email,
            budget: RetryBudget::default(),
            secrets,
            cloud: settings.cloud,
        })
    }

    /// Renders `alert` for `channel` as [`Message::for_channel`] does, with its portal links on
    /// the configured cloud's portal.
    pub fn message(
        &self,
        channel: Channel,
        alert: Alert<'_>,
        outbox_id: &str,
        now: OffsetDateTime,
    ) -> Message {
        let local = on_portal(alert, self.cloud);
        Message::for_channel(channel, local.as_alert(), outbox_id, now)
    }

    /// Changes how long and how often one send may try.
    pub fn with_retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Whether `channel` has a destination; routing to an unconfigured channel is not an error.
    pub fn is_configured(&self, channel: Channel) -> bool {
        match channel {
            Channel::Teams => self.teams.is_some(),
            Channel::Email => self.email.is_some(),
            Channel::Webhook => self.webhook.is_some(),
        }
    }

    /// One line per configured channel, for the startup log.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(url) = &self.teams {
            lines.push(format!("teams: {url}"));
        }
        match &self.email {
            Some(EmailSender::Acs(acs)) => lines.push(format!("email: ACS {acs}")),
            Some(EmailSender::Smtp(smtp)) => lines.push(format!("email: SMTP {smtp}")),
            None => {}
        }
        if let Some(url) = &self.webhook {
            let signed = if self.webhook_secret.is_some() {
                "signed"
            } else {
                "unsigned"
            };
            lines.push(format!(
                "webhook: {url} (CloudEvents from {}, {signed})",
                self.event_source
            ));
        }
        lines
    }

    /// Sends `message` to its channel. Never fails: the result says what happened, safe to
    /// log, store and show.
    pub async fn send(&self, message: &Message) -> Delivery {
        let channel = message.channel();
        let result = self.deliver(message).await;
        let status = match result {
            Ok(detail) => {
                tracing::info!(message = "Alert sent.", channel = %channel, detail = %detail);
                DeliveryStatus::Sent { detail }
            }
            Err((failure, extra_secret)) => {
                let mut secrets = self.secrets.clone();
                secrets.extend(extra_secret);
                let reason = crate::text::redact(&failure.reason, &secrets);
                tracing::warn!(
                    message = "Alert not sent.",
                    channel = %channel,
                    reason = %reason,
                    retryable = failure.retryable
                );
                DeliveryStatus::Failed {
                    reason,
                    retryable: failure.retryable,
                }
            }
        };
        Delivery { channel, status }
    }

    async fn deliver(&self, message: &Message) -> Result<String, (Failure, Option<String>)> {
        let not_configured =
            |variable: &str| (Failure::permanent(format!("{variable} is not set")), None);
        match message {
            Message::Teams { payload } => {
                let url = self
                    .teams
                    .as_ref()
                    .ok_or_else(|| not_configured("CMKGUARD_TEAMS_WEBHOOK_URL"))?;
                self.post(url, payload).await
            }
            Message::Webhook { events } => {
                let url = self
                    .webhook
                    .as_ref()
                    .ok_or_else(|| not_configured("CMKGUARD_WEBHOOK_URL"))?;
                self.post_events(url, events).await
            }
            Message::Email(content) => match &self.email {
                None => Err(not_configured("CMKGUARD_EMAIL_TO")),
                Some(EmailSender::Acs(acs)) => acs.send(&self.http, content, self.budget).await,
                Some(EmailSender::Smtp(smtp)) => smtp
                    .send(content, self.budget)
                    .await
                    .map_err(|failure| (failure, None)),
            },
        }
    }

    /// POSTs each event in order; the first failure fails the message, which the outbox sends
    /// again whole (receivers drop the repeats by `webhook-id`).
    async fn post_events(
        &self,
        url: &SecretUrl,
        events: &[WebhookEvent],
    ) -> Result<String, (Failure, Option<String>)> {
        let mut last = None;
        for event in events {
            let body = event.cloud_event(&self.event_source).map_err(|e| {
                (
                    Failure::permanent(format!("cannot encode the event: {e}")),
                    None,
                )
            })?;
            let timestamp = OffsetDateTime::now_utc().unix_timestamp();
            let headers =
                webhook::headers(self.webhook_secret.as_ref(), &event.id, timestamp, &body);
            let posted = post_json(&self.http, url.expose(), &headers, &body, self.budget)
                .await
                .map_err(|failure| (failure, None))?;
            last = Some(posted.status.as_u16());
        }
        Ok(match last {
            Some(status) => format!("HTTP {status} from {url} ({} event(s))", events.len()),
            None => "no finding change, no event".to_owned(),
        })
    }

    async fn post(
        &self,
        url: &SecretUrl,
        body: &Value,
    ) -> Result<String, (Failure, Option<String>)> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            (
                Failure::permanent(format!("cannot encode the body: {e}")),
                None,
            )
        })?;
        let posted = post_json(
            &self.http,
            url.expose(),
            &reqwest::header::HeaderMap::new(),
            &bytes,
            self.budget,
        )
        .await
        .map_err(|failure| (failure, None))?;
        Ok(format!("HTTP {} from {url}", posted.status.as_u16()))
    }
}
