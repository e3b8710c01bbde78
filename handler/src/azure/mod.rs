//! Azure access: the shared transport, the credential, the ARM client (all reads) and the Key
//! Vault data-plane clients (key writes). Rules and planning never import this module.

pub(crate) mod arm;
pub(crate) mod credential;
pub(crate) mod error;
pub(crate) mod keyvault;
pub(crate) mod management;
pub(crate) mod pacing;
pub(crate) mod ratelimit;
pub(crate) mod retry;
pub(crate) mod scope;
pub(crate) mod transport;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;

pub use arm::{ApiVersions, ArmClient, request_url};
pub use error::{AzureError, ErrorKind};
pub use keyvault::KeyVaultClients;
pub use management::descendant_subscriptions;
pub use retry::{Deadline, RetrySettings, retry_after_from};
pub use scope::SubscriptionScope;
pub use transport::{ConnectTo, ProxySettings, TransportSettings, http_client};

/// What the Azure clients need from the configuration. `Settings::azure` builds it from its
/// parse, so this layer knows nothing of the rest of the configuration.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// The Azure cloud (`CMKGUARD_CLOUD`): the identity library's authority host.
    pub cloud: crate::cloud::Cloud,
    /// The only host ARM requests, and so ARM tokens, may go to (`CMKGUARD_ARM_ENDPOINT`).
    pub arm_endpoint: url::Url,
    /// The CA bundle and connection overrides every outbound connection uses.
    pub transport: TransportSettings,
    /// The api-version per resource provider.
    pub api_versions: ApiVersions,
    /// An optional cap on this instance's Azure requests per second, shared by every worker
    /// (`CMKGUARD_READ_RATE`); the pacing from ARM's counts applies either way.
    pub read_rate: Option<u32>,
    /// The subscriptions requests may reach (`CMKGUARD_SUBSCRIPTIONS`, and those discovered
    /// under `CMKGUARD_MANAGEMENT_GROUPS`).
    pub subscriptions: SubscriptionScope,
    /// Key Vault data-plane clients are built only for hosts under this suffix.
    pub keyvault_dns_suffix: String,
}

/// Why the Azure clients cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error(transparent)]
    Credential(#[from] credential::CredentialError),
}

/// Why cmk-guard cannot learn its own object id.
#[derive(Debug, thiserror::Error)]
pub enum OwnObjectIdError {
    #[error("cannot get a token to learn our own object id: {0}")]
    Token(#[source] azure_core::Error),
    #[error("the token carries no `oid` claim")]
    NoClaim,
}

/// Everything that talks to Azure, built once at start.
#[derive(Debug, Clone)]
pub struct Azure {
    pub arm: ArmClient,
    pub keys: KeyVaultClients,
    /// The credential (also for other Azure services, such as email through ACS).
    pub credential: Arc<dyn TokenCredential>,
    /// The shared transport (CA bundle, connect-to) for other Azure services.
    pub transport: Transport,
    /// The same HTTP client, for channels that are not Azure SDK clients (alerts).
    pub http: reqwest::Client,
    /// Which credential is in use, for the startup log.
    pub credential_source: &'static str,
    /// Whether signing in found no credential at all (a configuration problem).
    pub sign_in: credential::SignInStatus,
}

impl Azure {
    /// Builds the clients from the settings and the environment's credential variables.
    pub fn new(
        settings: &AzureSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let http = transport::http_client(&settings.transport)?;
        let transport = Transport::new(Arc::new(http.clone()));
        let credential::SignIn {
            credential,
            source: credential_source,
            status: sign_in,
        } = credential::from_env(&transport, settings.cloud, lookup)?;
        let arm = ArmClient::new(
            settings.arm_endpoint.clone(),
            credential.clone(),
            transport.clone(),
            settings.api_versions.clone(),
            RetrySettings::default(),
            ratelimit::RateLimiter::paced(settings.read_rate),
            settings.subscriptions.clone(),
        );
        let keys = KeyVaultClients::new(
            credential.clone(),
            transport.clone(),
            settings.keyvault_dns_suffix.clone(),
        );
        Ok(Self {
            arm,
            keys,
            credential,
            transport,
            http,
            credential_source,
            sign_in,
        })
    }

    /// The object id cmk-guard acts as: the `oid` claim of its own ARM token. Events whose
    /// caller is this id were caused by cmk-guard's own remediation (the loop guard).
    pub async fn own_object_id(&self, arm_endpoint: &str) -> Result<String, OwnObjectIdError> {
        let scope = format!("{}/.default", arm_endpoint.trim_end_matches('/'));
        let token = self
            .credential
            .get_token(&[scope.as_str()], None)
            .await
            .map_err(OwnObjectIdError::Token)?;
        object_id_of(token.token.secret()).ok_or(OwnObjectIdError::NoClaim)
    }
}

/// The `oid` claim of a JWT, without verifying it (it is our own token, just received).
pub fn object_id_of(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("oid")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oid_claim() {
        use base64::Engine;
        let encode = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            encode(r#"{"alg":"RS256"}"#),
            encode(r#"{"oid":"abc","tid":"t"}"#)
        );
        assert_eq!(object_id_of(&jwt).as_deref(), Some("abc"));
        assert_eq!(object_id_of("not-a-jwt"), None);
        assert_eq!(object_id_of(&format!("x.{}.y", encode("{}"))), None);
    }
}
