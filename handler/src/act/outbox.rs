//! Alerts through the outbox: each message is enqueued (its id derived from the transitions it
//! reports) before it is sent, so a crash or a failed send loses nothing and a repeated
//! invocation sends nothing twice; failed sends are retried by later invocations.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::Actor;
use crate::notify::{self, Alert, Message};
use crate::outcome::{Action, Finding, FindingState, Outcome, Severity};
use crate::plan;
use crate::policy::Policy;
use crate::settings::Mode;
use crate::state::{OutboxMessage, StateError};

/// How long an outbox item handed to a sender stays with it.
const OUTBOX_LEASE: Duration = Duration::minutes(1);
/// When a failed send is tried again.
const OUTBOX_RETRY: Duration = Duration::minutes(1);
/// Outbox items retried per invocation, so an outage backlog cannot stall an event.
const OUTBOX_BATCH: usize = 10;
/// How often one instance looks for due outbox items: nothing is due sooner than
/// [`OUTBOX_RETRY`] after a failure, so looking on every event would only cost a store write.
const OUTBOX_CHECK_INTERVAL: Duration = Duration::seconds(10);

impl Actor {
    /// One message per routed channel and workspace (the webhook: one per channel, its events
    /// one per change), so every card and email is titled by its workspace and an email threads
    /// with that workspace's earlier ones: enqueued first (id from the transitions it reports),
    /// then sent; a failure stays in the outbox for the next invocation.
    pub(super) async fn send_alerts(
        &self,
        outcome: &mut Outcome,
        alerts: &[(notify::Notification, String)],
        policy: &Policy,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        let routes = notify::Routes::from(&policy.notify);
        // Counted once for the batch, before it is split by channel and workspace.
        let alerts = &self.dependents.annotate(alerts).await;
        for (channel, routed) in routes.by_channel(alerts, |(note, _)| note.severity) {
            if !self.notifier.is_configured(channel) {
                continue;
            }
            for alerts in per_workspace(channel, routed) {
                let identity: Vec<&str> = alerts.iter().map(|(_, id)| id.as_str()).collect();
                let id = uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    format!("{channel}|{}", identity.join(";")).as_bytes(),
                )
                .to_string();
                let batch: Vec<notify::Notification> =
                    alerts.iter().map(|(note, _)| note.clone()).collect();
                let message = self
                    .notifier
                    .message(channel, Alert::Changes(&batch), &id, now);
                let rule = batch.first().map(|n| n.rule.clone()).unwrap_or_default();
                if let Some(action) = self
                    .enqueue_and_send(&id, channel, &message, &rule, now)
                    .await?
                {
                    if action.result == crate::outcome::ActionResult::Sent {
                        outcome
                            .alerted
                            .extend(batch.iter().map(|n| crate::outcome::Alerted {
                                workspace: n.workspace.clone(),
                                rule: n.rule.clone(),
                                resource: n.resource.clone(),
                                channel: channel.as_str().to_owned(),
                            }));
                    }
                    outcome.actions.push(action);
                }
            }
        }
        Ok(())
    }

    /// Writes the message to the outbox, then sends it. `None` when the outbox already had it
    /// (another invocation made the same alert).
    async fn enqueue_and_send(
        &self,
        id: &str,
        channel: notify::Channel,
        message: &Message,
        rule: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Action>, StateError> {
        let item = OutboxMessage {
            id: id.to_owned(),
            channel: channel.as_str().to_owned(),
            payload: serde_json::to_value(message).unwrap_or_default(),
        };
        if !self
            .store
            .enqueue_notification(&item, now, now + OUTBOX_LEASE)
            .await?
        {
            return Ok(None);
        }
        self.deliver(id, message, rule, now).await.map(Some)
    }

    /// The sweep's digest (counts by severity, the worst findings) to every configured channel,
    /// through the outbox like any alert, when [`plan::digest_window`] finds one due over the
    /// findings open now (after the sweep acted, so its own alerts count as told). The digest's
    /// id names its interval: the outbox refuses it a second time, so at most one goes out per
    /// interval whichever instance runs the sweep.
    pub async fn send_digest(
        &self,
        outcome: &mut Outcome,
        digest: &notify::Digest,
        policy: &Policy,
        mode: Mode,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        if mode == Mode::Observe {
            return Ok(());
        }
        let open: Vec<plan::Prior> = self
            .store
            .open_findings()
            .await?
            .iter()
            .map(super::prior)
            .collect();
        let Some(window) = plan::digest_window(&open, &policy.notify, mode, now) else {
            return Ok(());
        };
        // An id the store can always write: a window that cannot be formatted is its seconds.
        let window = window
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| window.unix_timestamp().to_string());
        // Each listed finding says what cmk-guard does about it, as its own alert said.
        let digest = &digest.clone().handled(
            |n| {
                n.rule_id()
                    .is_some_and(|rule| policy.allows_remediation(rule))
            },
            mode == Mode::Remediate,
        );
        let routes = notify::Routes::from(&policy.notify);
        for channel in routes.routed().filter(notify::Channel::takes_digest) {
            if !self.notifier.is_configured(channel) {
                continue;
            }
            let id = format!("digest|{window}|{channel}");
            let message = self
                .notifier
                .message(channel, Alert::Digest(digest), &id, now);
            if let Some(action) = self
                .enqueue_and_send(&id, channel, &message, "digest", now)
                .await?
            {
                outcome.actions.push(action);
            }
        }
        Ok(())
    }

    /// Sends one stored message and records the result in the outbox.
    #[tracing::instrument(name = "notification", level = "info", skip_all, fields(rule = %rule, channel = tracing::field::Empty, result = tracing::field::Empty))]
    async fn deliver(
        &self,
        id: &str,
        message: &Message,
        rule: &str,
        now: OffsetDateTime,
    ) -> Result<Action, StateError> {
        let delivery = self.notifier.send(message).await;
        if delivery.is_sent() {
            self.store.mark_notification_sent(id, now).await?;
        } else if let notify::DeliveryStatus::Failed { reason, .. } = &delivery.status {
            self.store
                .reschedule_notification(id, now + OUTBOX_RETRY, reason)
                .await?;
        }
        let action = delivery.action(rule);
        let span = tracing::Span::current();
        span.record("channel", action.target.as_str());
        span.record("result", action.result.as_str());
        Ok(action)
    }

    /// Retries what earlier invocations could not send, looking at most every
    /// [`OUTBOX_CHECK_INTERVAL`].
    pub(super) async fn flush_outbox(
        &self,
        outcome: &mut Outcome,
        now: OffsetDateTime,
    ) -> Result<(), StateError> {
        {
            let mut checked = self
                .outbox_checked
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A clock that went back counts as due.
            if checked.is_some_and(|at| at <= now && now - at < OUTBOX_CHECK_INTERVAL) {
                return Ok(());
            }
            *checked = Some(now);
        }
        for item in self
            .store
            .claim_due_notifications(now, OUTBOX_LEASE, OUTBOX_BATCH)
            .await?
        {
            let id = item.notification.id.clone();
            match serde_json::from_value::<Message>(item.notification.payload.clone()) {
                Ok(message) => {
                    let action = self.deliver(&id, &message, "outbox", now).await?;
                    outcome.actions.push(action);
                }
                Err(error) => {
                    self.store
                        .reschedule_notification(
                            &id,
                            now + Duration::days(365),
                            &format!("unreadable payload: {error}"),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// A channel's notifications as messages: for people (Teams, email) one per workspace, in the
/// order the workspaces first appear, so a title and a thread name one workspace; the webhook
/// keeps one message per invocation (its events are one per change either way, and their ids
/// stay what they were).
fn per_workspace(
    channel: notify::Channel,
    routed: Vec<&(notify::Notification, String)>,
) -> Vec<Vec<&(notify::Notification, String)>> {
    if channel == notify::Channel::Webhook {
        return vec![routed];
    }
    let mut batches: Vec<Vec<&(notify::Notification, String)>> = Vec::new();
    for alert in routed {
        match batches.iter_mut().find(|b| {
            b.first()
                .is_some_and(|(n, _)| n.workspace == alert.0.workspace)
        }) {
            Some(batch) => batch.push(alert),
            None => batches.push(vec![alert]),
        }
    }
    batches
}

/// Adds a chunk's findings to a sweep's running digest: counts add up, the worst findings
/// stay listed (at most [`notify::DIGEST_WORST`]), workspaces are counted once (a sweep visits
/// each once).
pub fn merge_digest(previous: Option<notify::Digest>, findings: &[Finding]) -> notify::Digest {
    let chunk = notify::Digest::from_notifications(
        findings
            .iter()
            .filter(|f| f.state == FindingState::Open)
            .map(|f| notify::Notification::from_finding(f, notify::Change::Reminder, None))
            .collect(),
    );
    let Some(previous) = previous else {
        return chunk;
    };
    let mut counts: BTreeMap<Severity, usize> = previous.open.iter().copied().collect();
    for (severity, count) in &chunk.open {
        *counts.entry(*severity).or_default() += count;
    }
    let mut worst = previous.worst;
    worst.extend(chunk.worst);
    worst.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.workspace.cmp(&b.workspace))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    let total: usize = counts.values().sum();
    worst.truncate(notify::DIGEST_WORST);
    notify::Digest {
        open: counts.into_iter().rev().filter(|(_, c)| *c > 0).collect(),
        resolved: previous.resolved + chunk.resolved,
        workspaces: previous.workspaces + chunk.workspaces,
        omitted: total - worst.len(),
        worst,
    }
}
