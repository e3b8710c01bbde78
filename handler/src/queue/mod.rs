//! The sweep's Storage queue (`CMKGUARD_SWEEP_QUEUE`): where the Sweep function puts one
//! message per subscription for the queue-triggered `SweepSubscription` function, so that the
//! Functions platform scales the work out over instances, and where the host puts a message
//! that failed `maxDequeueCount` times (`<queue>-poison`) for the next sweep to report.
//!
//! The queue lives on the Function app's own storage account: its endpoint is the one the
//! host's trigger uses (`AzureWebJobsStorage__queueServiceUri`, or the account name), reached
//! with the managed identity, or with a SAS on that URL for a local emulator. Messages are
//! written base64-encoded, as the host's queue trigger reads them by default
//! (`extensions.queues.messageEncoding` in host.json).

mod message;

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind as AzureErrorKind;
use azure_core::http::{ClientOptions, Transport, Url};
use azure_storage_queue::QueueClient;
use azure_storage_queue::models::{
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use base64::Engine as _;

use crate::config::ConfigError;

pub use message::{MAX_MESSAGE_BYTES, MAX_SUBSCRIPTIONS, Refusal, SweepMessage, decode_binding};

/// The variable naming the queue; unset, the Sweep function does the whole sweep itself.
pub const QUEUE_VARIABLE: &str = "CMKGUARD_SWEEP_QUEUE";
/// The host's identity-based connection: the queue endpoint of the Function app's storage.
pub const SERVICE_URI_VARIABLE: &str = "AzureWebJobsStorage__queueServiceUri";
/// The host's identity-based connection by account name (public cloud endpoints).
pub const ACCOUNT_VARIABLE: &str = "AzureWebJobsStorage__accountName";
/// The suffix the Functions host gives a queue's poison queue.
pub const POISON_SUFFIX: &str = "-poison";
/// How many poison messages one sweep reports (and removes); the rest wait for the next.
pub const POISON_BATCH: u8 = 32;
/// How long a received poison message stays invisible to other sweeps while it is reported.
const POISON_VISIBILITY_SECONDS: i32 = 60;

/// Where the sweep's queue is: `CMKGUARD_SWEEP_QUEUE` on the host's queue endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue's name (3–56 characters, so that its poison queue's name is valid too).
    pub name: String,
    /// The queue service URL without a query string: safe to log.
    service: Url,
    /// A SAS query on the service URL (emulators and tests), instead of the managed identity.
    sas: Option<Secret>,
}

impl std::fmt::Debug for QueueSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSettings")
            .field("name", &self.name)
            .field("service", &self.service.as_str())
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl QueueSettings {
    /// Reads `CMKGUARD_SWEEP_QUEUE` and the host's storage endpoint through `value` (trimmed,
    /// non-empty values); `None` when no queue is configured.
    pub fn from_lookup(
        value: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(name) = value(QUEUE_VARIABLE) else {
            return Ok(None);
        };
        if !valid_queue_name(&name) {
            return Err(ConfigError::new(
                QUEUE_VARIABLE,
                format!(
                    "`{}` is not a queue name: 3 to 56 lower-case letters, digits and single \
                     hyphens (the host adds `{POISON_SUFFIX}` for its poison queue)",
                    crate::text::field(&name)
                ),
            ));
        }
        let text = match (value(SERVICE_URI_VARIABLE), value(ACCOUNT_VARIABLE)) {
            (Some(uri), _) => uri,
            (None, Some(account)) => format!("https://{account}.queue.core.windows.net"),
            (None, None) => {
                return Err(ConfigError::new(
                    QUEUE_VARIABLE,
                    format!(
                        "set, but neither {SERVICE_URI_VARIABLE} nor {ACCOUNT_VARIABLE} says \
                         where the Function app's storage is"
                    ),
                ));
            }
        };
        let (service, sas) = parse_service(&text)?;
        Ok(Some(Self { name, service, sas }))
    }

    /// The poison queue's name.
    pub fn poison_name(&self) -> String {
        format!("{}{POISON_SUFFIX}", self.name)
    }

    /// The queue's URL without a SAS, for messages.
    pub fn shown(&self) -> String {
        format!(
            "{}/{}",
            self.service.as_str().trim_end_matches('/'),
            self.name
        )
    }
}

fn valid_queue_name(name: &str) -> bool {
    (3..=63 - POISON_SUFFIX.len()).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The service URL and its SAS: https, or http on loopback (an emulator); no user info.
fn parse_service(text: &str) -> Result<(Url, Option<Secret>), ConfigError> {
    let error = |message: String| ConfigError::new(SERVICE_URI_VARIABLE, message);
    let url = Url::parse(text).map_err(|e| {
        error(format!(
            "`{}` is not a URL: {e}",
            crate::text::redact_urls(text)
        ))
    })?;
    let mut service = url.clone();
    service.set_query(None);
    service.set_fragment(None);
    let shown = service.to_string();
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.host_str().is_none() || !url.username().is_empty() {
        return Err(error(format!(
            "`{shown}` must be an https URL without user info (http only for an emulator on \
             127.0.0.1)"
        )));
    }
    let sas = match url.query().filter(|q| !q.is_empty()) {
        None => None,
        Some(query) if url.query_pairs().any(|(name, _)| name == "sig") => {
            Some(Secret::new(query.to_owned()))
        }
        Some(_) => {
            return Err(error(format!(
                "`{shown}` has a query string that is not a SAS (no `sig`)"
            )));
        }
    };
    Ok((service, sas))
}

/// Why a queue operation failed, with the one decision the caller needs. Never holds a SAS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sweep queue: {message}")]
pub struct QueueError {
    /// True when a later attempt may succeed (throttling, 5xx, a lost connection).
    pub transient: bool,
    pub message: String,
}

/// A message taken from the poison queue: what it said (or why it could not be read), and
/// what deleting it needs.
#[derive(Debug)]
pub struct Poisoned {
    pub message: Result<SweepMessage, Refusal>,
    id: String,
    pop_receipt: String,
}

/// The sweep's queue and its poison queue.
pub struct SweepQueue {
    queue: QueueClient,
    poison: QueueClient,
    shown: String,
    secrets: Vec<String>,
}

impl std::fmt::Debug for SweepQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepQueue")
            .field("queue", &self.shown)
            .finish_non_exhaustive()
    }
}

impl SweepQueue {
    /// The clients on the shared transport, with `credential` unless the URL carries a SAS.
    /// Nothing is sent yet.
    pub fn open(
        settings: &QueueSettings,
        transport: &Transport,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, QueueError> {
        let secrets: Vec<String> = settings
            .sas
            .as_ref()
            .map(|sas| vec![sas.secret().to_owned()])
            .unwrap_or_default();
        let shown = settings.shown();
        let client = |name: &str| {
            let mut url = settings.service.clone();
            url.path_segments_mut()
                .map_err(|()| permanent(format!("{shown}: not a base URL")))?
                .pop_if_empty()
                .push(name);
            url.set_query(settings.sas.as_ref().map(Secret::secret));
            let credential = settings.sas.is_none().then(|| credential.clone());
            let options = azure_storage_queue::QueueClientOptions {
                client_options: ClientOptions {
                    transport: Some(transport.clone()),
                    ..ClientOptions::default()
                },
                ..Default::default()
            };
            QueueClient::new(url, credential, Some(options))
                .map_err(|e| permanent(crate::text::redact(&crate::text::chain(&e), &secrets)))
        };
        Ok(Self {
            queue: client(&settings.name)?,
            poison: client(&settings.poison_name())?,
            shown: shown.clone(),
            secrets: secrets.clone(),
        })
    }

    /// Puts `message` on the queue, base64-encoded JSON.
    pub async fn send(&self, message: &SweepMessage) -> Result<(), QueueError> {
        let text = base64::engine::general_purpose::STANDARD.encode(message.to_json());
        let body = QueueMessage {
            message_text: Some(text),
        };
        let body = body
            .try_into()
            .map_err(|e: azure_core::Error| self.failure("encoding a message", &e))?;
        self.queue
            .send_message(body, None::<QueueClientSendMessageOptions<'_>>)
            .await
            .map_err(|e| self.failure("sending a message", &e))?;
        Ok(())
    }

    /// Up to [`POISON_BATCH`] messages of the poison queue, hidden from other readers for a
    /// minute; a poison queue that does not exist yet has none.
    pub async fn poisoned(&self) -> Result<Vec<Poisoned>, QueueError> {
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(i32::from(POISON_BATCH)),
            visibility_timeout: Some(POISON_VISIBILITY_SECONDS),
            ..Default::default()
        };
        let received = match self.poison.receive_messages(Some(options)).await {
            Ok(received) => received,
            Err(error) if status_of(&error) == Some(404) => return Ok(Vec::new()),
            Err(error) => return Err(self.failure("reading the poison queue", &error)),
        };
        let items = received
            .into_model()
            .map_err(|e| self.failure("reading the poison queue", &e))?
            .items
            .unwrap_or_default();
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let id = item.message_id?;
                let pop_receipt = item.pop_receipt?;
                let text = item.message_text.unwrap_or_default();
                Some(Poisoned {
                    message: SweepMessage::from_queue_text(&text),
                    id,
                    pop_receipt,
                })
            })
            .collect())
    }

    /// Removes a poison message once it has been reported.
    pub async fn remove(&self, poisoned: &Poisoned) -> Result<(), QueueError> {
        match self
            .poison
            .delete_message(&poisoned.id, &poisoned.pop_receipt, None)
            .await
        {
            // Gone already (another sweep removed it): nothing left to do.
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(self.failure("removing a poison message", &error)),
            Ok(_) => Ok(()),
        }
    }

    fn failure(&self, action: &str, error: &azure_core::Error) -> QueueError {
        let transient = match error.kind() {
            AzureErrorKind::HttpResponse { status, .. } => {
                crate::azure::error::is_transient_status(*status)
            }
            AzureErrorKind::Io | AzureErrorKind::Connection | AzureErrorKind::Credential => true,
            _ => false,
        };
        let hint = match status_of(error) {
            Some(401 | 403) => {
                "; the identity needs the Storage Queue Data Contributor role on the Function \
                 app's storage account (or the SAS needs read, add, process permissions)"
            }
            Some(404) => "; create the queue (the infra creates it with the storage account)",
            _ => "",
        };
        QueueError {
            transient,
            message: format!(
                "{action} on {}: {}{hint}",
                self.shown,
                crate::text::redact(&crate::text::chain(error), &self.secrets)
            ),
        }
    }
}

fn status_of(error: &azure_core::Error) -> Option<u16> {
    match error.kind() {
        AzureErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

fn permanent(message: String) -> QueueError {
    QueueError {
        transient: false,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn no_queue_means_no_fan_out() {
        assert_eq!(QueueSettings::from_lookup(lookup(&[])).unwrap(), None);
    }

    #[test]
    fn the_queue_is_on_the_hosts_storage_endpoint() {
        let settings = QueueSettings::from_lookup(lookup(&[
            (QUEUE_VARIABLE, "cmk-guard-sweep"),
            (SERVICE_URI_VARIABLE, "https://st1.queue.core.windows.net/"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            settings.shown(),
            "https://st1.queue.core.windows.net/cmk-guard-sweep"
        );
        assert_eq!(settings.poison_name(), "cmk-guard-sweep-poison");
        let by_account = QueueSettings::from_lookup(lookup(&[
            (QUEUE_VARIABLE, "sweep"),
            (ACCOUNT_VARIABLE, "st2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            by_account.shown(),
            "https://st2.queue.core.windows.net/sweep"
        );
    }

    #[test]
    fn a_sas_is_kept_apart_and_never_shown() {
        let settings = QueueSettings::from_lookup(lookup(&[
            (QUEUE_VARIABLE, "sweep"),
            (
                SERVICE_URI_VARIABLE,
                "http://127.0.0.1:10001/devstoreaccount1?sv=2021&sig=s3cr3t",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            settings.shown(),
            "http://127.0.0.1:10001/devstoreaccount1/sweep"
        );
        assert!(!format!("{settings:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_names_and_endpoints_name_the_variable_without_secrets() {
        for (pairs, variable) in [
            (vec![(QUEUE_VARIABLE, "Sweep")], QUEUE_VARIABLE),
            (vec![(QUEUE_VARIABLE, "a--b")], QUEUE_VARIABLE),
            (vec![(QUEUE_VARIABLE, &"q".repeat(57))], QUEUE_VARIABLE),
            (vec![(QUEUE_VARIABLE, "sweep")], QUEUE_VARIABLE),
            (
                vec![
                    (QUEUE_VARIABLE, "sweep"),
                    (SERVICE_URI_VARIABLE, "http://st.queue.core.windows.net"),
                ],
                SERVICE_URI_VARIABLE,
            ),
            (
                vec![
                    (QUEUE_VARIABLE, "sweep"),
                    (SERVICE_URI_VARIABLE, "https://st.example/?token=s3cr3t"),
                ],
                SERVICE_URI_VARIABLE,
            ),
        ] {
            let error = QueueSettings::from_lookup(lookup(&pairs)).unwrap_err();
            assert_eq!(error.variable, variable, "{pairs:?}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
    }
}
