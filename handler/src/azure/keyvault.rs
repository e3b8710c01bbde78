//! Key Vault data-plane clients (the official `azure_security_keyvault_keys` crate), one per
//! vault, created only for hosts under the configured Key Vault DNS suffix. The crate answers
//! Key Vault's 401 challenge itself and checks that the challenge's resource matches the vault
//! host (azure-notes Trap T12).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};

use super::error::{AzureError, ErrorKind};
use crate::ids::KeyUrl;

/// Data-plane api-version (the newest stable; the crate's default may be a preview).
pub const KEYVAULT_API_VERSION: &str = "2025-07-01";

/// Hands out one `KeyClient` per vault host.
#[derive(Clone)]
pub struct KeyVaultClients {
    credential: Arc<dyn TokenCredential>,
    transport: Transport,
    dns_suffix: String,
    clients: Arc<Mutex<HashMap<String, Arc<KeyClient>>>>,
}

impl std::fmt::Debug for KeyVaultClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultClients")
            .field("dns_suffix", &self.dns_suffix)
            .finish_non_exhaustive()
    }
}

impl KeyVaultClients {
    /// Clients for vaults under `dns_suffix`.
    pub fn new(
        credential: Arc<dyn TokenCredential>,
        transport: Transport,
        dns_suffix: String,
    ) -> Self {
        Self {
            credential,
            transport,
            dns_suffix,
            clients: Arc::default(),
        }
    }

    /// The client for the vault of `key`; refused, before any request, when the host is not
    /// under the Key Vault DNS suffix.
    pub fn for_key(&self, key: &KeyUrl) -> Result<Arc<KeyClient>, AzureError> {
        if !key.is_under(&self.dns_suffix) {
            return Err(AzureError::transport(
                format!("GET https://{}/keys/{}", key.host(), key.name()),
                ErrorKind::Refused,
                format!(
                    "{} is not under the Key Vault DNS suffix {}",
                    key.host(),
                    self.dns_suffix
                ),
            ));
        }
        let mut clients = self.clients.lock().map_err(|_| {
            AzureError::transport(
                key.to_string(),
                ErrorKind::Transient,
                "Key Vault client cache is poisoned",
            )
        })?;
        if let Some(client) = clients.get(key.host()) {
            return Ok(client.clone());
        }
        let options = KeyClientOptions {
            api_version: KEYVAULT_API_VERSION.to_owned(),
            client_options: ClientOptions {
                transport: Some(self.transport.clone()),
                // The SDK's retry would wait out any Retry-After until the caller's timeout;
                // ARM's deadline-bound retry gives up at once when the wait cannot fit.
                retry: RetryOptions::none(),
                per_call_policies: vec![Arc::new(super::retry::DeadlineRetryPolicy::new(
                    super::retry::RetrySettings::default(),
                ))],
                per_try_policies: vec![Arc::new(crate::telemetry::AzureTelemetryPolicy {
                    service: "keyvault",
                })],
                ..ClientOptions::default()
            },
            verify_challenge_resource: Some(true),
        };
        let client = KeyClient::new(
            &format!("https://{}/", key.host()),
            self.credential.clone(),
            Some(options),
        )
        .map(Arc::new)
        .map_err(|e| AzureError::transport(key.to_string(), ErrorKind::Permanent, e.to_string()))?;
        clients.insert(key.host().to_owned(), client.clone());
        Ok(client)
    }
}
