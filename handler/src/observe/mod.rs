//! Observe: read a workspace's whole CMK chain into a [`Snapshot`]. Independent reads run
//! concurrently in two rounds (the workspace with its endpoints and providers; then the vault,
//! key versions and role assignments it names); every read goes through a single-flight TTL
//! cache. A read that fails is recorded in the snapshot, never treated as compliant. Events
//! take the snapshot through a memo that lives exactly as long as the reads it used (`memo`).

pub mod bulk;
mod graph;
mod cache;
mod memo;
mod transient;
pub(crate) mod parse;
pub(crate) mod wiring;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

pub use cache::ReadCache;
pub use graph::GraphEnd;
pub use transient::transient_failures;

use crate::azure::{ArmClient, AzureError, KeyVaultClients};
use crate::ids::{ArmResourceId, KeyUrl};
use crate::snapshot::{
    CMK_CONSUMER_ROLE, EndpointKind, KeyVersion, REQUIRED_PROVIDERS, Read, ReadFailure,
    RoleAssignment, Snapshot, Vault, Workspace,
};

/// How long a read is reused. Short: it only has to cover a burst.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

type Shared = Result<Arc<Value>, AzureError>;

/// Reads CMK chains through ARM (and the Key Vault data plane when ARM lacks the key size).
pub struct Observer {
    arm: ArmClient,
    keys: KeyVaultClients,
    cache: ReadCache<Shared>,
    memo: memo::Memo,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer over the given clients.
    pub fn new(arm: ArmClient, keys: KeyVaultClients, ttl: Duration) -> Self {
        Self {
            arm,
            keys,
            // Not-found is an answer worth sharing; any other failure is asked again.
            cache: ReadCache::new(ttl)
                .keeping(|read| read.as_ref().err().is_none_or(AzureError::is_not_found)),
            memo: memo::Memo::new(ttl),
        }
    }

    /// The ARM client (resolve uses it for Resource Graph).
    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    /// Forgets the cached reads that started before an event's time: they may predate the
    /// change the event reports.
    pub fn forget_reads_before(&self, moment: time::OffsetDateTime) {
        self.cache.forget_started_before(moment);
        self.memo.forget_started_before(moment);
    }

    /// Forgets every cached read (after a remediation wrote to Azure).
    pub fn forget_cached_reads(&self) {
        self.cache.clear();
        self.memo.clear();
    }

    /// Cache (hits, misses).
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// A cached ARM GET.
    pub async fn get(
        &self,
        path: &str,
        namespace: &str,
        query: &[(&str, &str)],
        deadline: Instant,
    ) -> Shared {
        let version = self.arm.api_versions().get(namespace).to_owned();
        let key = cache_key("GET", path, &version, query);
        if let Some(answer) = bulk::prefilled(&key) {
            return Ok(answer);
        }
        self.cache
            .get_or_fetch(&key, || async {
                self.arm
                    .get(path, &version, query, deadline)
                    .await
                    .map(Arc::new)
            })
            .await
    }

    /// A cached ARM list (all pages), as a JSON array.
    pub async fn list(
        &self,
        path: &str,
        namespace: &str,
        query: &[(&str, &str)],
        deadline: Instant,
    ) -> Shared {
        let version = self.arm.api_versions().get(namespace).to_owned();
        let key = cache_key("LIST", path, &version, query);
        if let Some(answer) = bulk::prefilled(&key) {
            return Ok(answer);
        }
        self.cache
            .get_or_fetch(&key, || async {
                self.arm
                    .list(path, &version, query, deadline)
                    .await
                    .map(|items| Arc::new(Value::Array(items)))
            })
            .await
    }

    /// A role definition, cached by its GUID: the same definition is named at the tenant root
    /// and under every subscription (`roleDefinitionId` uses either form).
    async fn role_definition(&self, definition_id: &str, deadline: Instant) -> Shared {
        let version = self
            .arm
            .api_versions()
            .get("Microsoft.Authorization")
            .to_owned();
        let guid = definition_id.rsplit('/').next().unwrap_or(definition_id);
        let key = format!("ROLE DEFINITION {guid}?api-version={version}");
        self.cache
            .get_or_fetch(&key, || async {
                self.arm
                    .get(definition_id, &version, &[], deadline)
                    .await
                    .map(Arc::new)
            })
            .await
    }

    /// A cached Resource Graph query page.
    pub async fn resource_graph(&self, body: &Value, deadline: Instant) -> Shared {
        let version = self
            .arm
            .api_versions()
            .get("Microsoft.ResourceGraph")
            .to_owned();
        let key = format!("POST /providers/Microsoft.ResourceGraph/resources {body}");
        self.cache
            .get_or_fetch(&key, || async {
                self.arm
                    .post(
                        "/providers/Microsoft.ResourceGraph/resources",
                        &version,
                        body,
                        deadline,
                    )
                    .await
                    .map(Arc::new)
            })
            .await
    }

    /// Reads everything the rules need about one workspace.
    pub async fn snapshot(&self, workspace_id: &ArmResourceId, deadline: Instant) -> Snapshot {
        self.snapshot_hinted(workspace_id, None, deadline).await
    }

    /// Reads everything the rules need about one workspace. With a `hint` (what Resource Graph
    /// says of its encryption and identity), the key chain is read at the same time as the
    /// workspace instead of after it; if the workspace read through ARM names another vault,
    /// key or identity, the chain is read again from it (Resource Graph is only discovery,
    /// azure-notes Trap T19). Either way: two rounds of reads, not three.
    pub async fn snapshot_hinted(
        &self,
        workspace_id: &ArmResourceId,
        hint: Option<&Workspace>,
        deadline: Instant,
    ) -> Snapshot {
        let ws_path = workspace_id.as_str();
        let subscription = workspace_id.subscription().as_str().to_owned();
        // Round 1: the workspace, its endpoints, the subscription's providers (and, with a
        // hint, the key chain).
        let online_path = format!("{ws_path}/onlineEndpoints");
        let batch_path = format!("{ws_path}/batchEndpoints");
        let hint = hint.filter(|h| h.encryption.is_some());
        let early_chain = async {
            match hint {
                Some(hint) => Some(self.key_chain(hint, deadline).await),
                None => None,
            }
        };
        let (workspace, online, batch, providers, early_chain) = tokio::join!(
            self.get(ws_path, "Microsoft.MachineLearningServices", &[], deadline),
            self.list(
                &online_path,
                "Microsoft.MachineLearningServices",
                &[],
                deadline
            ),
            self.list(
                &batch_path,
                "Microsoft.MachineLearningServices",
                &[],
                deadline
            ),
            self.providers(&subscription, deadline),
            early_chain,
        );
        let workspace = to_read(workspace, "workspace", ws_path).map(|v| parse::workspace(&v));
        let endpoints = Some(endpoints(online, batch, ws_path));
        let mut snapshot = Snapshot {
            workspace_id: workspace_id.clone(),
            workspace,
            vault: None,
            deleted_vault: None,
            key: None,
            latest_key: None,
            rotation_policy: None,
            role_assignments: None,
            endpoints,
            providers: Some(providers),
            wiring: None,
        };
        let Some(ws) = snapshot.workspace.found().cloned() else {
            return snapshot;
        };
        let chain = match (early_chain, hint) {
            (Some(chain), Some(hint)) if same_chain(hint, &ws) => chain,
            _ => self.key_chain(&ws, deadline).await,
        };
        chain.fill(&mut snapshot);
        snapshot
    }

    /// The key chain `ws` names, in one round: vault, key version in use, latest key, role
    /// assignments, and the definition of the role CMK consumers usually hold. Definitions of
    /// other roles the assignments name are read after (a third round only then).
    async fn key_chain(&self, ws: &Workspace, deadline: Instant) -> KeyChain {
        let mut snapshot = KeyChain::default();
        let Some(encryption) = &ws.encryption else {
            return snapshot;
        };
        let Some(vault_text) = &encryption.key_vault_arm_id else {
            return snapshot;
        };
        let vault_id = match ArmResourceId::parse(vault_text) {
            Ok(id) => id,
            Err(error) => {
                snapshot.vault = Some(Read::Failed(failure(
                    "vault",
                    vault_text,
                    None,
                    None,
                    error.to_string(),
                )));
                return snapshot;
            }
        };
        let key_url = encryption.key_identifier.as_deref().map(KeyUrl::parse);
        let key_name = match &key_url {
            Some(Ok(key)) => Some(key.name().to_owned()),
            _ => None,
        };
        let pinned = match &key_url {
            Some(Ok(key)) => key.version().map(str::to_owned),
            _ => None,
        };
        let principal = ws.cmk_principal();
        let key_path = key_name
            .as_ref()
            .map(|name| format!("{vault_id}/keys/{name}"));
        let version_path = match (&key_path, &pinned) {
            (Some(key_path), Some(version)) => Some(format!("{key_path}/versions/{version}")),
            _ => None,
        };
        let assignments_scope = key_path.clone().unwrap_or_else(|| vault_id.to_string());
        // Only a GUID goes into the OData filter: anything else would change the query (or
        // make a URL too long to send, retried forever as a transport failure).
        let unusable_principal = principal
            .as_ref()
            .filter(|p| !crate::ids::is_guid(&p.principal_id))
            .map(|p| p.principal_id.clone());
        let filter = principal
            .as_ref()
            .filter(|p| crate::ids::is_guid(&p.principal_id))
            .map(|p| format!("assignedTo('{}')", p.principal_id));

        let vault_future = self.get(vault_id.as_str(), "Microsoft.KeyVault", &[], deadline);
        let latest_future = async {
            match &key_path {
                Some(path) => Some(self.get(path, "Microsoft.KeyVault", &[], deadline).await),
                None => None,
            }
        };
        let version_future = async {
            match &version_path {
                Some(path) => Some(self.get(path, "Microsoft.KeyVault", &[], deadline).await),
                None => None,
            }
        };
        let assignments_path =
            format!("{assignments_scope}/providers/Microsoft.Authorization/roleAssignments");
        let assignments_future = async {
            match &filter {
                Some(filter) => Some(
                    self.list(
                        &assignments_path,
                        "Microsoft.Authorization",
                        &[("$filter", filter)],
                        deadline,
                    )
                    .await,
                ),
                None => None,
            }
        };
        // Speculative but cheap: shared by every workspace for the cache's lifetime, and a
        // failed read is not kept.
        let likely_definition = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{CMK_CONSUMER_ROLE}",
            vault_id.subscription()
        );
        let likely_definition_future = async {
            if filter.is_some() {
                let _ = self.role_definition(&likely_definition, deadline).await;
            }
        };
        let (vault, latest, version, assignments, ()) = tokio::join!(
            vault_future,
            latest_future,
            version_future,
            assignments_future,
            likely_definition_future
        );

        let vault = to_read(vault, "vault", vault_id.as_str()).map(|v| parse::vault(&v));
        if vault == Read::NotFound {
            snapshot.deleted_vault = Some(self.deleted_vault(&vault_id, deadline).await);
        }
        let rbac = vault.found().map(is_rbac_vault);
        snapshot.vault = Some(vault);

        if let (Some(name), Some(path)) = (&key_name, &key_path) {
            let latest = latest.map(|r| to_read(r, "key", path));
            if let Some(latest) = &latest {
                snapshot.rotation_policy = Some(latest.clone().map(|v| parse::rotation_policy(&v)));
            }
            let latest = latest.map(|r| r.map(|v| parse::key_version(&v, name, None)));
            let in_use = match (&version_path, version) {
                (Some(path), Some(result)) => Some(
                    to_read(result, "key version", path)
                        .map(|v| parse::key_version(&v, name, pinned.as_deref())),
                ),
                _ => latest.clone(),
            };
            // The data plane is asked only at the host of the vault read through ARM (in the
            // allowlist): a key URL naming another vault gets no request, and guard.visibility
            // reports the mismatch.
            let served_key = key_url
                .as_ref()
                .and_then(|k| k.as_ref().ok())
                .filter(|key| {
                    snapshot
                        .vault
                        .as_ref()
                        .and_then(Read::found)
                        .is_some_and(|vault| vault.serves(key))
                });
            snapshot.key = match in_use {
                Some(read) => Some(self.with_key_size(read, served_key, deadline).await),
                None => None,
            };
            snapshot.latest_key = latest;
        }

        // Role assignments matter on RBAC vaults only (access policies are on the vault).
        if rbac != Some(false)
            && let Some(principal_id) = unusable_principal
        {
            snapshot.role_assignments = Some(Read::Failed(failure(
                "role assignments",
                &assignments_path,
                None,
                None,
                format!(
                    "the CMK identity's principalId `{}` is not a GUID, so its role assignments cannot be listed",
                    crate::ids::truncate(&principal_id)
                ),
            )));
        } else if rbac != Some(false)
            && let Some(result) = assignments
        {
            snapshot.role_assignments = Some(
                match to_read(result, "role assignments", &assignments_path) {
                    Read::Found(items) => {
                        Read::Found(self.role_assignments(&items, deadline).await)
                    }
                    Read::NotFound => Read::Found(Vec::new()),
                    Read::Failed(failure) => Read::Failed(failure),
                },
            );
        }
        snapshot
    }

    /// Provider registrations of the namespaces CMK needs.
    async fn providers(
        &self,
        subscription: &str,
        deadline: Instant,
    ) -> Read<Vec<crate::snapshot::ProviderRegistration>> {
        let reads = join_all(REQUIRED_PROVIDERS.iter().map(|namespace| async move {
            let path = format!("/subscriptions/{subscription}/providers/{namespace}");
            (
                namespace,
                path.clone(),
                self.get(&path, "Microsoft.Resources", &[], deadline).await,
            )
        }))
        .await;
        let mut registrations = Vec::new();
        for (namespace, path, result) in reads {
            match to_read(result, "provider registration", &path) {
                Read::Found(value) => registrations.push(parse::provider(&value, namespace)),
                Read::NotFound => registrations.push(crate::snapshot::ProviderRegistration {
                    namespace: (*namespace).to_owned(),
                    registration_state: Some("NotRegistered".into()),
                }),
                Read::Failed(failure) => return Read::Failed(failure),
            }
        }
        Read::Found(registrations)
    }

    /// A soft-deleted vault of the same name in the subscription, if any.
    async fn deleted_vault(
        &self,
        vault_id: &ArmResourceId,
        deadline: Instant,
    ) -> Read<crate::snapshot::DeletedVault> {
        let path = format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults",
            vault_id.subscription()
        );
        match to_read(
            self.list(&path, "Microsoft.KeyVault", &[], deadline).await,
            "deleted vaults",
            &path,
        ) {
            Read::Found(items) => items
                .as_array()
                .and_then(|items| {
                    items.iter().find(|item| {
                        item.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(vault_id.name()))
                    })
                })
                .map(|item| Read::Found(parse::deleted_vault(item)))
                .unwrap_or(Read::NotFound),
            Read::NotFound => Read::NotFound,
            Read::Failed(failure) => Read::Failed(failure),
        }
    }

    /// Each assignment with its role definition (definitions are shared across assignments).
    async fn role_assignments(&self, items: &Value, deadline: Instant) -> Vec<RoleAssignment> {
        let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
        join_all(items.iter().map(|item| async move {
            let text = |p: &str| {
                parse::at(item, p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let definition_id = text("/properties/roleDefinitionId");
            let definition = if definition_id.starts_with('/') {
                to_read(
                    self.role_definition(&definition_id, deadline).await,
                    "role definition",
                    &definition_id,
                )
                .map(|v| parse::role_definition(&v))
            } else {
                Read::Failed(failure(
                    "role definition",
                    &definition_id,
                    None,
                    None,
                    "the assignment names no role definition".into(),
                ))
            };
            RoleAssignment {
                id: text("/id"),
                principal_id: text("/properties/principalId"),
                principal_type: parse::at(item, "/properties/principalType")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                scope: text("/properties/scope"),
                role_definition_id: definition_id,
                condition: parse::at(item, "/properties/condition")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
                definition,
            }
        }))
        .await
    }

    /// Fills `key_size` from the JWK modulus when ARM did not give it (azure-notes Trap T4).
    async fn with_key_size(
        &self,
        read: Read<KeyVersion>,
        key_url: Option<&KeyUrl>,
        deadline: Instant,
    ) -> Read<KeyVersion> {
        let Read::Found(mut key) = read else {
            return read;
        };
        let is_rsa = key
            .kty
            .as_deref()
            .is_some_and(|k| k.to_ascii_uppercase().starts_with("RSA"));
        if key.key_size.is_some() || !is_rsa {
            return Read::Found(key);
        }
        let Some(key_url) = key_url else {
            return Read::Found(key);
        };
        let Ok(client) = self.keys.for_key(key_url) else {
            return Read::Found(key);
        };
        let version = key.version.clone().unwrap_or_default();
        let fetch = client.get_key(
            key_url.name(),
            Some(
                azure_security_keyvault_keys::models::KeyClientGetKeyOptions {
                    key_version: Some(version),
                    ..Default::default()
                },
            ),
        );
        if let Ok(Ok(response)) = tokio::time::timeout_at(deadline, fetch).await
            && let Ok(bundle) = response.into_model()
            && let Some(n) = bundle.key.and_then(|jwk| jwk.n)
        {
            key.key_size = parse::modulus_bits(&n);
        }
        if key.key_size.is_none() {
            memo::note_unrepeatable();
        }
        Read::Found(key)
    }
}

/// The part of a snapshot read from the key vault and the role assignments.
#[derive(Debug, Default)]
struct KeyChain {
    vault: Option<Read<Vault>>,
    deleted_vault: Option<Read<crate::snapshot::DeletedVault>>,
    key: Option<Read<KeyVersion>>,
    latest_key: Option<Read<KeyVersion>>,
    rotation_policy: Option<Read<Option<crate::snapshot::RotationPolicy>>>,
    role_assignments: Option<Read<Vec<RoleAssignment>>>,
}

impl KeyChain {
    fn fill(self, snapshot: &mut Snapshot) {
        snapshot.vault = self.vault;
        snapshot.deleted_vault = self.deleted_vault;
        snapshot.key = self.key;
        snapshot.latest_key = self.latest_key;
        snapshot.rotation_policy = self.rotation_policy;
        snapshot.role_assignments = self.role_assignments;
    }
}

/// True when the workspace read through ARM names the chain the hint named: the same vault,
/// key and identity.
fn same_chain(hint: &Workspace, ws: &Workspace) -> bool {
    let names = |w: &Workspace| {
        let encryption = w.encryption.as_ref();
        let lower = |s: Option<&String>| s.map(|s| s.to_ascii_lowercase());
        (
            lower(encryption.and_then(|e| e.key_vault_arm_id.as_ref())),
            lower(encryption.and_then(|e| e.key_identifier.as_ref())),
            w.cmk_principal(),
        )
    };
    names(hint) == names(ws)
}

fn cache_key(method: &str, path: &str, version: &str, query: &[(&str, &str)]) -> String {
    let mut key = format!("{method} {path}?api-version={version}");
    for (k, v) in query {
        key.push_str(&format!("&{k}={v}"));
    }
    key
}

/// True when data access on the vault is governed by Azure RBAC. Absent means RBAC from
/// api-version 2026-02-01 on (azure-notes Trap T6); older vaults report `false` explicitly.
fn is_rbac_vault(vault: &Vault) -> bool {
    vault.enable_rbac_authorization.unwrap_or(true)
}

/// A cached result as a read; the value is shared with the cache, not copied.
fn to_read(result: Shared, what: &str, resource: &str) -> Read<Arc<Value>> {
    match result {
        Ok(value) => Read::Found(value),
        Err(error) if error.is_not_found() => Read::NotFound,
        Err(error) => Read::Failed(read_failure(what, resource, &error)),
    }
}

/// A failed Azure call as a read failure, for reads made outside a snapshot (listing the
/// workspaces) to be reported like the chain's own: `what` was being read from `resource`.
pub fn read_failure(what: &str, resource: &str, error: &AzureError) -> ReadFailure {
    ReadFailure {
        transient: error.is_transient(),
        ..failure(
            what,
            resource,
            error.status.map(u16::from),
            error.code.clone(),
            error.message.clone(),
        )
    }
}

fn failure(
    what: &str,
    resource: &str,
    status: Option<u16>,
    code: Option<String>,
    message: String,
) -> ReadFailure {
    ReadFailure {
        what: what.to_owned(),
        resource: resource.to_owned(),
        status,
        code,
        message,
        transient: false,
    }
}

fn endpoints(online: Shared, batch: Shared, ws_path: &str) -> Read<Vec<crate::snapshot::Endpoint>> {
    let mut all = Vec::new();
    for (result, kind, suffix) in [
        (online, EndpointKind::Online, "onlineEndpoints"),
        (batch, EndpointKind::Batch, "batchEndpoints"),
    ] {
        match to_read(result, "endpoints", &format!("{ws_path}/{suffix}")) {
            Read::Found(items) => {
                all.extend(
                    items
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|item| parse::endpoint(item, kind)),
                );
            }
            Read::NotFound => {}
            Read::Failed(failure) => return Read::Failed(failure),
        }
    }
    Read::Found(all)
}

impl<T> Read<T> {
    /// Maps the found value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        match self {
            Read::Found(value) => Read::Found(f(value)),
            Read::NotFound => Read::NotFound,
            Read::Failed(failure) => Read::Failed(failure),
        }
    }
}
