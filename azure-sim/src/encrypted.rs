//! Resources encrypted with a customer-managed key, as ARM returns them (and Resource Graph
//! indexes them): storage accounts, Cosmos DB accounts, disk encryption sets, SQL servers and
//! Search services, and a CMK workspace's Microsoft-managed storage, Cosmos DB and Search in its
//! service-provisioned resource group. They are served verbatim (`Tenant::resources`): add them
//! with the scenario builder's `resource(id, body)`, `Admin::put_resource` or
//! `POST /_sim/resources`.
//!
//! The property shapes follow azure-notes §4 (storage `keyvaultproperties` in lower case,
//! `keyversion: ""` for automatic version tracking, Cosmos DB's version-less `keyVaultKeyUri`,
//! Search's enforcement without a key) and the Compute and SQL REST references
//! (`properties.activeKey.keyUrl`, `properties.keyId`).

use serde_json::{Value, json};

use crate::model::Tenant;

/// `https://{vault host}`, the key name and the version of a key URL (`None` when version-less).
fn split_key(key_url: &str) -> (String, String, Option<String>) {
    let rest = key_url.trim_end_matches('/');
    let (vault, path) = match rest.find("/keys/") {
        Some(at) => (&rest[..at], &rest[at + "/keys/".len()..]),
        None => (rest, ""),
    };
    let mut parts = path.splitn(2, '/');
    let name = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().filter(|v| !v.is_empty()).map(str::to_owned);
    (vault.to_owned(), name, version)
}

/// A storage account encrypted with `key_url` (`keySource: Microsoft.Keyvault`); a version-less
/// URL gives `keyversion: ""` (automatic version tracking), and `in_use` (a version) fills
/// `currentVersionedKeyIdentifier` as the service reports it.
pub fn storage_account(key_url: &str, in_use: Option<&str>) -> Value {
    let (vault, name, version) = split_key(key_url);
    let current = in_use
        .map(|v| format!("{vault}/keys/{name}/{v}"))
        .or_else(|| version.as_ref().map(|v| format!("{vault}/keys/{name}/{v}")));
    json!({
        "kind": "StorageV2",
        "location": "westeurope",
        "sku": { "name": "Standard_LRS", "tier": "Standard" },
        "identity": { "type": "SystemAssigned", "principalId": crate::ids::random_uuid(), "tenantId": crate::ids::random_uuid() },
        "properties": {
            "provisioningState": "Succeeded",
            "encryption": {
                "keySource": "Microsoft.Keyvault",
                "keyvaultproperties": {
                    "keyvaulturi": format!("{vault}/"),
                    "keyname": name,
                    "keyversion": version.unwrap_or_default(),
                    "currentVersionedKeyIdentifier": current,
                },
                "services": {
                    "blob": { "enabled": true, "keyType": "Account" },
                    "file": { "enabled": true, "keyType": "Account" },
                },
                "requireInfrastructureEncryption": false,
            },
        },
    })
}

/// A Cosmos DB account with a version-less `keyVaultKeyUri` and, when given, the version in use
/// (`keyVaultKeyUriVersion`).
pub fn cosmos_account(key_url: &str, in_use: Option<&str>) -> Value {
    let (vault, name, _) = split_key(key_url);
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "databaseAccountOfferType": "Standard",
        "keyVaultKeyUri": format!("{vault}/keys/{name}"),
        "defaultIdentity": "FirstPartyIdentity",
    });
    if let Some(version) = in_use {
        properties["keyVaultKeyUriVersion"] = json!(version);
    }
    json!({ "kind": "GlobalDocumentDB", "location": "westeurope", "properties": properties })
}

/// A disk encryption set whose active key is `key_url` (versioned, as Compute requires), in
/// `vault_id`; `rotates` sets `rotationToLatestKeyVersionEnabled`.
pub fn disk_encryption_set(key_url: &str, vault_id: &str, rotates: bool) -> Value {
    json!({
        "location": "westeurope",
        "identity": { "type": "SystemAssigned", "principalId": crate::ids::random_uuid(), "tenantId": crate::ids::random_uuid() },
        "properties": {
            "activeKey": { "sourceVault": { "id": vault_id }, "keyUrl": key_url },
            "encryptionType": "EncryptionAtRestWithCustomerKey",
            "rotationToLatestKeyVersionEnabled": rotates,
            "provisioningState": "Succeeded",
        },
    })
}

/// A SQL server whose TDE protector is `key_url` (`properties.keyId`).
pub fn sql_server(key_url: &str) -> Value {
    json!({
        "kind": "v12.0",
        "location": "westeurope",
        "properties": {
            "administratorLogin": "sqladmin",
            "version": "12.0",
            "state": "Ready",
            "keyId": key_url,
        },
    })
}

/// A Search service enforcing CMK (the keys themselves are set per index, Trap T22).
pub fn search_service() -> Value {
    json!({
        "location": "westeurope",
        "sku": { "name": "standard" },
        "properties": {
            "replicaCount": 1,
            "partitionCount": 1,
            "status": "running",
            "provisioningState": "succeeded",
            "encryptionWithCmk": { "enforcement": "Enabled", "encryptionComplianceStatus": "Compliant" },
        },
    })
}

/// The Microsoft-managed storage account, Cosmos DB account and Search service of the CMK
/// workspace `workspace` in its service-provisioned resource group, encrypted with the
/// workspace's key; empty when it has no CMK or is unknown.
pub fn managed_resources(tenant: &Tenant, workspace: &str) -> Vec<(String, Value)> {
    let Some(w) = tenant.workspace(workspace) else {
        return Vec::new();
    };
    let (Some(group), Some(encryption)) = (&w.service_provisioned_resource_group, &w.encryption)
    else {
        return Vec::new();
    };
    let base = format!(
        "/subscriptions/{}/resourceGroups/{group}/providers",
        w.subscription
    );
    let short: String = w
        .workspace_guid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let key = &encryption.key_identifier;
    // Cosmos DB takes the key without its version and reports the one in use: the
    // workspace's at creation.
    let (_, _, in_use) = split_key(key);
    vec![
        (
            format!("{base}/Microsoft.Storage/storageAccounts/{short}"),
            storage_account(key, None),
        ),
        (
            format!("{base}/Microsoft.DocumentDB/databaseAccounts/{short}"),
            cosmos_account(key, in_use.as_deref()),
        ),
        (
            format!("{base}/Microsoft.Search/searchServices/{short}"),
            search_service(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_follows_the_latest_version_when_the_url_has_none() {
        let body = storage_account("https://kv1.vault.azure.net/keys/cmk", Some("abc"));
        let props = &body["properties"]["encryption"]["keyvaultproperties"];
        assert_eq!(props["keyvaulturi"], "https://kv1.vault.azure.net/");
        assert_eq!(props["keyname"], "cmk");
        assert_eq!(props["keyversion"], "");
        assert_eq!(
            props["currentVersionedKeyIdentifier"],
            "https://kv1.vault.azure.net/keys/cmk/abc"
        );
        let pinned = storage_account("https://kv1.vault.azure.net/keys/cmk/v1", None);
        assert_eq!(
            pinned["properties"]["encryption"]["keyvaultproperties"]["keyversion"],
            "v1"
        );
        let cosmos = cosmos_account("https://kv1.vault.azure.net/keys/cmk/v1", None);
        assert_eq!(
            cosmos["properties"]["keyVaultKeyUri"],
            "https://kv1.vault.azure.net/keys/cmk"
        );
    }
}
