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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use azure_core::http::headers::Headers;
    use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode};

    use super::*;
    use crate::cloud::Cloud;

    /// Key Vault in `cloud`: a 401 whose challenge names the cloud's Key Vault resource, then
    /// 404 (the key is not needed, only the token it was asked with).
    #[derive(Debug)]
    struct Vault(Cloud);

    #[async_trait]
    impl HttpClient for Vault {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
            let mut headers = Headers::new();
            if request
                .headers()
                .get_optional_str(&"authorization".into())
                .is_none()
            {
                headers.insert(
                    "www-authenticate",
                    format!(
                        "Bearer authorization=\"{}/tenant\", resource=\"https://{}\"",
                        self.0.authority_host(),
                        self.0.keyvault_dns_suffix()
                    ),
                );
                return Ok(AsyncRawResponse::from_bytes(
                    StatusCode::Unauthorized,
                    headers,
                    Vec::new(),
                ));
            }
            Ok(AsyncRawResponse::from_bytes(
                StatusCode::NotFound,
                headers,
                br#"{"error":{"code":"KeyNotFound","message":"none"}}"#.to_vec(),
            ))
        }
    }

    /// Records the scopes tokens are asked for.
    #[derive(Debug, Default)]
    struct Scopes(Mutex<Vec<String>>);

    #[async_trait]
    impl TokenCredential for Scopes {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let mut asked = self.0.lock().unwrap_or_else(|e| e.into_inner());
            asked.extend(scopes.iter().map(|s| (*s).to_owned()));
            Ok(AccessToken::new(
                "token",
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    /// A vault of a sovereign cloud is read with a token for that cloud's Key Vault audience.
    #[tokio::test]
    async fn a_vault_is_read_with_its_clouds_key_vault_token() {
        for cloud in [Cloud::Public, Cloud::UsGovernment, Cloud::China] {
            let credential = Arc::new(Scopes::default());
            let clients = KeyVaultClients::new(
                credential.clone(),
                Transport::new(Arc::new(Vault(cloud))),
                cloud.keyvault_dns_suffix().to_owned(),
            );
            let key = KeyUrl::parse(&format!(
                "https://kv1.{}/keys/cmk",
                cloud.keyvault_dns_suffix()
            ))
            .unwrap();
            let client = clients.for_key(&key).unwrap();
            assert!(client.get_key("cmk", None).await.is_err());
            let asked = credential.0.lock().unwrap().clone();
            assert_eq!(asked, [cloud.keyvault_scope()], "{cloud}");
        }
    }
}
