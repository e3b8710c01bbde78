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

use super::spec::{BlobLocation, redact_urls};
use super::{
    ATTEMPT_RETENTION, AuditEntry, CompareAndSet, EVENT_CLAIM_RETENTION, ErrorKind, FindingKey,
    FindingRecord, Notification, OutboxItem, RemediationAttempt, Result,
    SENT_NOTIFICATION_RETENTION, StateError, StateStore, Version, Versioned, digest,
};
use crate::azure::error::is_transient_status;
use crate::outcome::FindingState;

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

/// What every blob holds: the value and the id of the write that stored it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    writer: String,
    value: T,
}

/// The precondition of a write.
enum Condition {
    /// Only if the blob does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the blob is still at this ETag (`If-Match`).
    Matches(Etag),
    /// Unconditionally: for blobs with unique names and last-writer-wins values.
    Always,
}

/// One blob of a listing.
struct Listed {
    name: String,
    etag: Option<Etag>,
    metadata: HashMap<String, String>,
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
                    ErrorKind::Config,
                    format!("CMKGUARD_STATE: {shown}: {}", scrub(&secrets, &chain(&e))),
                )
            })?;
        Ok(Self {
            container,
            shown,
            secrets,
        })
    }

    /// A state error for a failed request, without secrets, classified for retry.
    fn failure(&self, action: &str, name: &str, error: &azure_core::Error) -> StateError {
        let (kind, detail) = match error.kind() {
            AzureErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let status = u16::from(*status);
                let code = error_code.as_deref().unwrap_or_default();
                let kind = if is_transient_status(status) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                let hint = match (status, code) {
                    (401 | 403, _) => {
                        "; the identity needs the Storage Blob Data Contributor role on the \
                         container, or the SAS needs read, add, create, write, delete and list \
                         permissions and must not have expired"
                    }
                    (404, "ContainerNotFound") => {
                        "; create the container (cmk-guard does not create it)"
                    }
                    _ => "",
                };
                (kind, format!("HTTP {status} {code}{hint}"))
            }
            AzureErrorKind::Io | AzureErrorKind::Connection | AzureErrorKind::Credential => {
                (ErrorKind::Transient, scrub(&self.secrets, &chain(error)))
            }
            _ => (ErrorKind::Permanent, scrub(&self.secrets, &chain(error))),
        };
        StateError::new(kind, format!("{action} {}/{name}: {detail}", self.shown))
    }

    /// Reads a blob and its ETag; `None` if it does not exist.
    async fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<(T, String, Etag)>> {
        let blob = self.container.blob_client(name);
        let response = match blob.download(None).await {
            Ok(response) => response,
            Err(error) if is_blob_not_found(&error) => return Ok(None),
            Err(error) => return Err(self.failure("reading", name, &error)),
        };
        let etag = response.properties.etag.clone().ok_or_else(|| {
            StateError::new(
                ErrorKind::Permanent,
                format!("reading {}/{name}: the response has no ETag", self.shown),
            )
        })?;
        let body = response
            .body
            .collect()
            .await
            .map_err(|error| self.failure("reading", name, &error))?;
        let envelope: Envelope<T> = serde_json::from_slice(&body).map_err(|e| {
            StateError::new(
                ErrorKind::Permanent,
                format!(
                    "reading {}/{name}: not a cmk-guard state blob: {e}",
                    self.shown
                ),
            )
        })?;
        Ok(Some((envelope.value, envelope.writer, etag)))
    }

    /// Writes a blob under `condition`. `Some(etag)` if this write took effect, `None` if the
    /// condition failed because of another writer.
    async fn write<T: Serialize>(
        &self,
        name: &str,
        value: T,
        condition: Condition,
        metadata: HashMap<String, String>,
    ) -> Result<Option<Etag>> {
        let writer = uuid::Uuid::new_v4().to_string();
        let envelope = Envelope {
            writer: writer.clone(),
            value,
        };
        let body = serde_json::to_vec(&envelope)
            .map_err(|e| StateError::new(ErrorKind::Permanent, format!("encoding {name}: {e}")))?;
        let conditional = !matches!(condition, Condition::Always);
        let (if_match, if_none_match) = match condition {
            Condition::Absent => (None, Some(Etag::from("*"))),
            Condition::Matches(etag) => (Some(etag), None),
            Condition::Always => (None, None),
        };
        let options = BlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            if_match,
            if_none_match,
            metadata: Some(metadata),
            ..BlobClientUploadOptions::default()
        };
        let blob = self.container.blob_client(name);
        match blob.upload(RequestContent::from(body), Some(options)).await {
            Ok(result) => result.etag.map(Some).ok_or_else(|| {
                StateError::new(
                    ErrorKind::Permanent,
                    format!("writing {}/{name}: the response has no ETag", self.shown),
                )
            }),
            Err(error) if conditional && is_condition_failure(&error) => {
                // Either another writer got there first, or an earlier try of this very write
                // succeeded and only its response was lost: the writer id tells which.
                match self.read::<serde_json::Value>(name).await? {
                    Some((_, stored_writer, etag)) if stored_writer == writer => Ok(Some(etag)),
                    _ => Ok(None),
                }
            }
            Err(error) => Err(self.failure("writing", name, &error)),
        }
    }

    /// Deletes a blob, only if it is still at `etag` when one is given. `false` if it was
    /// already gone or changed meanwhile.
    async fn delete(&self, name: &str, etag: Option<Etag>) -> Result<bool> {
        let options = BlobClientDeleteOptions {
            if_match: etag,
            ..BlobClientDeleteOptions::default()
        };
        match self.container.blob_client(name).delete(Some(options)).await {
            Ok(_) => Ok(true),
            Err(error) if is_blob_not_found(&error) || is_condition_failure(&error) => Ok(false),
            Err(error) => Err(self.failure("deleting", name, &error)),
        }
    }

    /// Lists the blobs under `prefix` with their ETags and metadata.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(prefix.to_owned()),
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            ..BlobContainerClientListBlobsOptions::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|error| self.failure("listing", prefix, &error))?;
        let mut listed = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|error| self.failure("listing", prefix, &error))?
        {
            let Some(name) = item.name else { continue };
            listed.push(Listed {
                name,
                etag: item.properties.and_then(|properties| properties.etag),
                metadata: item
                    .metadata
                    .and_then(|metadata| metadata.values)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(key, value)| (key.to_ascii_lowercase(), value))
                    .collect(),
            });
        }
        Ok(listed)
    }

    /// The stored findings of the named blobs, each with the version its write must match.
    async fn read_findings(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<(FindingKey, Versioned<FindingRecord>)>> {
        Ok(self
            .read_all::<StoredFinding>(names)
            .await?
            .into_iter()
            .map(|(_, stored, etag)| {
                (
                    stored.key,
                    Versioned {
                        value: stored.record,
                        version: Version::new(etag),
                    },
                )
            })
            .collect())
    }

    /// Downloads the named blobs, a few at a time; blobs deleted meanwhile are skipped.
    async fn read_all<T: DeserializeOwned + Send>(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<(String, T, Etag)>> {
        let results: Vec<Result<Option<(String, T, Etag)>>> = futures_util::stream::iter(names)
            .map(|name| async move {
                Ok(self
                    .read::<T>(&name)
                    .await?
                    .map(|(value, _, etag)| (name, value, etag)))
            })
            .buffered(PARALLEL_READS)
            .collect()
            .await;
        results.into_iter().filter_map(Result::transpose).collect()
    }

    /// Deletes listed blobs at their listed ETags; returns how many went.
    async fn delete_listed(&self, blobs: Vec<Listed>) -> Result<usize> {
        let mut removed = 0;
        for blob in blobs {
            if self.delete(&blob.name, blob.etag).await? {
                removed += 1;
            }
        }
        Ok(removed)
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

fn contended(shown: &str, name: &str) -> StateError {
    StateError::new(
        ErrorKind::Transient,
        format!(
            "writing {shown}/{name}: changed by other writers {CONTENDED_RETRIES} times in a row"
        ),
    )
}

/// What must never appear in a message: the whole SAS query and its signature, both as sent
/// (percent-encoded) and decoded.
fn sas_secrets(sas: &str) -> Vec<String> {
    let mut secrets = vec![sas.to_owned()];
    for pair in sas.split('&') {
        if let Some(raw) = pair.strip_prefix("sig=").filter(|raw| !raw.is_empty()) {
            secrets.push(raw.to_owned());
        }
    }
    for (name, value) in url::form_urlencoded::parse(sas.as_bytes()) {
        if name == "sig" && !value.is_empty() {
            secrets.push(value.into_owned());
        }
    }
    secrets
}

/// The error's message and its causes, as one line.
fn chain(error: &azure_core::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes URLs' query strings and any known secret from `text`.
fn scrub(secrets: &[String], text: &str) -> String {
    let mut text = redact_urls(text);
    for secret in secrets {
        text = text.replace(secret.as_str(), "<redacted>");
    }
    text
}

fn error_code(error: &azure_core::Error) -> Option<(u16, &str)> {
    match error.kind() {
        AzureErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((
            u16::from(*status),
            error_code.as_deref().unwrap_or_default(),
        )),
        _ => None,
    }
}

/// 404 for the blob itself (not for a missing container, which is a configuration error).
fn is_blob_not_found(error: &azure_core::Error) -> bool {
    matches!(error_code(error), Some((404, code)) if code != "ContainerNotFound")
}

/// A failed precondition: 409 when `If-None-Match: *` meets an existing blob, 412 when
/// `If-Match` meets another ETag, 404 when the blob was deleted meanwhile.
fn is_condition_failure(error: &azure_core::Error) -> bool {
    match error_code(error) {
        Some((409, "BlobAlreadyExists")) | Some((412, _)) => true,
        Some((404, code)) => code != "ContainerNotFound",
        _ => false,
    }
}

/// Zero-padded UTC nanoseconds: sorts like the time it names.
fn nanos_text(time: OffsetDateTime) -> Result<String> {
    u64::try_from(time.unix_timestamp_nanos())
        .map(|nanos| format!("{nanos:020}"))
        .map_err(|_| {
            StateError::new(
                ErrorKind::Permanent,
                format!("time {time} is outside the range the store keeps"),
            )
        })
}

fn parse_nanos(text: &str) -> Option<OffsetDateTime> {
    let nanos: u64 = text.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()
}

/// The time at the start of the last segment of `{prefix}/{time}-{uuid}` names.
fn name_time(name: &str) -> Option<OffsetDateTime> {
    let last = name.rsplit('/').next()?;
    parse_nanos(last.split('-').next()?)
}

/// A time-ordered unique name under `prefix`.
fn timed_name(prefix: &str, at: OffsetDateTime) -> Result<String> {
    Ok(format!(
        "{prefix}/{}-{}",
        nanos_text(at)?,
        uuid::Uuid::new_v4()
    ))
}

fn finding_name(key: &FindingKey) -> String {
    format!(
        "findings/{}/{}",
        digest(&[&key.workspace]),
        digest(&[&key.rule, &key.resource])
    )
}

/// A finding state as the listing metadata holds it.
fn state_label(state: FindingState) -> &'static str {
    match state {
        FindingState::Open => "open",
        FindingState::Resolved => "resolved",
    }
}

fn metadata_time(listed: &Listed, key: &str) -> Option<OffsetDateTime> {
    listed.metadata.get(key).and_then(|text| parse_nanos(text))
}

fn earlier(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_sub(by)
        .ok_or_else(|| StateError::new(ErrorKind::Permanent, "time out of range"))
}

fn later(now: OffsetDateTime, by: Duration) -> Result<OffsetDateTime> {
    now.checked_add(by)
        .ok_or_else(|| StateError::new(ErrorKind::Permanent, "time out of range"))
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

    async fn append_audit(&self, at: OffsetDateTime, record: &serde_json::Value) -> Result<()> {
        let entry = AuditEntry {
            at,
            record: record.clone(),
        };
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
        notification: &Notification,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_names_sort_like_times_and_parse_back() {
        let early = time::macros::datetime!(2026-11-28 09:00:00.5 UTC);
        let late = time::macros::datetime!(2026-11-28 10:00 UTC);
        let a = timed_name("audit", early).unwrap();
        let b = timed_name("audit", late).unwrap();
        assert!(a < b, "{a} {b}");
        assert_eq!(name_time(&a), Some(early));
        assert_eq!(name_time("attempts/abc/not-a-time"), None);
        assert!(nanos_text(time::macros::datetime!(1960-01-01 0:00 UTC)).is_err());
    }

    #[test]
    fn scrubbing_removes_the_sas_even_outside_urls() {
        let secrets = sas_secrets("sv=1&sig=abc%2Bdef");
        assert_eq!(secrets, ["sv=1&sig=abc%2Bdef", "abc%2Bdef", "abc+def"]);
        let text = "request to http://127.0.0.1:1/a/b?sv=1&sig=abc%2Bdef failed; sig abc+def";
        let scrubbed = scrub(&secrets, text);
        assert!(!scrubbed.contains("abc"), "{scrubbed}");
        assert!(
            scrubbed.contains("http://127.0.0.1:1/a/b?<redacted>"),
            "{scrubbed}"
        );
    }

    #[test]
    fn finding_names_are_fixed_length_and_grouped_by_workspace() {
        let key = FindingKey {
            workspace: "/subscriptions/s/resourceGroups/rg/providers/x/workspaces/ws".into(),
            rule: "vault.purge-protection".into(),
            resource: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
                .into(),
        };
        let name = finding_name(&key);
        assert_eq!(name.len(), "findings/".len() + 64 + 1 + 64);
        assert!(name.starts_with(&format!("findings/{}/", digest(&[&key.workspace]))));
    }
}
