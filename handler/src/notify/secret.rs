//! Secrets of the alert channels: webhook URLs carry their credential in the query (`sig=`),
//! SMTP URLs carry a password (kept in `azure_core`'s [`Secret`], like tokens). Destinations are
//! shown only as [`redacted_origin`] (scheme, host and port), and every error text leaving this
//! module is [`scrub`]bed of the secrets.
//!
//! [`Secret`]: azure_core::credentials::Secret

use std::fmt;

use url::Url;

/// What replaces a secret in any text cmk-guard writes.
pub use crate::text::REDACTED;

/// A URL whose path and query are a credential. Only `SecretUrl::expose` gives it away,
/// and only the HTTP sender calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub(crate) fn new(url: Url) -> Self {
        Self(url)
    }

    /// The full URL, for the request itself and nothing else.
    pub(crate) fn expose(&self) -> &Url {
        &self.0
    }

    /// The pieces of the URL that must never appear in text: the whole URL, its path and
    /// query, and every query value (the `sig`).
    pub(crate) fn secret_parts(&self) -> Vec<String> {
        let mut parts = vec![self.0.as_str().to_owned(), self.0.path().to_owned()];
        if let Some(query) = self.0.query() {
            parts.push(query.to_owned());
        }
        parts.extend(self.0.query_pairs().map(|(_, value)| value.into_owned()));
        parts
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", redacted_origin(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted_origin(&self.0))
    }
}

/// `scheme://host[:port]` of any URL: enough to tell which service is meant, nothing to call
/// it with. The one way a destination is shown in logs, reasons and Actions.
pub fn redacted_origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow_url() -> SecretUrl {
        SecretUrl::new(
            Url::parse(
                "https://abc.12.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/w1/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=S3cr3tSig",
            )
            .unwrap(),
        )
    }

    #[test]
    fn shows_only_scheme_and_host() {
        let url = workflow_url();
        assert_eq!(
            url.to_string(),
            "https://abc.12.environment.api.powerplatform.com"
        );
        assert!(!format!("{url:?}").contains("sig"));
    }

    #[test]
    fn scrubs_every_form_of_the_secret() {
        let url = workflow_url();
        let text = format!(
            "error sending request for url ({}): sig was S3cr3tSig",
            url.expose()
        );
        let clean = crate::text::redact(&text, &url.secret_parts());
        assert!(!clean.contains("S3cr3tSig"), "{clean}");
        assert!(!clean.contains("workflows/w1"), "{clean}");
        assert!(clean.contains(REDACTED));
        let encoded = crate::text::redact("user p%40ss", &["p@ss".to_owned()]);
        assert_eq!(encoded, format!("user {REDACTED}"));
    }
}
