//! Export to Application Insights with the connection string the deployment already has
//! (`APPLICATIONINSIGHTS_CONNECTION_STRING`): traces become request and dependency telemetry,
//! metrics become metric telemetry and log events become traces, all posted to the
//! connection string's `IngestionEndpoint` (`/v2/track`, gzipped JSON envelopes) by the
//! `opentelemetry-application-insights` exporter.
//!
//! With `APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD` (the variable Azure
//! Monitor's own SDKs read), each upload carries a Microsoft Entra bearer token for
//! Azure Monitor (`https://monitor.azure.com//.default` in the public cloud, the cloud's own
//! Monitor host elsewhere) from cmk-guard's credential (the Function app's managed
//! identity), so the component can disable local (instrumentation key) authentication.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use opentelemetry_application_insights::Exporter;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// The connection string variable (set by the Functions app settings).
pub const CONNECTION_STRING_VARIABLE: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";
/// The authentication variable; `Authorization=AAD` turns Entra authentication on.
pub const AUTHENTICATION_VARIABLE: &str = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING";
/// The credential uploads authenticate with and its token scope, once `serve` has them.
static CREDENTIAL: OnceLock<(Arc<dyn TokenCredential>, String)> = OnceLock::new();

/// Hands the exporter the credential for Entra authentication, with the cloud's Monitor host
/// (`monitor.azure.com` in the public cloud) for the token scope; a no-op the second time.
pub fn authenticate_with(credential: Arc<dyn TokenCredential>, monitor_suffix: &str) {
    let _ = CREDENTIAL.set((credential, format!("https://{monitor_suffix}//.default")));
}

/// The connection string, when one is set and the SDK is not disabled.
pub fn connection_string(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let disabled =
        lookup("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    lookup(CONNECTION_STRING_VARIABLE)
        .map(|v| v.trim().to_owned())
        .filter(|v| !disabled && !v.is_empty())
}

/// Whether uploads must carry an Entra token (`Authorization=AAD` in the authentication string).
pub fn entra_requested(lookup: impl Fn(&str) -> Option<String>) -> bool {
    lookup(AUTHENTICATION_VARIABLE).is_some_and(|value| {
        value.split(';').any(|part| {
            part.split_once('=').is_some_and(|(key, value)| {
                key.trim().eq_ignore_ascii_case("authorization")
                    && value.trim().eq_ignore_ascii_case("aad")
            })
        })
    })
}

/// Why the Application Insights exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{CONNECTION_STRING_VARIABLE} is not a valid connection string: {0}")]
pub struct ConnectionStringError(String);

/// The exporter for `connection_string`, uploading with `http`.
pub(super) fn exporter(
    connection_string: &str,
    http: reqwest::blocking::Client,
    entra: bool,
) -> Result<Exporter<IngestionClient>, ConnectionStringError> {
    let client = IngestionClient {
        http,
        entra,
        runtime: Arc::default(),
    };
    // The parse error names the bad part, never the key itself.
    Exporter::new_from_connection_string(connection_string, client)
        .map_err(|error| ConnectionStringError(error.to_string()))
}

/// The upload client: the shared blocking HTTP client, plus a bearer token when Entra
/// authentication is on.
#[derive(Clone)]
pub struct IngestionClient {
    http: reqwest::blocking::Client,
    entra: bool,
    /// A small runtime of its own for the credential's async token call: uploads run on the
    /// SDK's export threads, outside any async runtime.
    runtime: Arc<Mutex<Option<tokio::runtime::Runtime>>>,
}

impl fmt::Debug for IngestionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestionClient")
            .field("entra", &self.entra)
            .finish_non_exhaustive()
    }
}

impl IngestionClient {
    /// A bearer token for ingestion, or why there is none.
    fn token(&self) -> Result<String, HttpError> {
        let (credential, scope) = CREDENTIAL
            .get()
            .ok_or("Entra authentication is on but no credential is set up yet")?;
        let mut runtime = self.runtime.lock().map_err(|_| "token runtime poisoned")?;
        if runtime.is_none() {
            *runtime = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            );
        }
        let runtime = runtime.as_ref().ok_or("no token runtime")?;
        let token = runtime.block_on(credential.get_token(&[scope.as_str()], None))?;
        Ok(token.token.secret().to_owned())
    }
}

#[async_trait]
impl HttpClient for IngestionClient {
    async fn send_bytes(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if self.entra {
            let value = format!("Bearer {}", self.token()?);
            let mut value = reqwest::header::HeaderValue::from_str(&value)?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        self.http.send_bytes(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::tests::lookup as env;

    #[test]
    fn export_needs_a_connection_string_and_an_enabled_sdk() {
        assert_eq!(connection_string(env(&[])), None);
        assert_eq!(
            connection_string(env(&[(CONNECTION_STRING_VARIABLE, "  ")])),
            None
        );
        assert_eq!(
            connection_string(env(&[(CONNECTION_STRING_VARIABLE, "InstrumentationKey=k")]))
                .as_deref(),
            Some("InstrumentationKey=k")
        );
        assert_eq!(
            connection_string(env(&[
                (CONNECTION_STRING_VARIABLE, "InstrumentationKey=k"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ])),
            None
        );
    }

    #[test]
    fn entra_is_asked_for_by_the_authentication_string() {
        assert!(!entra_requested(env(&[])));
        assert!(entra_requested(env(&[(
            AUTHENTICATION_VARIABLE,
            "Authorization=AAD"
        )])));
        assert!(entra_requested(env(&[(
            AUTHENTICATION_VARIABLE,
            "ClientId=abc; authorization = aad"
        )])));
        assert!(!entra_requested(env(&[(
            AUTHENTICATION_VARIABLE,
            "Authorization=ikey"
        )])));
    }

    #[test]
    fn a_bad_connection_string_is_an_error_without_the_string() {
        let roots = rustls::RootCertStore::empty();
        let http = super::super::http_client(roots).expect("client");
        let error = exporter(
            "Authorization=Secret;InstrumentationKey=S3cr3t",
            http,
            false,
        )
        .expect_err("only ikey authorization is accepted");
        assert!(!error.to_string().contains("S3cr3t"), "{error}");
    }
}
