//! A key's blast radius: every CMK workspace and every other resource in scope encrypted with a
//! key or with a key of a vault, with the key version each one uses (`cmk-guard who-uses`,
//! `POST /api/who-uses`, the dependency counts of alerts on keys and vaults).
//!
//! One Resource Graph query (paged, `$skipToken` replayed with the same query and scopes,
//! azure-notes Trap T11) reads the encryption properties of the resource types that hold a key
//! URL in ARM, within the allowlisted subscriptions only:
//!
//! | type | property | versionless means |
//! |------|----------|-------------------|
//! | ML workspace | `properties.encryption.keyVaultProperties.keyIdentifier` | latest |
//! | storage account | `properties.encryption.keyvaultproperties.{keyvaulturi, keyname, keyversion}` (`keySource` `Microsoft.Keyvault`); in use: `currentVersionedKeyIdentifier` | auto-rotation (`keyversion: ""`) |
//! | Cosmos DB account | `properties.keyVaultKeyUri` (always versionless); in use: `keyVaultKeyUriVersion` | auto-rotation |
//! | disk encryption set | `properties.activeKey.keyUrl`; `rotationToLatestKeyVersionEnabled` | auto-rotation when that is true |
//! | SQL server | `properties.keyId` (the TDE protector set on the server) | latest |
//! | Search service | none: the key is set per index (Trap T22); listed only in a workspace's managed resource group | — |
//!
//! A workspace's Microsoft-managed storage, Cosmos DB and Search live in its
//! `serviceProvisionedResourceGroup` (`azureml-rg-…`, Trap T21); they are listed under the
//! workspace, the rest as other resources. Resource Graph is discovery (Trap T19): what it says
//! may lag ARM by minutes.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::azure::AzureError;
use crate::engine::Engine;
use crate::ids::{ArmResourceId, KeyUrl, SubscriptionId};
use crate::observe::Observer;

/// The longest target accepted (an ARM id's bound; a key URL is far shorter).
pub const MAX_TARGET_BYTES: usize = crate::ids::MAX_ARM_ID_BYTES;
/// The largest `POST /api/who-uses` body read.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Resource Graph rows per page (the service's maximum).
const PAGE: u64 = 1000;
/// At most this many pages (100,000 resources); more is reported as incomplete.
const MAX_PAGES: usize = 100;
/// The `version` of a consumer that follows the key's newest version.
pub const LATEST: &str = "latest";

/// The resource types whose encryption properties the query reads (Resource Graph lower-cases
/// `type`; `in~` compares without case anyway).
const TYPES: [&str; 6] = [
    WORKSPACE_TYPE,
    "microsoft.storage/storageaccounts",
    "microsoft.documentdb/databaseaccounts",
    "microsoft.compute/diskencryptionsets",
    "microsoft.sql/servers",
    SEARCH_TYPE,
];
const WORKSPACE_TYPE: &str = "microsoft.machinelearningservices/workspaces";
const SEARCH_TYPE: &str = "microsoft.search/searchservices";

/// What `who-uses` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A key: every version when the URL has none, else that version.
    Key(KeyUrl),
    /// Every key of a vault: the vault's ARM id and its host.
    Vault { id: ArmResourceId, host: String },
}

/// Why a target was refused; the message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

impl Target {
    /// Parses a key URL (`https://{vault}.{suffix}/keys/{name}[/{version}]`) or a vault's ARM id
    /// (`/subscriptions/…/providers/Microsoft.KeyVault/vaults/{name}`); the vault host must be
    /// under the cloud's Key Vault DNS suffix.
    pub fn parse(text: &str, keyvault_dns_suffix: &str) -> Result<Self, TargetError> {
        if text.len() > MAX_TARGET_BYTES {
            return Err(TargetError(format!(
                "the target is {} bytes long; at most {MAX_TARGET_BYTES} are accepted",
                text.len()
            )));
        }
        let text = text.trim();
        if text.chars().any(crate::text::is_control) {
            return Err(TargetError(
                "the target holds control characters".to_owned(),
            ));
        }
        let suffix = keyvault_dns_suffix
            .trim_start_matches('.')
            .to_ascii_lowercase();
        if text.starts_with('/') {
            let id = ArmResourceId::parse(text).map_err(|e| TargetError(e.to_string()))?;
            if !id.is_type("Microsoft.KeyVault/vaults") {
                return Err(TargetError(format!(
                    "`{}` is not a key vault's ARM id (…/providers/Microsoft.KeyVault/vaults/{{name}})",
                    crate::text::field(text)
                )));
            }
            let host = format!("{}.{suffix}", id.name().to_ascii_lowercase());
            return Ok(Self::Vault { id, host });
        }
        if text.len() >= 8 && text[..8].eq_ignore_ascii_case("https://") {
            let key = KeyUrl::parse(text).map_err(|e| TargetError(e.to_string()))?;
            if !key.is_under(&suffix) || !is_plain_host(key.host()) {
                return Err(TargetError(format!(
                    "the key's vault host `{}` is not under {suffix}",
                    crate::text::field(key.host())
                )));
            }
            return Ok(Self::Key(key));
        }
        Err(TargetError(
            "expected a Key Vault key URL (https://{vault}.vault.azure.net/keys/{name}[/{version}]) or a key vault's ARM id (/subscriptions/…/providers/Microsoft.KeyVault/vaults/{name})".to_owned(),
        ))
    }

    /// The vault host, lower-case (`kv1.vault.azure.net`).
    pub fn host(&self) -> &str {
        match self {
            Self::Key(key) => key.host(),
            Self::Vault { host, .. } => host,
        }
    }

    /// True when a consumer of `key` (following the latest version when `follows_latest`,
    /// currently at `current` when known) depends on this target.
    fn covers(&self, key: &KeyUrl, follows_latest: bool, current: Option<&str>) -> bool {
        if key.host() != self.host() {
            return false;
        }
        let Self::Key(target) = self else {
            return true;
        };
        if !key.name().eq_ignore_ascii_case(target.name()) {
            return false;
        }
        match target.version() {
            None => true,
            // A consumer that follows the latest version depends on the wanted one when it is
            // the one in use, or may be (its version in use is not shown).
            Some(wanted) => match (key.version(), current) {
                (Some(pinned), _) if !follows_latest => pinned.eq_ignore_ascii_case(wanted),
                (_, Some(current)) => current.eq_ignore_ascii_case(wanted),
                (pinned, None) => follows_latest || pinned.is_none(),
            },
        }
    }
}

/// Only `[a-z0-9.-]`: the host goes into the query's string literal.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(key) => write!(f, "{key}"),
            Self::Vault { id, .. } => write!(f, "{id}"),
        }
    }
}

/// One resource that depends on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependent {
    pub id: String,
    /// The resource type, lower-case as Resource Graph reports it.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The key it is configured with, as configured (`None` for a managed Search service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The pinned version, or [`LATEST`] when it follows the newest version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version in use, when the resource reports it (storage, Cosmos DB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_in_use: Option<String>,
}

/// A CMK workspace that depends on the target, with its Microsoft-managed resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUse {
    #[serde(flatten)]
    pub workspace: Dependent,
    /// The service-provisioned resource group, as the workspace names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_resource_group: Option<String>,
    pub managed_resources: Vec<Dependent>,
}

/// The answer: what depends on the target, and whether it was read completely.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: String,
    /// False when Resource Graph could not be read completely: the lists are then a lower bound.
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    /// The subscriptions searched (`None`: every subscription the identity can read).
    pub subscriptions: Option<Vec<String>>,
    pub workspaces: Vec<WorkspaceUse>,
    pub other_resources: Vec<Dependent>,
}

impl Report {
    /// "12 workspaces and 4 other resources", for alerts.
    pub fn counts(&self) -> Counts {
        Counts {
            workspaces: self.workspaces.len(),
            other_resources: self.other_resources.len(),
        }
    }
}

/// How many workspaces and other resources depend on a key or vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub workspaces: usize,
    pub other_resources: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{} and {}",
            plural(self.workspaces, "workspace", "workspaces"),
            plural(self.other_resources, "other resource", "other resources")
        )
    }
}

/// The query: the encryption columns of every resource whose key is in the target's vault, and
/// every resource of those types in a service-provisioned (`azureml-rg-`) resource group.
fn query(host: &str) -> String {
    let types = TYPES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "resources \
         | where type in~ ({types}) \
         | extend workspaceKey = tostring(properties.encryption.keyVaultProperties.keyIdentifier), \
           managedGroup = tostring(properties.serviceProvisionedResourceGroup), \
           storageKeySource = tostring(properties.encryption.keySource), \
           storageVault = tostring(properties.encryption.keyvaultproperties.keyvaulturi), \
           storageKey = tostring(properties.encryption.keyvaultproperties.keyname), \
           storageVersion = tostring(properties.encryption.keyvaultproperties.keyversion), \
           storageInUse = tostring(properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier), \
           cosmosKey = tostring(properties.keyVaultKeyUri), \
           cosmosInUse = tostring(properties.keyVaultKeyUriVersion), \
           diskSetKey = tostring(properties.activeKey.keyUrl), \
           diskSetRotates = tostring(properties.rotationToLatestKeyVersionEnabled), \
           sqlKey = tostring(properties.keyId) \
         | where workspaceKey contains '{host}' or storageVault contains '{host}' \
           or cosmosKey contains '{host}' or diskSetKey contains '{host}' \
           or sqlKey contains '{host}' or resourceGroup startswith 'azureml-rg-' \
         | project id, type, subscriptionId, resourceGroup, workspaceKey, managedGroup, \
           storageKeySource, storageVault, storageKey, storageVersion, storageInUse, cosmosKey, \
           cosmosInUse, diskSetKey, diskSetRotates, sqlKey \
         | order by id asc"
    )
}

/// The key a row's resource is configured with: (key, follows the latest version, version in
/// use when reported). `None` when the row names no key Key Vault could hold.
fn key_of(row: &Value) -> Option<(KeyUrl, bool, Option<String>)> {
    let column = |name: &str| {
        row.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TARGET_BYTES)
    };
    let resource_type = column("type")?.to_ascii_lowercase();
    let parse = |text: &str| KeyUrl::parse(text).ok();
    match resource_type.as_str() {
        WORKSPACE_TYPE => {
            let key = parse(column("workspaceKey")?)?;
            let latest = key.version().is_none();
            Some((key, latest, None))
        }
        "microsoft.storage/storageaccounts" => {
            if !column("storageKeySource")?.eq_ignore_ascii_case("Microsoft.Keyvault") {
                return None;
            }
            let vault = column("storageVault")?.trim_end_matches('/');
            let vault = vault.strip_suffix(":443").unwrap_or(vault);
            let name = column("storageKey")?;
            let url = match column("storageVersion") {
                Some(version) => format!("{vault}/keys/{name}/{version}"),
                None => format!("{vault}/keys/{name}"),
            };
            let key = parse(&url)?;
            let latest = key.version().is_none();
            let in_use = column("storageInUse")
                .and_then(parse)
                .and_then(|k| k.version().map(str::to_owned));
            Some((key, latest, in_use))
        }
        "microsoft.documentdb/databaseaccounts" => {
            let key = parse(column("cosmosKey")?)?;
            let in_use = column("cosmosInUse").map(str::to_ascii_lowercase);
            Some((key, true, in_use))
        }
        "microsoft.compute/diskencryptionsets" => {
            let key = parse(column("diskSetKey")?)?;
            let rotates = column("diskSetRotates").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let latest = rotates || key.version().is_none();
            let in_use = key.version().map(str::to_owned);
            Some((key, latest, in_use))
        }
        "microsoft.sql/servers" => {
            let key = parse(column("sqlKey")?)?;
            let latest = key.version().is_none();
            Some((key, latest, None))
        }
        _ => None,
    }
}

/// One row as a [`Dependent`] of its key.
fn dependent(row: &Value, key: Option<&(KeyUrl, bool, Option<String>)>) -> Option<Dependent> {
    let id = row.get("id").and_then(Value::as_str)?;
    let id = ArmResourceId::parse(id).ok()?;
    let resource_type = row
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some(Dependent {
        id: id.to_string(),
        resource_type,
        key: key.map(|(k, _, _)| k.to_string()),
        version: key.map(|(k, latest, _)| {
            if *latest {
                LATEST.to_owned()
            } else {
                k.version().unwrap_or(LATEST).to_owned()
            }
        }),
        version_in_use: key.and_then(|(_, _, in_use)| in_use.clone()),
    })
}

/// The (subscription, resource group) a managed-group column names: an ARM id or a name in the
/// workspace's own subscription.
fn managed_group_of(value: &str, subscription: &str) -> Option<(String, String)> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match ArmResourceId::parse(value) {
        Ok(id) => Some((
            id.subscription().to_string(),
            id.resource_group()?.to_ascii_lowercase(),
        )),
        Err(_) => crate::ids::is_resource_group_name(value).then(|| {
            (
                subscription.to_ascii_lowercase(),
                value.to_ascii_lowercase(),
            )
        }),
    }
}

/// Sorts rows into workspaces (with their managed resources) and other resources.
fn classify(target: &Target, rows: &[Value], allowed: Option<&[SubscriptionId]>) -> Report {
    let text = |row: &Value, name: &str| {
        row.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // Never outside the allowlist, whatever Resource Graph returns.
    let rows: Vec<&Value> = rows
        .iter()
        .filter(|row| {
            let sub = SubscriptionId::parse(&text(row, "subscriptionId")).ok();
            match (allowed, sub) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(allowed), Some(sub)) => allowed.contains(&sub),
            }
        })
        .collect();
    let mut workspaces = BTreeMap::new();
    let mut managed: BTreeMap<(String, String), String> = BTreeMap::new();
    for row in &rows {
        if !text(row, "type").eq_ignore_ascii_case(WORKSPACE_TYPE) {
            continue;
        }
        let key = key_of(row);
        let Some(found) = key
            .as_ref()
            .filter(|(k, l, c)| target.covers(k, *l, c.as_deref()))
        else {
            continue;
        };
        let Some(workspace) = dependent(row, Some(found)) else {
            continue;
        };
        let group = text(row, "managedGroup");
        if let Some(place) = managed_group_of(&group, &text(row, "subscriptionId")) {
            managed.insert(place, workspace.id.to_ascii_lowercase());
        }
        workspaces.insert(
            workspace.id.to_ascii_lowercase(),
            WorkspaceUse {
                workspace,
                managed_resource_group: (!group.trim().is_empty()).then(|| group.trim().to_owned()),
                managed_resources: Vec::new(),
            },
        );
    }
    let mut others = Vec::new();
    for row in &rows {
        if text(row, "type").eq_ignore_ascii_case(WORKSPACE_TYPE) {
            continue;
        }
        let place = (
            text(row, "subscriptionId").to_ascii_lowercase(),
            text(row, "resourceGroup").to_ascii_lowercase(),
        );
        let key = key_of(row);
        let uses = key
            .as_ref()
            .is_some_and(|(k, l, c)| target.covers(k, *l, c.as_deref()));
        if let Some(owner) = managed.get(&place).and_then(|ws| workspaces.get_mut(ws)) {
            // The workspace's own storage, Cosmos DB and Search: encrypted with its key by the
            // service (a Search service shows no key in ARM).
            if (uses || key.is_none())
                && let Some(item) = dependent(row, key.as_ref().filter(|_| uses))
            {
                owner.managed_resources.push(item);
            }
        } else if uses && let Some(item) = dependent(row, key.as_ref()) {
            others.push(item);
        }
    }
    Report {
        target: target.to_string(),
        complete: true,
        incomplete_reason: None,
        subscriptions: allowed.map(|subs| subs.iter().map(ToString::to_string).collect()),
        workspaces: workspaces.into_values().collect(),
        other_resources: others,
    }
}

/// Finds what depends on `target` within `subscriptions` (`None`: every readable one; callers
/// pass the allowlist). A Resource Graph failure or a result cut short gives an incomplete
/// report holding what was read.
pub async fn find(
    observer: &Observer,
    target: &Target,
    subscriptions: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> Report {
    let (rows, failure) = read_rows(observer, target.host(), subscriptions, deadline).await;
    let mut report = classify(target, &rows, subscriptions);
    if let Some(reason) = failure {
        report.complete = false;
        report.incomplete_reason = Some(reason);
    }
    report
}

/// Every page of the query, and why reading stopped early (if it did).
async fn read_rows(
    observer: &Observer,
    host: &str,
    subscriptions: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> (Vec<Value>, Option<String>) {
    let mut rows = Vec::new();
    if subscriptions.is_some_and(<[SubscriptionId]>::is_empty) {
        // Resource Graph would read an empty list as every subscription.
        return (rows, None);
    }
    let query = query(host);
    let mut skip_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut body = json!({
            "query": query,
            "options": { "resultFormat": "objectArray", "$top": PAGE },
        });
        if let Some(subscriptions) = subscriptions {
            body["subscriptions"] = json!(
                subscriptions
                    .iter()
                    .map(SubscriptionId::as_str)
                    .collect::<Vec<_>>()
            );
        }
        if let Some(token) = &skip_token {
            body["options"]["$skipToken"] = json!(token);
        }
        let page = match observer.resource_graph(&body, deadline).await {
            Ok(page) => page,
            Err(error) => return (rows, Some(describe(&error))),
        };
        rows.extend(
            page.get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        if page.get("resultTruncated").and_then(Value::as_str) == Some("true") {
            return (rows, Some("Resource Graph truncated the result".to_owned()));
        }
        skip_token = page
            .get("$skipToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if skip_token.is_none() {
            return (rows, None);
        }
    }
    (
        rows,
        Some(format!(
            "more than {} resources; only the first {} were read",
            PAGE as usize * MAX_PAGES,
            PAGE as usize * MAX_PAGES
        )),
    )
}

fn describe(error: &AzureError) -> String {
    format!(
        "Resource Graph could not be read: {}",
        crate::text::field(&error.to_string())
    )
}

/// The subscriptions in scope: the allowlist, once its management groups are listed; a group
/// that could not be listed leaves the answer incomplete (the reason is returned).
pub async fn scope(
    engine: &Engine,
    deadline: Instant,
) -> (Option<Vec<SubscriptionId>>, Option<String>) {
    let allowlist = &engine.settings().intake.subscriptions;
    let mut failure = None;
    if !allowlist.groups().is_empty() {
        let failures = engine.discover_subscriptions(deadline).await;
        failure = failures.first().map(|first| {
            format!(
                "the subscriptions under management group {} could not be listed: {}",
                first.group,
                crate::text::chain(&first.error)
            )
        });
    }
    (allowlist.snapshot(), failure)
}

/// Runs a search within `subscriptions` and the scope's own failure, if any.
pub async fn search(
    engine: &Engine,
    target: &Target,
    (subscriptions, scope_failure): (Option<Vec<SubscriptionId>>, Option<String>),
    deadline: Instant,
) -> Report {
    let mut report = find(
        engine.observer(),
        target,
        subscriptions.as_deref(),
        deadline,
    )
    .await;
    if let Some(reason) = scope_failure
        && report.complete
    {
        report.complete = false;
        report.incomplete_reason = Some(reason);
    }
    report
}

/// `POST /api/who-uses`: the status and JSON body for a request `{"target": "<key URL | vault id>"}`:
/// 200 with the report, 400 with the reason, 503 with what was read when Resource Graph could
/// not be read completely.
pub async fn http(engine: &Engine, body: &[u8]) -> (StatusCode, Value) {
    let deadline = Instant::now() + crate::engine::EVENT_BUDGET;
    let bad = |why: String| (StatusCode::BAD_REQUEST, json!({ "error": why }));
    if body.len() > MAX_BODY_BYTES {
        return bad(format!(
            "the body is {} bytes long; at most {MAX_BODY_BYTES} are accepted",
            body.len()
        ));
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bad(
            r#"the body must be JSON: {"target": "<key URL | key vault ARM id>"}"#.to_owned(),
        );
    };
    let Some(text) = request.get("target").and_then(Value::as_str) else {
        return bad(
            r#"`target` (a string) is missing: {"target": "<key URL | key vault ARM id>"}"#
                .to_owned(),
        );
    };
    let target = match Target::parse(text, &engine.settings().intake.keyvault_dns_suffix) {
        Ok(target) => target,
        Err(error) => return bad(error.to_string()),
    };
    let scope = scope(engine, deadline).await;
    let report = search(engine, &target, scope, deadline).await;
    let status = if report.complete {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, serde_json::to_value(&report).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
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
            &format!(
                "/subscriptions/{SUB}/resourceGroups/kv/providers/Microsoft.KeyVault/vaults/kv1"
            ),
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
}
