//! Bulk reads for the sweep and `cmk-guard scan`: the [`Inventory`] of one subscription, read
//! once per pass with a few lists instead of seven reads per workspace: the workspaces, the
//! vaults (with their access policies), the keys of each vault used, the role assignments at,
//! above and below the subscription, the provider registrations, and (Resource Graph) which
//! workspaces have endpoints.
//!
//! A snapshot taken with [`Observer::snapshot_from`] runs the targeted path unchanged
//! (`snapshot_hinted`); each ARM read it makes is first answered from the inventory, with the
//! object the list returned for it. What the inventory does not hold (a vault in another
//! subscription, a list that failed, a key without a rotation policy in the list, a workspace
//! that Resource Graph shows with endpoints, a deleted vault) is read as before, so failures are
//! reported exactly as on the targeted path. The inventory belongs to the pass that read it,
//! not to the observer's short cache.
//!
//! Two things bulk cannot see: group membership (the inventory answers a workspace's
//! `assignedTo()` list with the principal's direct assignments only) and endpoints created
//! after Resource Graph indexed the subscription. The engine re-reads a workspace through the
//! targeted path when its bulk evaluation fails `workspace.key-access`
//! (`Engine::snapshots_in_bulk`); every remediation reads what it fixes again before writing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Observer, cache_key, parse};
use crate::ids::{ArmResourceId, KeyUrl, SubscriptionId};
use crate::snapshot::{REQUIRED_PROVIDERS, Snapshot, Workspace};

tokio::task_local! {
    /// The inventory answering the reads of the snapshot being taken, if any.
    pub(super) static PREFILLED: Arc<Inventory>;
}

/// Resource Graph rows per page of the endpoint query (the service's maximum).
const GRAPH_PAGE: u64 = 1000;
/// At most this many Resource Graph pages (a million endpoints).
const GRAPH_MAX_PAGES: usize = 1000;
/// The endpoints query: the ids of a subscription's online and batch endpoints.
const ENDPOINTS_QUERY: &str = "resources | where type in~ \
    ('microsoft.machinelearningservices/workspaces/onlineendpoints', \
    'microsoft.machinelearningservices/workspaces/batchendpoints') | project id | order by id asc";

/// What the bulk lists of one subscription said, as the answers of the targeted reads they
/// replace (keyed like the observer's cache, lower-case).
#[derive(Debug, Default)]
pub struct Inventory {
    answers: HashMap<String, Arc<Value>>,
}

impl Inventory {
    /// An inventory that answers nothing: every read goes to Azure.
    pub fn empty() -> Self {
        Self::default()
    }

    /// How many reads this inventory can answer.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when it answers no read.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn answer(&mut self, key: String, value: Value) {
        self.answers
            .insert(key.to_ascii_lowercase(), Arc::new(value));
    }
}

/// The inventory's answer to the read `key` (a cache key), when a snapshot is being taken from
/// one.
pub(super) fn prefilled(key: &str) -> Option<Arc<Value>> {
    PREFILLED
        .try_with(|inventory| inventory.answers.get(&key.to_ascii_lowercase()).cloned())
        .ok()
        .flatten()
}

/// The answers about one vault's keys: `Keys_List` items by lower-case key name.
type KeyList = HashMap<String, Value>;

impl Observer {
    /// Reads the inventory of `subscription` for `workspaces` (ids in it): the subscription's
    /// lists once, and the keys of the vaults those workspaces use once per vault. A list that
    /// fails leaves its part to the targeted reads.
    pub async fn inventory(
        &self,
        subscription: &SubscriptionId,
        workspaces: &[&ArmResourceId],
        deadline: Instant,
    ) -> Inventory {
        let mut inventory = Inventory::default();
        let sub = subscription.as_str();
        let workspaces_path =
            format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/workspaces");
        let vaults_path = format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults");
        let assignments_path =
            format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments");
        let providers_path = format!("/subscriptions/{sub}/providers");
        let (listed, vaults, assignments, providers, with_endpoints) = tokio::join!(
            self.bulk_list(
                &workspaces_path,
                "Microsoft.MachineLearningServices",
                deadline
            ),
            self.bulk_list(&vaults_path, "Microsoft.KeyVault", deadline),
            self.bulk_list(&assignments_path, "Microsoft.Authorization", deadline),
            self.bulk_list(&providers_path, "Microsoft.Resources", deadline),
            self.workspaces_with_endpoints(subscription, deadline),
        );
        if let Some(providers) = &providers {
            self.answer_providers(&mut inventory, sub, providers);
        }
        let Some(listed) = listed else {
            return inventory;
        };
        let wanted: BTreeSet<String> = workspaces
            .iter()
            .map(|id| id.as_str().to_ascii_lowercase())
            .collect();
        let vaults: HashMap<String, Value> = vaults
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((lower_id(&v)?, v)))
            .collect();
        let chosen: Vec<(Value, Workspace)> = listed
            .into_iter()
            .filter(|item| lower_id(item).is_some_and(|id| wanted.contains(&id)))
            .map(|item| {
                let ws = parse::workspace(&item);
                (item, ws)
            })
            .collect();
        let used_vaults: BTreeSet<String> = chosen
            .iter()
            .filter_map(|(_, ws)| vault_of(ws))
            .filter(|vault| vaults.contains_key(vault))
            .collect();
        let key_lists = self.key_lists(&used_vaults, &vaults, deadline).await;
        let assignments = assignments.as_deref().map(by_principal);
        let mut versions = HashMap::new();
        for (item, ws) in chosen {
            let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            self.answer_workspace(&mut inventory, &id, item, with_endpoints.as_ref());
            let Some(vault_key) = vault_of(&ws) else {
                continue;
            };
            let Some(vault) = vaults.get(&vault_key) else {
                continue;
            };
            self.answer(
                &mut inventory,
                "Microsoft.KeyVault",
                &vault_key,
                vault.clone(),
            );
            if let Some(Some(keys)) = key_lists.get(&vault_key) {
                self.answer_key(
                    &mut inventory,
                    &ws,
                    &vault_key,
                    keys,
                    &mut versions,
                    deadline,
                )
                .await;
            }
            if let Some(assignments) = &assignments {
                self.answer_assignments(&mut inventory, &ws, &vault_key, assignments);
            }
        }
        inventory
    }

    /// [`Observer::snapshot_hinted`], its ARM reads answered from `inventory` where it can.
    pub async fn snapshot_from(
        &self,
        inventory: &Arc<Inventory>,
        workspace_id: &ArmResourceId,
        hint: Option<&Workspace>,
        deadline: Instant,
    ) -> Snapshot {
        PREFILLED
            .scope(
                Arc::clone(inventory),
                self.snapshot_hinted(workspace_id, hint, deadline),
            )
            .await
    }

    /// Every item of an ARM list, or `None` when it could not be read (logged: the targeted
    /// reads then report what they find).
    async fn bulk_list(
        &self,
        path: &str,
        namespace: &str,
        deadline: Instant,
    ) -> Option<Vec<Value>> {
        let version = self.arm.api_versions().get(namespace).to_owned();
        match self.arm.list(path, &version, &[], deadline).await {
            Ok(items) => Some(items),
            Err(error) => {
                tracing::warn!(
                    message = "A bulk list failed; its workspaces are read one by one.",
                    list = path,
                    error = %error
                );
                None
            }
        }
    }

    /// The lower-case ids of the workspaces of `subscription` that Resource Graph lists with
    /// an online or batch endpoint; `None` when the query failed.
    async fn workspaces_with_endpoints(
        &self,
        subscription: &SubscriptionId,
        deadline: Instant,
    ) -> Option<BTreeSet<String>> {
        let version = self
            .arm
            .api_versions()
            .get("Microsoft.ResourceGraph")
            .to_owned();
        let mut found = BTreeSet::new();
        let mut skip_token: Option<String> = None;
        for _ in 0..GRAPH_MAX_PAGES {
            let mut body = json!({
                "subscriptions": [subscription.as_str()],
                "query": ENDPOINTS_QUERY,
                "options": { "resultFormat": "objectArray", "$top": GRAPH_PAGE },
            });
            if let Some(token) = &skip_token {
                body["options"]["$skipToken"] = json!(token);
            }
            let page = match self
                .arm
                .post(
                    "/providers/Microsoft.ResourceGraph/resources",
                    &version,
                    &body,
                    deadline,
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(message = "The endpoint query failed; endpoints are read one workspace at a time.", error = %error);
                    return None;
                }
            };
            let rows = page.get("data").and_then(Value::as_array);
            found.extend(
                rows.into_iter()
                    .flatten()
                    .filter_map(|row| row.get("id").and_then(Value::as_str))
                    .filter_map(endpoint_workspace),
            );
            match page.get("$skipToken").and_then(Value::as_str) {
                Some(token) if !token.is_empty() => skip_token = Some(token.to_owned()),
                _ => return Some(found),
            }
        }
        None
    }

    /// `Keys_List` of each vault in `used` (`None` for a vault whose list failed).
    async fn key_lists(
        &self,
        used: &BTreeSet<String>,
        vaults: &HashMap<String, Value>,
        deadline: Instant,
    ) -> HashMap<String, Option<KeyList>> {
        let reads = join_all(used.iter().map(|vault_key| async move {
            let path = vaults
                .get(vault_key)
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(|id| format!("{id}/keys"))
                .unwrap_or_else(|| format!("{vault_key}/keys"));
            let keys = self.bulk_list(&path, "Microsoft.KeyVault", deadline).await;
            let keys = keys.map(|items| {
                items
                    .into_iter()
                    .filter_map(|k| {
                        let name = k.get("name").and_then(Value::as_str)?.to_ascii_lowercase();
                        Some((name, k))
                    })
                    .collect()
            });
            (vault_key.clone(), keys)
        }))
        .await;
        reads.into_iter().collect()
    }

    /// The targeted reads' answer for `path` read with `namespace`'s api-version.
    fn answer(&self, inventory: &mut Inventory, namespace: &str, path: &str, value: Value) {
        self.answer_query(inventory, "GET", namespace, path, &[], value);
    }

    fn answer_query(
        &self,
        inventory: &mut Inventory,
        method: &str,
        namespace: &str,
        path: &str,
        query: &[(&str, &str)],
        value: Value,
    ) {
        let version = self.arm.api_versions().get(namespace);
        inventory.answer(cache_key(method, path, version, query), value);
    }

    fn answer_providers(&self, inventory: &mut Inventory, subscription: &str, providers: &[Value]) {
        for namespace in REQUIRED_PROVIDERS {
            let item = providers.iter().find(|p| {
                p.get("namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(namespace))
            });
            if let Some(item) = item {
                let path = format!("/subscriptions/{subscription}/providers/{namespace}");
                self.answer(inventory, "Microsoft.Resources", &path, item.clone());
            }
        }
    }

    /// The workspace GET, and its endpoint lists when Resource Graph shows it without
    /// endpoints (with endpoints they are read through ARM: Resource Graph is only discovery).
    fn answer_workspace(
        &self,
        inventory: &mut Inventory,
        id: &str,
        item: Value,
        with_endpoints: Option<&BTreeSet<String>>,
    ) {
        let ml = "Microsoft.MachineLearningServices";
        self.answer(inventory, ml, id, item);
        if with_endpoints.is_some_and(|w| !w.contains(&id.to_ascii_lowercase())) {
            for kind in ["onlineEndpoints", "batchEndpoints"] {
                let path = format!("{id}/{kind}");
                self.answer_query(inventory, "LIST", ml, &path, &[], json!([]));
            }
        }
    }

    /// The key GET (when the list item carries the rotation policy the rules judge) and the
    /// pinned version: built from the list item when it is the latest, else read once per
    /// (key, version) and shared.
    async fn answer_key(
        &self,
        inventory: &mut Inventory,
        ws: &Workspace,
        vault_key: &str,
        keys: &KeyList,
        versions: &mut HashMap<String, Option<Value>>,
        deadline: Instant,
    ) {
        let Some(Ok(url)) = ws
            .encryption
            .as_ref()
            .and_then(|e| e.key_identifier.as_deref())
            .map(KeyUrl::parse)
        else {
            return;
        };
        let Some(item) = keys.get(&url.name().to_ascii_lowercase()) else {
            return;
        };
        let kv = "Microsoft.KeyVault";
        let key_path = format!("{vault_key}/keys/{}", url.name());
        if parse::at(item, "/properties/rotationPolicy").is_some_and(Value::is_object) {
            self.answer(inventory, kv, &key_path, item.clone());
        }
        let Some(pinned) = url.version() else {
            return;
        };
        let version_path = format!("{key_path}/versions/{pinned}");
        let latest = parse::key_version(item, url.name(), None).version;
        let body = if latest.is_some_and(|v| v.eq_ignore_ascii_case(pinned)) {
            Some(as_version(item, pinned))
        } else {
            let lower = version_path.to_ascii_lowercase();
            if !versions.contains_key(&lower) {
                let version = self.arm.api_versions().get(kv).to_owned();
                let read = self
                    .arm
                    .get(&version_path, &version, &[], deadline)
                    .await
                    .ok();
                versions.insert(lower.clone(), read);
            }
            versions.get(&lower).cloned().flatten()
        };
        if let Some(body) = body {
            self.answer(inventory, kv, &version_path, body);
        }
    }

    /// The workspace's `assignedTo()` list at its key: the direct assignments of its CMK
    /// principal at, above or below the key (what that list returns, group grants aside).
    fn answer_assignments(
        &self,
        inventory: &mut Inventory,
        ws: &Workspace,
        vault_key: &str,
        assignments: &HashMap<String, Vec<&Value>>,
    ) {
        let Some(principal) = ws.cmk_principal() else {
            return;
        };
        if !crate::ids::is_guid(&principal.principal_id) {
            return;
        }
        let key_name = ws
            .encryption
            .as_ref()
            .and_then(|e| e.key_identifier.as_deref())
            .and_then(|k| KeyUrl::parse(k).ok())
            .map(|k| k.name().to_owned());
        let scope = match &key_name {
            Some(name) => format!("{vault_key}/keys/{name}"),
            None => vault_key.to_owned(),
        };
        let direct: Vec<Value> = assignments
            .get(&principal.principal_id.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter(|a| {
                let at = parse::at(a, "/properties/scope")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                at_or_below(at, &scope) || at_or_below(&scope, at)
            })
            .map(|a| (*a).clone())
            .collect();
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
        let filter = format!("assignedTo('{}')", principal.principal_id);
        self.answer_query(
            inventory,
            "LIST",
            "Microsoft.Authorization",
            &path,
            &[("$filter", &filter)],
            Value::Array(direct),
        );
    }
}

/// Role assignments by lower-case `principalId`, in list order.
fn by_principal(assignments: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut by: HashMap<String, Vec<&Value>> = HashMap::new();
    for assignment in assignments {
        if let Some(principal) =
            parse::at(assignment, "/properties/principalId").and_then(Value::as_str)
        {
            by.entry(principal.to_ascii_lowercase())
                .or_default()
                .push(assignment);
        }
    }
    by
}

/// The lower-case id of an ARM object.
fn lower_id(item: &Value) -> Option<String> {
    item.get("id")
        .and_then(Value::as_str)
        .map(|id| id.trim_end_matches('/').to_ascii_lowercase())
}

/// The lower-case id of the vault a workspace names, as the targeted read would request it.
fn vault_of(ws: &Workspace) -> Option<String> {
    let text = ws.encryption.as_ref()?.key_vault_arm_id.as_deref()?;
    ArmResourceId::parse(text)
        .ok()
        .map(|id| id.as_str().to_ascii_lowercase())
}

/// The lower-case workspace id of an endpoint id (`{workspace}/onlineEndpoints/{name}`).
fn endpoint_workspace(endpoint_id: &str) -> Option<String> {
    let parts: Vec<&str> = endpoint_id.trim_start_matches('/').split('/').collect();
    (parts.len() >= 10).then(|| format!("/{}", parts[..8].join("/")).to_ascii_lowercase())
}

/// True when `scope` is `target` or above it (case-insensitive, on a segment boundary); an
/// empty scope (`/`) is above everything.
fn at_or_below(scope: &str, target: &str) -> bool {
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    let target = target.trim_end_matches('/').to_ascii_lowercase();
    scope.is_empty()
        || target == scope
        || target
            .strip_prefix(&scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A `Keys_List` item (the latest version) as `Keys_GetVersion` returns that version.
fn as_version(item: &Value, version: &str) -> Value {
    let mut body = item.clone();
    if let Some(object) = body.as_object_mut() {
        let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
        let id = format!("{id}/versions/{version}");
        object.insert("id".into(), json!(id));
        object.insert("name".into(), json!(version));
        object.insert(
            "type".into(),
            json!("Microsoft.KeyVault/vaults/keys/versions"),
        );
        if let Some(Value::Object(props)) = object.get_mut("properties") {
            props.remove("rotationPolicy");
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_id_names_its_workspace() {
        let ws = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.MachineLearningServices/workspaces/W";
        assert_eq!(
            endpoint_workspace(&format!("{ws}/onlineEndpoints/score")).as_deref(),
            Some(ws.to_ascii_lowercase().as_str())
        );
        assert_eq!(endpoint_workspace(ws), None);
    }

    #[test]
    fn scopes_compare_on_segment_boundaries_without_case() {
        assert!(at_or_below(
            "/subscriptions/S",
            "/subscriptions/s/resourceGroups/rg"
        ));
        assert!(at_or_below("/", "/subscriptions/s"));
        assert!(!at_or_below(
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg2"
        ));
    }

    #[test]
    fn a_listed_key_becomes_its_latest_version() {
        let item = json!({"id": "/v/keys/k", "name": "k", "type": "Microsoft.KeyVault/vaults/keys",
            "properties": {"kty": "RSA", "rotationPolicy": {}, "keyUriWithVersion": "https://v.vault.azure.net/keys/k/abc"}});
        let version = as_version(&item, "abc");
        assert_eq!(version["id"], "/v/keys/k/versions/abc");
        assert_eq!(version["name"], "abc");
        assert_eq!(version["properties"]["kty"], "RSA");
        assert!(version["properties"].get("rotationPolicy").is_none());
    }
}
