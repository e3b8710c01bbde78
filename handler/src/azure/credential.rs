//! Which identity cmk-guard uses toward Azure: the Function app's managed identity in Azure
//! (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, a user-assigned one when `AZURE_CLIENT_ID` is set),
//! a service principal from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`, or the
//! developer's `az`/`azd` login for the CLI. Every credential uses the shared transport.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};

/// Picks the credential from the environment, in the order above.
pub fn from_env(
    transport: &Transport,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(Arc<dyn TokenCredential>, &'static str), String> {
    let value = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let client_options = ClientOptions {
        transport: Some(transport.clone()),
        ..ClientOptions::default()
    };
    if value("IDENTITY_ENDPOINT").is_some() {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: value("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
            client_options,
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| format!("managed identity: {e}"))?;
        return Ok((credential, "managed identity"));
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
        .map_err(|e| format!("service principal: {e}"))?;
        return Ok((credential, "service principal"));
    }
    let credential =
        DeveloperToolsCredential::new(None).map_err(|e| format!("developer tools: {e}"))?;
    Ok((credential, "developer tools (az / azd login)"))
}
