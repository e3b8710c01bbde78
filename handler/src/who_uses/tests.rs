//! Unit tests of target parsing, version matching, the query and the sorting of rows.

use serde_json::{Value, json};

use super::rows::{SEARCH_TYPE, WORKSPACE_TYPE, classify, query};
use super::*;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const OTHER: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const V1: &str = "0123456789abcdef0123456789abcdef";
const V2: &str = "fedcba9876543210fedcba9876543210";

fn key(text: &str) -> Target {
    Target::parse(text, "vault.azure.net").unwrap()
}

#[test]
fn targets_parse_key_urls_and_vault_ids() {
    let versionless = key("https://KV1.vault.azure.net/keys/cmk");
    assert_eq!(versionless.host(), "kv1.vault.azure.net");
    let vault = key(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1"
    ));
    assert_eq!(vault.host(), "kv1.vault.azure.net");
    assert!(matches!(vault, Target::Vault { .. }));
}

#[test]
fn hostile_targets_are_refused_with_a_reason() {
    for bad in [
        "",
        "cmk",
        "http://kv1.vault.azure.net/keys/cmk",
        "https://kv1.vault.azure.net.evil.example/keys/cmk",
        "https://kv1.evil.example/keys/cmk",
        "https://kv1.vault.azure.net/secrets/cmk",
        "https://kv1.vault.azure.net/keys/cmk/notaversion",
        "https://user:pw@kv1.vault.azure.net/keys/cmk",
        "https://kv1.vault.azure.net/keys/c\u{1b}[2Jmk",
        "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
        "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa",
        "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1/keys/cmk",
        "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/k'v",
    ] {
        let error = Target::parse(bad, "vault.azure.net").unwrap_err();
        assert!(!error.to_string().is_empty(), "{bad}");
    }
    // A multi-byte character across the scheme's end is refused, not sliced.
    assert!(Target::parse("https:/\u{e9}kv1", "vault.azure.net").is_err());
    assert!(Target::parse("\u{1F600}\u{1F600}x", "vault.azure.net").is_err());
    let long = format!("https://kv1.vault.azure.net/keys/{}", "a".repeat(5000));
    assert!(Target::parse(&long, "vault.azure.net").is_err());
}

#[test]
fn versions_decide_who_depends_on_a_versioned_key() {
    let pinned =
        |v: &str| KeyUrl::parse(&format!("https://kv1.vault.azure.net/keys/CMK/{v}")).unwrap();
    let latest = KeyUrl::parse("https://kv1.vault.azure.net/keys/cmk").unwrap();
    let any = key("https://kv1.vault.azure.net/keys/cmk");
    let v1 = key(&format!("https://kv1.vault.azure.net/keys/cmk/{V1}"));
    assert!(any.covers(&pinned(V1), false, None));
    assert!(any.covers(&latest, true, None));
    assert!(v1.covers(&pinned(V1), false, None));
    assert!(!v1.covers(&pinned(V2), false, None));
    // Following the latest version: depends when it is in use, or when that is not known.
    assert!(v1.covers(&latest, true, Some(V1)));
    assert!(!v1.covers(&latest, true, Some(V2)));
    assert!(v1.covers(&latest, true, None));
    let other_key = key("https://kv1.vault.azure.net/keys/other");
    assert!(!other_key.covers(&latest, true, None));
    let other_vault = key("https://kv2.vault.azure.net/keys/cmk");
    assert!(!other_vault.covers(&latest, true, None));
}

fn row(id: &str, kind: &str, columns: Value) -> Value {
    let sub = id.split('/').nth(2).unwrap_or_default();
    let rg = id
        .split('/')
        .nth(4)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut row = json!({ "id": id, "type": kind, "subscriptionId": sub, "resourceGroup": rg });
    for (k, v) in columns.as_object().unwrap() {
        row[k] = v.clone();
    }
    row
}

#[test]
fn rows_become_workspaces_with_their_managed_resources_and_other_resources() {
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    let managed = format!(
        "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws1_1/providers/Microsoft.Storage/storageAccounts/msa"
    );
    let search = format!(
        "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws1_1/providers/Microsoft.Search/searchServices/srch"
    );
    let stranger = format!(
        "/subscriptions/{SUB}/resourceGroups/azureml-rg-other_2/providers/Microsoft.Search/searchServices/s2"
    );
    let storage = format!(
        "/subscriptions/{SUB}/resourceGroups/data/providers/Microsoft.Storage/storageAccounts/sa"
    );
    let outside = format!(
        "/subscriptions/{OTHER}/resourceGroups/data/providers/Microsoft.Storage/storageAccounts/sb"
    );
    let cosmos = format!(
        "/subscriptions/{SUB}/resourceGroups/data/providers/Microsoft.DocumentDB/databaseAccounts/db"
    );
    let storage_columns = json!({"storageKeySource": "Microsoft.Keyvault", "storageVault": "https://KV1.vault.azure.net/", "storageKey": "CMK", "storageVersion": "", "storageInUse": format!("https://kv1.vault.azure.net/keys/cmk/{V2}")});
    let rows = vec![
        row(
            &ws,
            WORKSPACE_TYPE,
            json!({"workspaceKey": format!("https://kv1.vault.azure.net/keys/cmk/{V1}"), "managedGroup": format!("/subscriptions/{SUB}/resourceGroups/azureml-rg-ws1_1")}),
        ),
        row(
            &managed,
            "microsoft.storage/storageaccounts",
            storage_columns.clone(),
        ),
        row(&search, SEARCH_TYPE, json!({})),
        row(&stranger, SEARCH_TYPE, json!({})),
        row(
            &storage,
            "microsoft.storage/storageaccounts",
            storage_columns.clone(),
        ),
        row(
            &outside,
            "microsoft.storage/storageaccounts",
            storage_columns,
        ),
        row(
            &cosmos,
            "microsoft.documentdb/databaseaccounts",
            json!({"cosmosKey": "https://kv1.vault.azure.net/keys/other"}),
        ),
    ];
    let allowed = [SubscriptionId::parse(SUB).unwrap()];
    let report = classify(
        &key("https://kv1.vault.azure.net/keys/cmk"),
        &rows,
        Some(&allowed),
    );
    assert_eq!(report.workspaces.len(), 1);
    let workspace = &report.workspaces[0];
    assert_eq!(workspace.workspace.version.as_deref(), Some(V1));
    let managed_ids: Vec<&str> = workspace
        .managed_resources
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(managed_ids, [managed.as_str(), search.as_str()]);
    let others: Vec<&str> = report
        .other_resources
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(others, [storage.as_str()]);
    assert_eq!(report.other_resources[0].version.as_deref(), Some(LATEST));
    assert_eq!(
        report.other_resources[0].version_in_use.as_deref(),
        Some(V2)
    );
    assert_eq!(
        report.counts().to_string(),
        "1 workspace and 1 other resource"
    );
    // The vault target covers the Cosmos DB account's other key too.
    let vault = Target::parse(
        &format!("/subscriptions/{SUB}/resourceGroups/kv/providers/Microsoft.KeyVault/vaults/kv1"),
        "vault.azure.net",
    )
    .unwrap();
    let report = classify(&vault, &rows, Some(&allowed));
    assert_eq!(report.other_resources.len(), 2);
}

#[test]
fn the_query_names_only_the_plain_host() {
    let text = query("kv1.vault.azure.net");
    assert!(text.contains("storageVault contains 'kv1.vault.azure.net'"));
    assert_eq!(text.matches('\'').count() % 2, 0);
}
