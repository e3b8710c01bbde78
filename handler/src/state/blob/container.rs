//! The container as the store uses it: conditional reads and writes of enveloped blobs,
//! listings with their metadata, and errors classified for retry with every secret removed.

use super::*;
use crate::azure::error::is_transient_status;

/// What every blob holds: the value and the id of the write that stored it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope<T> {
    pub(super) writer: String,
    pub(super) value: T,
}

/// The precondition of a write.
pub(super) enum Condition {
    /// Only if the blob does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the blob is still at this ETag (`If-Match`).
    Matches(Etag),
    /// Unconditionally: for blobs with unique names and last-writer-wins values.
    Always,
}

/// One blob of a listing.
pub(super) struct Listed {
    pub(super) name: String,
    pub(super) etag: Option<Etag>,
    pub(super) metadata: HashMap<String, String>,
}

impl BlobStore {
    /// A state error for a failed request, without secrets, classified for retry.
    pub(super) fn failure(
        &self,
        action: &str,
        name: &str,
        error: &azure_core::Error,
    ) -> StateError {
        let (kind, detail) = match error.kind() {
            AzureErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let status = *status;
                let code = error_code.as_deref().unwrap_or_default();
                let kind = if is_transient_status(status) {
                    StateErrorKind::Transient
                } else {
                    StateErrorKind::Permanent
                };
                let hint = match (u16::from(status), code) {
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
            AzureErrorKind::Io | AzureErrorKind::Connection | AzureErrorKind::Credential => (
                StateErrorKind::Transient,
                crate::text::redact(&crate::text::chain(error), &self.secrets),
            ),
            _ => (
                StateErrorKind::Permanent,
                crate::text::redact(&crate::text::chain(error), &self.secrets),
            ),
        };
        StateError::new(kind, format!("{action} {}/{name}: {detail}", self.shown))
    }

    /// Reads a blob and its ETag; `None` if it does not exist.
    pub(super) async fn read<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<(T, String, Etag)>> {
        let blob = self.container.blob_client(name);
        let response = match blob.download(None).await {
            Ok(response) => response,
            Err(error) if is_blob_not_found(&error) => return Ok(None),
            Err(error) => return Err(self.failure("reading", name, &error)),
        };
        let etag = response.properties.etag.clone().ok_or_else(|| {
            StateError::new(
                StateErrorKind::Permanent,
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
                StateErrorKind::Permanent,
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
    pub(super) async fn write<T: Serialize>(
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
        let body = serde_json::to_vec(&envelope).map_err(|e| {
            StateError::new(StateErrorKind::Permanent, format!("encoding {name}: {e}"))
        })?;
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
                    StateErrorKind::Permanent,
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
    pub(super) async fn delete(&self, name: &str, etag: Option<Etag>) -> Result<bool> {
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
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
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
    pub(super) async fn read_findings(
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
    pub(super) async fn read_all<T: DeserializeOwned + Send>(
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
    pub(super) async fn delete_listed(&self, blobs: Vec<Listed>) -> Result<usize> {
        let mut removed = 0;
        for blob in blobs {
            if self.delete(&blob.name, blob.etag).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

pub(super) fn contended(shown: &str, name: &str) -> StateError {
    StateError::new(
        StateErrorKind::Transient,
        format!(
            "writing {shown}/{name}: changed by other writers {CONTENDED_RETRIES} times in a row"
        ),
    )
}

/// What must never appear in a message: the whole SAS query and its signature, both as sent
/// (percent-encoded) and decoded.
pub(super) fn sas_secrets(sas: &str) -> Vec<String> {
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

pub(super) fn error_code(error: &azure_core::Error) -> Option<(u16, &str)> {
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
pub(super) fn is_blob_not_found(error: &azure_core::Error) -> bool {
    matches!(error_code(error), Some((404, code)) if code != "ContainerNotFound")
}

/// A failed precondition: 409 when `If-None-Match: *` meets an existing blob, 412 when
/// `If-Match` meets another ETag, 404 when the blob was deleted meanwhile.
pub(super) fn is_condition_failure(error: &azure_core::Error) -> bool {
    match error_code(error) {
        Some((409, "BlobAlreadyExists")) | Some((412, _)) => true,
        Some((404, code)) => code != "ContainerNotFound",
        _ => false,
    }
}
