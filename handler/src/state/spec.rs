//! `CMKGUARD_STATE`: which store to open. Parsed once, so that a typo fails at start with a
//! message that never repeats a SAS token.

use std::fmt;
use std::path::PathBuf;

use azure_core::credentials::Secret;
use url::Url;

use super::{Result, StateError, StateErrorKind};
use crate::text::redact_urls;

/// The store used when `CMKGUARD_STATE` is not set: a SQLite file in the working directory.
pub const DEFAULT_STATE: &str = "sqlite:cmk-guard.db";

/// A parsed `CMKGUARD_STATE`. `Display` shows it without secrets, for the startup log.
#[derive(Clone, PartialEq, Eq)]
pub enum StateSpec {
    /// `sqlite:<path>`.
    Sqlite(PathBuf),
    /// An Azure Blob container URL, with or without a SAS.
    Blob(BlobLocation),
}

/// Where the Blob backend keeps its blobs and how it authenticates.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// The container URL without a query string: safe to log.
    container_url: Url,
    /// The SAS query string (`sv=…&sig=…`), when the URL carried one: a credential.
    sas: Option<Secret>,
}

impl BlobLocation {
    /// The container URL without the SAS.
    pub fn container_url(&self) -> &Url {
        &self.container_url
    }

    /// The SAS query, when the store authenticates with one instead of a credential.
    pub(crate) fn sas(&self) -> Option<&str> {
        self.sas.as_ref().map(Secret::secret)
    }

    /// The URL the SDK is given: the container URL with the SAS, if any.
    pub(crate) fn request_url(&self) -> Url {
        let mut url = self.container_url.clone();
        url.set_query(self.sas());
        url
    }
}

impl StateSpec {
    /// Parses a `CMKGUARD_STATE` value; blank means [`DEFAULT_STATE`].
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let text = if text.is_empty() { DEFAULT_STATE } else { text };
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.trim();
            if path.is_empty() {
                return Err(config(
                    "`sqlite:` needs a file path, e.g. sqlite:cmk-guard.db",
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            return parse_blob(text).map(Self::Blob);
        }
        Err(config(format!(
            "`{}` is neither sqlite:<path> nor an Azure Blob container URL \
             (https://<account>.blob.core.windows.net/<container>)",
            redact_urls(text)
        )))
    }
}

fn parse_blob(text: &str) -> Result<BlobLocation> {
    let url = Url::parse(text)
        .map_err(|e| config(format!("`{}` is not a URL: {e}", redact_urls(text))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(
            "the container URL must not carry a user name or password",
        ));
    }
    let mut container_url = url.clone();
    container_url.set_query(None);
    container_url.set_fragment(None);
    let trimmed = container_url.path().trim_end_matches('/').to_owned();
    container_url.set_path(&trimmed);
    let shown = container_url.to_string();
    let host = url
        .host_str()
        .ok_or_else(|| config(format!("`{shown}` has no host")))?;
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    if url.scheme() == "http" && !loopback {
        return Err(config(format!(
            "`{shown}` must be https (plain http is only accepted for a local emulator on 127.0.0.1)"
        )));
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(|segments| segments.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    // Account-style hosts have the container as the only segment; emulators and custom
    // endpoints put the account first (path-style).
    let container = match segments.as_slice() {
        [container] | [_, container] => *container,
        _ => {
            return Err(config(format!(
                "`{shown}` must name exactly one container, e.g. https://<account>.blob.core.windows.net/cmk-guard-state"
            )));
        }
    };
    if !valid_container_name(container) {
        return Err(config(format!(
            "`{container}` is not a valid container name (3-63 lower-case letters, digits and single hyphens)"
        )));
    }
    let sas = match url.query().filter(|q| !q.is_empty()) {
        None => None,
        Some(query) if url.query_pairs().any(|(name, _)| name == "sig") => {
            Some(Secret::new(query.to_owned()))
        }
        Some(_) => {
            return Err(config(format!(
                "`{shown}` has a query string that is not a SAS (no `sig`); \
                 give the bare container URL to use the managed identity"
            )));
        }
    };
    Ok(BlobLocation { container_url, sas })
}

fn valid_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn config(message: impl Into<String>) -> StateError {
    StateError::new(
        StateErrorKind::Config,
        format!("CMKGUARD_STATE: {}", message.into()),
    )
}

impl fmt::Display for StateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StateSpec::Blob(location) => {
                let auth = if location.sas.is_some() {
                    "SAS"
                } else {
                    "credential"
                };
                write!(f, "{} ({auth})", location.container_url)
            }
        }
    }
}

impl fmt::Debug for StateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateSpec({self})")
    }
}

impl fmt::Debug for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobLocation")
            .field("container_url", &self.container_url.as_str())
            .field("sas", &self.sas.as_ref().map(|_| crate::text::REDACTED))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAS: &str = "sv=2021-08-06&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&sig=c2VjcmV0%3D";

    #[test]
    fn blank_means_the_default_sqlite_file() {
        assert_eq!(
            StateSpec::parse("  ").unwrap(),
            StateSpec::Sqlite("cmk-guard.db".into())
        );
        assert_eq!(
            StateSpec::parse("sqlite:/var/lib/cmk/state.db").unwrap(),
            StateSpec::Sqlite("/var/lib/cmk/state.db".into())
        );
    }

    #[test]
    fn parses_a_container_url_for_the_managed_identity() {
        let StateSpec::Blob(location) =
            StateSpec::parse("https://acct.blob.core.windows.net/cmk-guard-state/").unwrap()
        else {
            panic!("not a blob spec");
        };
        assert_eq!(
            location.container_url().as_str(),
            "https://acct.blob.core.windows.net/cmk-guard-state"
        );
        assert!(location.sas().is_none());
    }

    #[test]
    fn keeps_the_sas_apart_and_never_shows_it() {
        let text = format!("http://127.0.0.1:10000/devstoreaccount1/state?{SAS}");
        let spec = StateSpec::parse(&text).unwrap();
        let StateSpec::Blob(location) = &spec else {
            panic!("not a blob spec");
        };
        assert_eq!(location.sas(), Some(SAS));
        assert_eq!(location.request_url().as_str(), text);
        for shown in [spec.to_string(), format!("{spec:?}")] {
            assert!(!shown.contains("sig"), "{shown}");
            assert!(shown.contains("devstoreaccount1/state"), "{shown}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_use_without_echoing_secrets() {
        for bad in [
            "sqlite:",
            "postgres://db/state",
            "cmk-guard.db",
            "http://acct.blob.core.windows.net/state",
            "https://acct.blob.core.windows.net/",
            "https://acct.blob.core.windows.net/a/b/c",
            "https://acct.blob.core.windows.net/Bad_Name",
            "https://acct.blob.core.windows.net/state?comp=list",
            "https://user:pw@acct.blob.core.windows.net/state",
        ] {
            let error = StateSpec::parse(bad).unwrap_err();
            assert_eq!(error.kind, StateErrorKind::Config, "{bad}");
            assert!(error.message.starts_with("CMKGUARD_STATE: "), "{bad}");
            assert!(!error.message.contains("pw@"), "{}", error.message);
        }
        let error = StateSpec::parse(&format!("https://acct.blob.core.windows.net/a/b/c?{SAS}"))
            .unwrap_err();
        assert!(!error.message.contains("sig"), "{}", error.message);
    }

    #[test]
    fn redacts_query_strings_inside_messages() {
        let message = format!(
            "error sending request for url (https://acct.blob.core.windows.net/s/events/x?{SAS}): refused; also http://h/p?sig=1 and https://plain/path"
        );
        let redacted = redact_urls(&message);
        assert!(!redacted.contains("sig"), "{redacted}");
        assert!(redacted.contains("(https://acct.blob.core.windows.net/s/events/x?[redacted])"));
        assert!(redacted.ends_with("http://h/p?[redacted] and https://plain/path"));
    }
}
