//! The Azure Blob backend: one container shared by every instance. Exactly-once decisions use
//! the service's conditional writes: a claim is a blob created with `If-None-Match: *` (a
//! second create fails with 409), a record update is a write with `If-Match: <ETag>` (a stale
//! ETag fails with 412).
//!
//! Every blob holds `{"writer": <random id of this write>, "value": …}`. When a conditional
//! write fails, the store reads the blob back: if it holds this write's id, an earlier try of
//! the same request (retried by the SDK after a lost response) already succeeded, and the
//! write counts as won instead of being mistaken for someone else's.
//!
//! Layout (names are SHA-256 hex of user-controlled keys, see `docs/state.md`):
//! `events/{id}`, `findings/{workspace}/{rule+resource}`, `attempts/{resource}/{time}-{uuid}`,
//! `remediations/{resource+rule}`, `audit/{time}-{uuid}`, `outbox/{id}`, `cursors/sweep`.
//! Times in names are zero-padded UTC nanoseconds, so names sort by time and listing a prefix
//! answers time-range questions without downloading the blobs.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind as AzureErrorKind;
use azure_core::http::{
    ClientOptions, Etag, ExponentialRetryOptions, RequestContent, RetryOptions, Transport,
};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures_util::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::spec::BlobLocation;
use super::{
    ATTEMPT_RETENTION, AuditEntry, CompareAndSet, EVENT_CLAIM_RETENTION, FindingKey, FindingRecord,
    OutboxItem, OutboxMessage, RemediationAttempt, Result, SENT_NOTIFICATION_RETENTION, StateError,
    StateErrorKind, StateStore, Version, Versioned, digest,
};
use crate::outcome::FindingState;

use container::{Condition, Listed, contended, sas_secrets};
use names::{
    earlier, finding_name, later, metadata_time, name_time, nanos_text, state_label, timed_name,
};

mod container;
mod names;
#[cfg(test)]
mod tests;

/// How many blobs are downloaded at once when a listing needs their contents.
const PARALLEL_READS: usize = 8;
/// The listing metadata of an attempt blob naming its rule (SHA-256 hex, as in blob names), so
/// that counting one rule's attempts needs no downloads.
const ATTEMPT_RULE: &str = "rule";
/// The listing metadata of a finding blob naming its state (`open` or `resolved`), so that
/// listing the open findings downloads only those.
const FINDING_STATE: &str = "state";
/// How often a read-modify-write is retried when another writer changes the blob in between.
const CONTENDED_RETRIES: usize = 5;

/// Retries of one request (429, 5xx, lost connections) stay well inside Event Grid's 30-second
/// budget, so an unreachable store fails the invocation in time for a redelivery.
fn request_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: Duration::milliseconds(200),
        max_retries: 3,
        max_total_elapsed: Duration::seconds(10),
        max_delay: Duration::seconds(4),
    })
}

/// The Blob store.
pub struct BlobStore {
    container: BlobContainerClient,
    /// The container URL without a SAS, for messages.
    shown: String,
    /// Strings that must never appear in a message: the SAS query and its signature.
    secrets: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventClaim {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    claimed_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredFinding {
    key: FindingKey,
    record: FindingRecord,
}

#[derive(Debug, Serialize, Deserialize)]
struct RemediationClaim {
    resource: String,
    rule: String,
    owner: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredNotification {
    item: OutboxItem,
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
}

impl StoredNotification {
    /// Listing metadata, so that due and prunable items are found without downloads.
    fn metadata(&self) -> Result<HashMap<String, String>> {
        let mut metadata = HashMap::from([
            ("enqueued_at".to_owned(), nanos_text(self.item.enqueued_at)?),
            (
                "next_attempt_at".to_owned(),
                nanos_text(self.item.next_attempt_at)?,
            ),
        ]);
        match self.sent_at {
            Some(sent_at) => {
                metadata.insert("state".into(), "sent".into());
                metadata.insert("sent_at".into(), nanos_text(sent_at)?);
            }
            None => {
                metadata.insert("state".into(), "pending".into());
            }
        }
        Ok(metadata)
    }
}

/// The learned names of managed resource groups, beside the sweep cursor.
const MANAGED_GROUPS: &str = "cursors/managed-groups";
/// How often a conditional merge of that set is tried against concurrent writers.
const MERGE_TRIES: usize = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    value: String,
}

impl BlobStore {
    /// Builds the client on the shared transport, with `credential` unless the URL carries a
    /// SAS. Nothing is sent yet, so opening does not slow the start.
    pub fn open(
        location: BlobLocation,
        transport: Transport,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self> {
        let credential = match location.sas() {
            Some(_) => None,
            None => Some(credential),
        };
        let secrets = location.sas().map(sas_secrets).unwrap_or_default();
        let shown = location.container_url().to_string();
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                transport: Some(transport),
                retry: request_retry(),
                ..ClientOptions::default()
            },
            ..BlobContainerClientOptions::default()
        };
        let container = BlobContainerClient::new(location.request_url(), credential, Some(options))
            .map_err(|e| {
                StateError::new(
                    StateErrorKind::Config,
                    format!(
                        "CMKGUARD_STATE: {shown}: {}",
                        crate::text::redact(&crate::text::chain(&e), &secrets)
                    ),
                )
            })?;
        Ok(Self {
            container,
            shown,
            secrets,
        })
    }

    fn notification_name(id: &str) -> String {
        format!("outbox/{}", digest(&[id]))
    }

    /// Reads an unsent notification and writes `change(item)` back at its ETag, retrying when
    /// another writer changed it in between. Unknown and sent items are left alone.
    async fn update_notification(
        &self,
        id: &str,
        change: impl Fn(&mut StoredNotification) -> Result<()>,
    ) -> Result<()> {
        let name = Self::notification_name(id);
        for _ in 0..CONTENDED_RETRIES {
            let Some((mut stored, _, etag)) = self.read::<StoredNotification>(&name).await? else {
                return Ok(());
            };
            if stored.sent_at.is_some() {
                return Ok(());
            }
            change(&mut stored)?;
            let metadata = stored.metadata()?;
            if self
                .write(&name, stored, Condition::Matches(etag), metadata)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(contended(&self.shown, &name))
    }
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("container", &self.shown)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateStore for BlobStore {
    async fn claim_event(&self, event_id: &str, now: OffsetDateTime) -> Result<bool> {
        let claim = EventClaim {
            id: event_id.to_owned(),
            claimed_at: now,
        };
        let metadata = HashMap::from([("claimed_at".to_owned(), nanos_text(now)?)]);
        let name = format!("events/{}", digest(&[event_id]));
        Ok(self
            .write(&name, claim, Condition::Absent, metadata)
            .await?
            .is_some())
    }

    async fn event_claimed(&self, event_id: &str) -> Result<bool> {
        let name = format!("events/{}", digest(&[event_id]));
        Ok(self.read::<EventClaim>(&name).await?.is_some())
    }

    async fn finding(&self, key: &FindingKey) -> Result<Option<Versioned<FindingRecord>>> {
        Ok(self
            .read::<StoredFinding>(&finding_name(key))
            .await?
            .map(|(stored, _, etag)| Versioned {
                value: stored.record,
                version: Version::new(etag),
            }))
    }

    async fn workspace_findings(
        &self,
        workspace: &str,
    ) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>> {
        let prefix = format!("findings/{}/", digest(&[workspace]));
        let names = self
            .list(&prefix)
            .await?
            .into_iter()
            .map(|listed| listed.name)
            .collect();
        let mut findings = self.read_findings(names).await?;
        findings.sort_by(|(a, _), (b, _)| (&a.rule, &a.resource).cmp(&(&b.rule, &b.resource)));
        Ok(findings)
    }

    async fn open_findings(&self) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>> {
        // Findings written before the state label say their state only in the blob.
        let names = self
            .list("findings/")
            .await?
            .into_iter()
            .filter(|listed| {
                listed.metadata.get(FINDING_STATE).map(String::as_str)
                    != Some(state_label(FindingState::Resolved))
            })
            .map(|listed| listed.name)
            .collect();
        let mut findings = self.read_findings(names).await?;
        findings.retain(|(_, record)| record.value.state == FindingState::Open);
        findings.sort_by(|(a, _), (b, _)| {
            (&a.workspace, &a.rule, &a.resource).cmp(&(&b.workspace, &b.rule, &b.resource))
        });
        Ok(findings)
    }

    async fn put_finding(
        &self,
        key: &FindingKey,
        record: &FindingRecord,
        expected: Option<&Version>,
    ) -> Result<CompareAndSet> {
        let condition = match expected {
            Some(version) => Condition::Matches(Etag::from(version.as_str())),
            None => Condition::Absent,
        };
        let stored = StoredFinding {
            key: key.clone(),
            record: record.clone(),
        };
        let metadata = HashMap::from([(
            FINDING_STATE.to_owned(),
            state_label(record.state).to_owned(),
        )]);
        Ok(
            match self
                .write(&finding_name(key), stored, condition, metadata)
                .await?
            {
                Some(etag) => CompareAndSet::Won(Version::new(etag)),
                None => CompareAndSet::Lost,
            },
        )
    }

    async fn record_attempt(&self, attempt: &RemediationAttempt) -> Result<()> {
        let name = timed_name(
            &format!("attempts/{}", digest(&[&attempt.resource])),
            attempt.at,
        )?;
        let metadata = HashMap::from([(ATTEMPT_RULE.to_owned(), digest(&[&attempt.rule]))]);
        self.write(&name, attempt.clone(), Condition::Always, metadata)
            .await?;
        Ok(())
    }

    async fn count_rule_attempts(
        &self,
        resource: &str,
        rule: &str,
        since: OffsetDateTime,
    ) -> Result<u32> {
        let prefix = format!("attempts/{}/", digest(&[resource]));
        let wanted = digest(&[rule]);
        let mut count = 0usize;
        let mut unlabelled = Vec::new();
        for listed in self.list(&prefix).await? {
            if name_time(&listed.name).is_none_or(|at| at < since) {
                continue;
            }
            match listed.metadata.get(ATTEMPT_RULE) {
                Some(label) => count += usize::from(*label == wanted),
                None => unlabelled.push(listed.name),
            }
        }
        // Attempts recorded before the rule was put in the metadata say it only in the blob.
        count += self
            .read_all::<RemediationAttempt>(unlabelled)
            .await?
            .iter()
            .filter(|(_, attempt, _)| attempt.rule == rule)
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn count_attempts(&self, resource: &str, since: OffsetDateTime) -> Result<u32> {
        let prefix = format!("attempts/{}/", digest(&[resource]));
        let count = self
            .list(&prefix)
            .await?
            .iter()
            .filter(|listed| name_time(&listed.name).is_some_and(|at| at >= since))
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn claim_remediation(
        &self,
        resource: &str,
        rule: &str,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<bool> {
        let name = format!("remediations/{}", digest(&[resource, rule]));
        let expires_at = later(now, lease)?;
        let claim = || RemediationClaim {
            resource: resource.to_owned(),
            rule: rule.to_owned(),
            owner: owner.to_owned(),
            expires_at,
        };
        let metadata = HashMap::from([("expires_at".to_owned(), nanos_text(expires_at)?)]);
        for _ in 0..CONTENDED_RETRIES {
            if self
                .write(&name, claim(), Condition::Absent, metadata.clone())
                .await?
                .is_some()
            {
                return Ok(true);
            }
            let Some((current, _, etag)) = self.read::<RemediationClaim>(&name).await? else {
                // Released between our create and our read: try to create again.
                continue;
            };
            if current.owner != owner && current.expires_at > now {
                return Ok(false);
            }
            return Ok(self
                .write(&name, claim(), Condition::Matches(etag), metadata)
                .await?
                .is_some());
        }
        Err(contended(&self.shown, &name))
    }

    async fn release_remediation(&self, resource: &str, rule: &str, owner: &str) -> Result<()> {
        let name = format!("remediations/{}", digest(&[resource, rule]));
        if let Some((current, _, etag)) = self.read::<RemediationClaim>(&name).await?
            && current.owner == owner
        {
            self.delete(&name, Some(etag)).await?;
        }
        Ok(())
    }

    async fn append_audit(&self, at: OffsetDateTime, record: &str) -> Result<()> {
        // Kept as a JSON value inside the blob's entry, as older entries are.
        let record = serde_json::from_str(record).map_err(|e| {
            StateError::new(
                StateErrorKind::Permanent,
                format!("the audit record is not JSON: {e}"),
            )
        })?;
        let entry = AuditEntry { at, record };
        self.write(
            &timed_name("audit", at)?,
            entry,
            Condition::Always,
            HashMap::new(),
        )
        .await?;
        Ok(())
    }

    async fn audit_since(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>> {
        let mut names: Vec<String> = self
            .list("audit/")
            .await?
            .into_iter()
            .map(|listed| listed.name)
            .filter(|name| name_time(name).is_some_and(|at| at >= since))
            .collect();
        names.sort();
        Ok(self
            .read_all::<AuditEntry>(names)
            .await?
            .into_iter()
            .map(|(_, entry, _)| entry)
            .collect())
    }

    async fn enqueue_notification(
        &self,
        notification: &OutboxMessage,
        now: OffsetDateTime,
        next_attempt_at: OffsetDateTime,
    ) -> Result<bool> {
        let stored = StoredNotification {
            item: OutboxItem {
                notification: notification.clone(),
                enqueued_at: now,
                next_attempt_at,
                attempts: 0,
                last_error: None,
            },
            sent_at: None,
        };
        let metadata = stored.metadata()?;
        Ok(self
            .write(
                &Self::notification_name(&notification.id),
                stored,
                Condition::Absent,
                metadata,
            )
            .await?
            .is_some())
    }

    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxItem>> {
        let until = later(now, lease)?;
        let mut due: Vec<(OffsetDateTime, String)> = self
            .list("outbox/")
            .await?
            .into_iter()
            .filter(|listed| listed.metadata.get("state").map(String::as_str) == Some("pending"))
            .filter_map(|listed| {
                let due = metadata_time(&listed, "next_attempt_at").is_some_and(|at| at <= now);
                let enqueued_at = metadata_time(&listed, "enqueued_at")?;
                due.then_some((enqueued_at, listed.name))
            })
            .collect();
        due.sort();
        let mut claimed = Vec::new();
        for (_, name) in due {
            if claimed.len() >= limit {
                break;
            }
            let Some((mut stored, _, etag)) = self.read::<StoredNotification>(&name).await? else {
                continue;
            };
            if stored.sent_at.is_some() || stored.item.next_attempt_at > now {
                continue;
            }
            stored.item.next_attempt_at = until;
            stored.item.attempts = stored.item.attempts.saturating_add(1);
            let item = stored.item.clone();
            let metadata = stored.metadata()?;
            if self
                .write(&name, stored, Condition::Matches(etag), metadata)
                .await?
                .is_some()
            {
                claimed.push(item);
            }
        }
        claimed.sort_by(|a, b| {
            (a.enqueued_at, &a.notification.id).cmp(&(b.enqueued_at, &b.notification.id))
        });
        Ok(claimed)
    }

    async fn mark_notification_sent(&self, id: &str, now: OffsetDateTime) -> Result<()> {
        self.update_notification(id, |stored| {
            stored.sent_at = Some(now);
            Ok(())
        })
        .await
    }

    async fn reschedule_notification(
        &self,
        id: &str,
        next_attempt_at: OffsetDateTime,
        error: &str,
    ) -> Result<()> {
        self.update_notification(id, |stored| {
            stored.item.next_attempt_at = next_attempt_at;
            stored.item.last_error = Some(error.to_owned());
            Ok(())
        })
        .await
    }

    async fn sweep_cursor(&self) -> Result<Option<String>> {
        Ok(self
            .read::<Cursor>("cursors/sweep")
            .await?
            .map(|(cursor, _, _)| cursor.value))
    }

    async fn set_sweep_cursor(&self, cursor: Option<&str>) -> Result<()> {
        match cursor {
            Some(value) => {
                let cursor = Cursor {
                    value: value.to_owned(),
                };
                self.write("cursors/sweep", cursor, Condition::Always, HashMap::new())
                    .await?;
            }
            None => {
                self.delete("cursors/sweep", None).await?;
            }
        }
        Ok(())
    }

    async fn managed_resource_groups(&self) -> Result<Vec<String>> {
        let stored = self.read::<Cursor>(MANAGED_GROUPS).await?;
        Ok(super::group_names(
            stored.as_ref().map(|(cursor, _, _)| cursor.value.as_str()),
        ))
    }

    async fn add_managed_resource_groups(&self, names: &[String]) -> Result<()> {
        // Read, merge, write only if nobody wrote meanwhile; another writer's names are kept
        // by merging again.
        for _ in 0..MERGE_TRIES {
            let stored = self.read::<Cursor>(MANAGED_GROUPS).await?;
            let (value, condition) = match stored {
                Some((cursor, _, etag)) => (
                    super::merged_group_names(Some(&cursor.value), names),
                    Condition::Matches(etag),
                ),
                None => (super::merged_group_names(None, names), Condition::Absent),
            };
            let cursor = Cursor { value };
            if self
                .write(MANAGED_GROUPS, cursor, condition, HashMap::new())
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StateError::new(
            StateErrorKind::Transient,
            format!("{MANAGED_GROUPS}: other writers kept changing it"),
        ))
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<usize> {
        let events_before = earlier(now, EVENT_CLAIM_RETENTION)?;
        let attempts_before = earlier(now, ATTEMPT_RETENTION)?;
        let sent_before = earlier(now, SENT_NOTIFICATION_RETENTION)?;
        let old_events = self
            .list("events/")
            .await?
            .into_iter()
            .filter(|listed| {
                metadata_time(listed, "claimed_at").is_some_and(|at| at < events_before)
            })
            .collect();
        let old_attempts = self
            .list("attempts/")
            .await?
            .into_iter()
            .filter(|listed| name_time(&listed.name).is_some_and(|at| at < attempts_before))
            .collect();
        let old_sent = self
            .list("outbox/")
            .await?
            .into_iter()
            .filter(|listed| metadata_time(listed, "sent_at").is_some_and(|at| at < sent_before))
            .collect();
        let expired_claims = self
            .list("remediations/")
            .await?
            .into_iter()
            .filter(|listed| metadata_time(listed, "expires_at").is_some_and(|at| at <= now))
            .collect();
        let mut removed = 0;
        for blobs in [old_events, old_attempts, old_sent, expired_claims] {
            removed += self.delete_listed(blobs).await?;
        }
        Ok(removed)
    }
}
