//! Azure access: the shared transport, the credential, the ARM client (all reads) and the Key
//! Vault data-plane clients (key writes). Rules and planning never import this module.

pub mod arm;
pub mod credential;
pub mod error;
pub mod keyvault;
pub mod transport;

use std::sync::Arc;

use azure_core::http::Transport;

pub use arm::{ApiVersions, ArmClient, Deadline, RetrySettings};
pub use error::{AzureError, ErrorKind};
pub use keyvault::KeyVaultClients;
pub use transport::{ConnectTo, TransportSettings};

use crate::settings::Settings;

/// Everything that talks to Azure, built once at start.
#[derive(Debug, Clone)]
pub struct Azure {
    pub arm: ArmClient,
    pub keys: KeyVaultClients,
    /// Which credential is in use, for the startup log.
    pub credential_source: &'static str,
}

impl Azure {
    /// Builds the clients from the settings and the environment's credential variables.
    pub fn new(
        settings: &Settings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let http = transport::http_client(&settings.transport)?;
        let transport = Transport::new(Arc::new(http));
        let (credential, credential_source) = credential::from_env(&transport, lookup)?;
        let arm = ArmClient::new(
            settings.arm_endpoint.clone(),
            credential.clone(),
            transport.clone(),
            settings.api_versions.clone(),
            RetrySettings::default(),
        );
        let keys = KeyVaultClients::new(
            credential,
            transport,
            settings.intake.keyvault_dns_suffix.clone(),
        );
        Ok(Self {
            arm,
            keys,
            credential_source,
        })
    }
}
