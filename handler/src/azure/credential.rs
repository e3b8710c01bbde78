//! Which identity cmk-guard uses toward Azure, the first of these that is set up:
//! 1. the Function app's managed identity in Azure (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, a
//!    user-assigned one when `AZURE_CLIENT_ID` is set);
//! 2. workload identity federation, for CI pipelines and Kubernetes: an app's service principal
//!    signed in with an external token (GitHub's OIDC token, Azure Pipelines' `idToken`, a
//!    service account token) read from `AZURE_FEDERATED_TOKEN_FILE`, with `AZURE_TENANT_ID` and
//!    `AZURE_CLIENT_ID`; `AZURE_AUTHORITY_HOST` overrides the cloud's Entra ID host, as the
//!    Azure SDKs and the AKS workload identity webhook use it;
//! 3. a service principal from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`;
//! 4. the developer's `az`/`azd` login, for the CLI.
//!
//! Every credential uses the shared transport. The log names the one chosen
//! ([`SignIn::source`]): `serve`'s startup line, and the CLI's `Signing in.` (with `CMKGUARD_LOG=debug`).
//!
//! When none of them gives a token, cmk-guard has no credential at all: that is a configuration
//! problem, reported as [`NO_CREDENTIAL`] (never the identity library's aggregated error), and
//! remembered in [`SignInStatus`] so that the CLI can exit 2 and `serve` can say why it fails
//! invocations until a sign-in appears.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

/// What a person is told when cmk-guard finds no credential: the ways it signs in, in the
/// order [`from_env`] tries them. One paragraph, no line break.
pub const NO_CREDENTIAL: &str = "no Azure credential found, so nothing was checked. \
cmk-guard signs in with the first of these that is set up: \
(1) a managed identity, when IDENTITY_ENDPOINT and IDENTITY_HEADER are set (Azure Functions sets them; AZURE_CLIENT_ID picks a user-assigned identity); \
(2) workload identity federation, when AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID and AZURE_CLIENT_ID are all set (a CI pipeline's OIDC token in that file); \
(3) a service principal, when AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET are all set; \
(4) the Azure CLI, after `az login`; \
(5) the Azure Developer CLI, after `azd auth login`. \
Set one of them up and try again.";

/// The short form inside each failed read's message (the finding names the read).
const NO_CREDENTIAL_SHORT: &str = "no Azure credential found (see the startup log)";

/// The source name of workload identity federation, as the startup log shows it.
pub const WORKLOAD_IDENTITY: &str = "workload identity federation (AZURE_FEDERATED_TOKEN_FILE)";

/// The source name of the developer tools fallback, as the startup log shows it.
pub const DEVELOPER_TOOLS: &str = "developer tools (az / azd login)";

/// Whether the last sign-in attempt found no credential at all. Shared by every clone, so the
/// CLI and the engine can ask after the reads that needed a token.
#[derive(Debug, Clone, Default)]
pub struct SignInStatus(Arc<AtomicBool>);

impl SignInStatus {
    /// True when the last attempt to get a token found no credential. Only the developer tools
    /// fallback sets it: a configured managed identity or service principal that fails is a
    /// sign-in failure (perhaps transient), not a missing credential.
    pub fn no_credential(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, missing: bool) {
        self.0.store(missing, Ordering::Relaxed);
    }
}

/// The credential picked from the environment.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub credential: Arc<dyn TokenCredential>,
    /// Which credential is in use, for the startup log.
    pub source: &'static str,
    pub status: SignInStatus,
}

/// Why no credential could be set up from the environment.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not: a managed identity needs both (Azure Functions sets them); unset IDENTITY_ENDPOINT to sign in another way"
    )]
    IdentityHeaderMissing,
    #[error("managed identity: {0}")]
    ManagedIdentity(#[source] azure_core::Error),
    #[error("workload identity federation: {0}")]
    WorkloadIdentity(#[source] azure_core::Error),
    #[error(
        "AZURE_AUTHORITY_HOST must be an https:// URL such as https://login.microsoftonline.com, not {0:?}"
    )]
    AuthorityHost(String),
    #[error("service principal: {0}")]
    ServicePrincipal(#[source] azure_core::Error),
    #[error("developer tools: {0}")]
    DeveloperTools(#[source] azure_core::Error),
}

/// Picks the credential from the environment, in the order above.
pub fn from_env(
    transport: &Transport,
    cloud: crate::cloud::Cloud,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SignIn, CredentialError> {
    let value = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let client_options = ClientOptions {
        transport: Some(transport.clone()),
        cloud: Some(Arc::new(cloud.sdk_configuration())),
        ..ClientOptions::default()
    };
    let status = SignInStatus::default();
    if value("IDENTITY_ENDPOINT").is_some() {
        // Without the header the library silently probes the VM metadata endpoint instead,
        // which fails slowly and names nothing a person can fix.
        if value("IDENTITY_HEADER").is_none() {
            return Err(CredentialError::IdentityHeaderMissing);
        }
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: value("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
            client_options,
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(CredentialError::ManagedIdentity)?;
        return Ok(SignIn {
            credential,
            source: "managed identity",
            status,
        });
    }
    if let (Some(token_file), Some(tenant), Some(client)) = (
        value("AZURE_FEDERATED_TOKEN_FILE"),
        value("AZURE_TENANT_ID"),
        value("AZURE_CLIENT_ID"),
    ) {
        let mut client_options = client_options;
        if let Some(host) = value("AZURE_AUTHORITY_HOST") {
            let https = url::Url::parse(host.trim())
                .is_ok_and(|url| url.scheme() == "https" && url.host().is_some());
            if !https {
                return Err(CredentialError::AuthorityHost(
                    crate::text::clean(&host, crate::text::REASON).into_owned(),
                ));
            }
            let mut custom = azure_core::cloud::CustomConfiguration::default();
            custom.authority_host = host.trim().to_owned();
            client_options.cloud = Some(Arc::new(custom.into()));
        }
        let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: Some(client),
            tenant_id: Some(tenant),
            token_file_path: Some(token_file.into()),
        }))
        .map_err(CredentialError::WorkloadIdentity)?;
        return Ok(SignIn {
            credential,
            source: WORKLOAD_IDENTITY,
            status,
        });
    }
    if let (Some(tenant), Some(client), Some(secret)) = (
        value("AZURE_TENANT_ID"),
        value("AZURE_CLIENT_ID"),
        value("AZURE_CLIENT_SECRET"),
    ) {
        let credential = ClientSecretCredential::new(
            &tenant,
            client,
            Secret::new(secret),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map_err(CredentialError::ServicePrincipal)?;
        return Ok(SignIn {
            credential,
            source: "service principal",
            status,
        });
    }
    let tools = DeveloperToolsCredential::new(None).map_err(CredentialError::DeveloperTools)?;
    Ok(SignIn {
        credential: Arc::new(DeveloperSignIn {
            tools,
            status: status.clone(),
        }),
        source: DEVELOPER_TOOLS,
        status,
    })
}

/// The last resort, `az` then `azd`: when both fail there is no credential at all. Its failure
/// is reported in one clean line and recorded in the [`SignInStatus`]; the library's message
/// (several lines, one per tool) goes to the debug log only.
#[derive(Debug)]
struct DeveloperSignIn {
    tools: Arc<DeveloperToolsCredential>,
    status: SignInStatus,
}

#[async_trait]
impl TokenCredential for DeveloperSignIn {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        match self.tools.get_token(scopes, options).await {
            Ok(token) => {
                self.status.set(false);
                Ok(token)
            }
            Err(error) => {
                self.status.set(true);
                tracing::debug!(
                    message = "No developer sign-in.",
                    error = %crate::text::clean(&error.to_string(), crate::text::REASON)
                );
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    NO_CREDENTIAL_SHORT,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_is_one_paragraph_naming_every_way_in_order() {
        assert!(!NO_CREDENTIAL.contains('\n'));
        let order = [
            "IDENTITY_ENDPOINT",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_CLIENT_SECRET",
            "az login",
            "azd auth login",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|word| NO_CREDENTIAL.find(word).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }

    /// Records the URL of each request and answers 400, as Entra ID does to a bad secret.
    #[derive(Debug, Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl azure_core::http::HttpClient for Recording {
        async fn execute_request(
            &self,
            request: &azure_core::http::Request,
        ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request.url().to_string());
            Ok(azure_core::http::AsyncRawResponse::from_bytes(
                azure_core::http::StatusCode::BadRequest,
                azure_core::http::headers::Headers::new(),
                br#"{"error":"invalid_client"}"#.to_vec(),
            ))
        }
    }

    /// A service principal signs in at its cloud's Entra ID authority, for that cloud's ARM
    /// audience.
    #[tokio::test]
    async fn a_service_principal_signs_in_at_its_clouds_authority() {
        use crate::cloud::Cloud;
        for cloud in [Cloud::Public, Cloud::UsGovernment, Cloud::China] {
            let recording = Arc::new(Recording::default());
            let transport = Transport::new(recording.clone());
            let sign_in = from_env(&transport, cloud, |name| {
                Some(
                    match name {
                        "AZURE_TENANT_ID" => "00000000-0000-0000-0000-000000000001",
                        "AZURE_CLIENT_ID" => "00000000-0000-0000-0000-000000000002",
                        "AZURE_CLIENT_SECRET" => "s",
                        _ => return None,
                    }
                    .to_owned(),
                )
            })
            .unwrap();
            let scope = format!("{}/.default", cloud.arm_endpoint());
            assert!(
                sign_in
                    .credential
                    .get_token(&[scope.as_str()], None)
                    .await
                    .is_err()
            );
            let asked = recording.0.lock().unwrap().clone();
            let expected = format!(
                "{}/00000000-0000-0000-0000-000000000001/oauth2/v2.0/token",
                cloud.authority_host()
            );
            assert!(
                !asked.is_empty() && asked.iter().all(|url| *url == expected),
                "{cloud}: {asked:?}"
            );
        }
    }

    /// A federated token file holding `token`, removed when dropped.
    struct TokenFile(std::path::PathBuf);

    impl TokenFile {
        fn new(token: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("cmk-guard-token-{}", uuid::Uuid::new_v4()));
            std::fs::write(&path, token).unwrap();
            Self(path)
        }
    }

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Workload identity federation exchanges the file's token at the authority
    /// `AZURE_AUTHORITY_HOST` names (or the cloud's), and nothing but https is accepted there.
    #[tokio::test]
    async fn a_federated_token_is_exchanged_at_the_authority_host() {
        let file = TokenFile::new("header.payload.signature");
        let path = file.0.to_string_lossy().into_owned();
        for (authority, expected) in [
            (None, "https://login.microsoftonline.com"),
            (Some("https://localhost:8443"), "https://localhost:8443"),
        ] {
            let recording = Arc::new(Recording::default());
            let transport = Transport::new(recording.clone());
            let sign_in = from_env(&transport, crate::cloud::Cloud::Public, |name| match name {
                "AZURE_FEDERATED_TOKEN_FILE" => Some(path.clone()),
                "AZURE_TENANT_ID" => Some("00000000-0000-0000-0000-000000000001".to_owned()),
                "AZURE_CLIENT_ID" => Some("00000000-0000-0000-0000-000000000002".to_owned()),
                "AZURE_CLIENT_SECRET" => Some("a secret loses to the federated token".to_owned()),
                "AZURE_AUTHORITY_HOST" => authority.map(str::to_owned),
                _ => None,
            })
            .unwrap();
            assert_eq!(sign_in.source, WORKLOAD_IDENTITY);
            let scope = "https://management.azure.com/.default";
            assert!(sign_in.credential.get_token(&[scope], None).await.is_err());
            let asked = recording.0.lock().unwrap().clone();
            let url = format!("{expected}/00000000-0000-0000-0000-000000000001/oauth2/v2.0/token");
            assert!(
                !asked.is_empty() && asked.iter().all(|u| *u == url),
                "{asked:?}"
            );
        }
        for bad in ["http://localhost:8443", "not a url", "https://"] {
            let refused = from_env(
                &Transport::new(Arc::new(Recording::default())),
                crate::cloud::Cloud::Public,
                |name| match name {
                    "AZURE_FEDERATED_TOKEN_FILE" => Some(path.clone()),
                    "AZURE_TENANT_ID" => Some("00000000-0000-0000-0000-000000000001".to_owned()),
                    "AZURE_CLIENT_ID" => Some("00000000-0000-0000-0000-000000000002".to_owned()),
                    "AZURE_AUTHORITY_HOST" => Some(bad.to_owned()),
                    _ => None,
                },
            );
            assert!(
                matches!(refused, Err(CredentialError::AuthorityHost(_))),
                "{bad}: {:?}",
                refused.map(|s| s.source)
            );
        }
        let missing = from_env(
            &Transport::new(Arc::new(Recording::default())),
            crate::cloud::Cloud::Public,
            |name| match name {
                "AZURE_FEDERATED_TOKEN_FILE" => Some("/nonexistent/cmk-guard/token".to_owned()),
                "AZURE_TENANT_ID" => Some("00000000-0000-0000-0000-000000000001".to_owned()),
                "AZURE_CLIENT_ID" => Some("00000000-0000-0000-0000-000000000002".to_owned()),
                _ => None,
            },
        );
        assert!(
            missing
                .as_ref()
                .err()
                .is_some_and(|e| e.to_string().starts_with("workload identity federation: ")),
            "{:?}",
            missing.map(|s| s.source)
        );
    }

    #[test]
    fn the_source_follows_the_variables() {
        let http =
            super::super::transport::http_client(&super::super::TransportSettings::default())
                .unwrap();
        let transport = Transport::new(Arc::new(http));
        let pick = |vars: &'static [(&'static str, &'static str)]| {
            from_env(&transport, crate::cloud::Cloud::Public, |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap()
            .source
        };
        assert_eq!(pick(&[]), DEVELOPER_TOOLS);
        assert_eq!(pick(&[("IDENTITY_ENDPOINT", " ")]), DEVELOPER_TOOLS);
        assert_eq!(
            pick(&[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
                ("IDENTITY_HEADER", "h")
            ]),
            "managed identity"
        );
        let half = from_env(&transport, crate::cloud::Cloud::Public, |name| {
            (name == "IDENTITY_ENDPOINT").then(|| "http://127.0.0.1:1/msi".to_owned())
        });
        assert!(
            half.as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("IDENTITY_HEADER is not")),
            "{:?}",
            half.map(|s| s.source)
        );
        assert_eq!(
            pick(&[
                ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
                ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002"),
                ("AZURE_CLIENT_SECRET", "s"),
            ]),
            "service principal"
        );
    }
}
