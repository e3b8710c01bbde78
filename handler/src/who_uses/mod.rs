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

mod dependents;
mod rows;
#[cfg(test)]
mod tests;

use actix_web::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::ids::{Allowlist, ArmResourceId, KeyUrl, SubscriptionId};
use crate::intake::IntakeSettings;
use crate::observe::Observer;

pub use dependents::Dependents;

/// How long `POST /api/who-uses` may read (the host's HTTP timeout is longer; Event Grid's
/// budget is a fair bound for an interactive answer).
const HTTP_BUDGET: std::time::Duration = std::time::Duration::from_secs(25);
/// The longest target accepted (an ARM id's bound; a key URL is far shorter).
pub const MAX_TARGET_BYTES: usize = crate::ids::MAX_ARM_ID_BYTES;
/// The largest `POST /api/who-uses` body read.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The `version` of a consumer that follows the key's newest version.
pub const LATEST: &str = "latest";

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
        if text
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        {
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

/// Finds what depends on `target` within `subscriptions` (`None`: every readable one; callers
/// pass the allowlist). A Resource Graph failure or a result cut short gives an incomplete
/// report holding what was read.
pub async fn find(
    observer: &Observer,
    target: &Target,
    subscriptions: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> Report {
    let (rows, failure) = rows::read(observer, target.host(), subscriptions, deadline).await;
    let mut report = rows::classify(target, &rows, subscriptions);
    if let Some(reason) = failure {
        report.complete = false;
        report.incomplete_reason = Some(reason);
    }
    report
}

/// The subscriptions in scope: the allowlist. While its management groups are not listed yet
/// the answer is incomplete (the reason is returned); the CLI lists them first.
pub fn scope(allowlist: &Allowlist) -> (Option<Vec<SubscriptionId>>, Option<String>) {
    let waiting = allowlist.awaits_discovery().then(|| {
        "the subscriptions under CMKGUARD_MANAGEMENT_GROUPS are not listed yet".to_owned()
    });
    (allowlist.snapshot(), waiting)
}

/// Runs a search within `subscriptions`; `scope_failure` (from [`scope`]) makes it incomplete.
pub async fn search(
    observer: &Observer,
    target: &Target,
    (subscriptions, scope_failure): (Option<Vec<SubscriptionId>>, Option<String>),
    deadline: Instant,
) -> Report {
    let mut report = find(observer, target, subscriptions.as_deref(), deadline).await;
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
/// not be read completely. Searches the allowlist of `intake`.
pub async fn http(
    observer: &Observer,
    intake: &IntakeSettings,
    body: &[u8],
) -> (StatusCode, Value) {
    let deadline = Instant::now() + HTTP_BUDGET;
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
    let target = match Target::parse(text, &intake.keyvault_dns_suffix) {
        Ok(target) => target,
        Err(error) => return bad(error.to_string()),
    };
    let report = search(observer, &target, scope(&intake.subscriptions), deadline).await;
    let status = if report.complete {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, serde_json::to_value(&report).unwrap_or(Value::Null))
}
