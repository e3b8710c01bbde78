//! The one Resource Graph query of `who-uses` and what its rows say: the key each resource is
//! configured with, and which workspace's managed resource group a resource lives in.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio::time::Instant;

use super::{Dependent, LATEST, MAX_TARGET_BYTES, Report, Target, WorkspaceUse};
use crate::azure::AzureError;
use crate::ids::{ArmResourceId, KeyUrl, SubscriptionId};
use crate::observe::{GraphEnd, Observer};

/// Resource Graph rows per page (the service's maximum).
const PAGE: u64 = 1000;
/// At most this many pages (100,000 resources); more is reported as incomplete.
const MAX_PAGES: usize = 100;
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
pub(super) const WORKSPACE_TYPE: &str = "microsoft.machinelearningservices/workspaces";
pub(super) const SEARCH_TYPE: &str = "microsoft.search/searchservices";

/// The query: the encryption columns of every resource whose key is in the target's vault, and
/// every resource of those types in a service-provisioned (`azureml-rg-`) resource group.
pub(super) fn query(host: &str) -> String {
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
pub(super) fn key_of(row: &Value) -> Option<(KeyUrl, bool, Option<String>)> {
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
pub(super) fn classify(
    target: &Target,
    rows: &[Value],
    allowed: Option<&[SubscriptionId]>,
) -> Report {
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

/// Every page of the query, and why reading stopped early (if it did).
pub(super) async fn read(
    observer: &Observer,
    host: &str,
    subscriptions: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> (Vec<Value>, Option<String>) {
    let mut rows = Vec::new();
    let end = observer
        .resource_graph_rows(
            &query(host),
            subscriptions,
            (PAGE, MAX_PAGES),
            deadline,
            |row| rows.push(row.clone()),
        )
        .await;
    let stopped = match end {
        Ok(GraphEnd::Complete) => None,
        Ok(GraphEnd::Truncated) => Some("Resource Graph truncated the result".to_owned()),
        Ok(GraphEnd::TooManyPages) => Some(format!(
            "more than {} resources; only the first {} were read",
            PAGE as usize * MAX_PAGES,
            PAGE as usize * MAX_PAGES
        )),
        Err(error) => Some(describe(&error)),
    };
    (rows, stopped)
}

fn describe(error: &AzureError) -> String {
    format!(
        "Resource Graph could not be read: {}",
        crate::text::field(&error.to_string())
    )
}
