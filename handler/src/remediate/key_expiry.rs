//! `key.expiry`: give the workspace a key version that does not expire soon.
//!
//! The version judged is the one in use, which for a pinned `keyIdentifier` may be older than the
//! latest (azure-notes Trap T10). When the latest version is already good (enabled, and the rule
//! passes on it), that version is used and nothing is rotated — which also makes a retry after a
//! failed workspace PATCH idempotent. Otherwise the key is rotated on the data plane
//! (`KeyClient::rotate_key`). A version-less workspace follows the new version by itself; a pinned
//! one is PATCHed to it (`properties.encryption.keyVaultProperties.keyIdentifier`), only ever
//! within the same vault (azure-notes Trap T21, checked before any request to the key).

use serde_json::{Value, json};

use super::{Act, KeyTarget, Stage, Stop, data_plane, key_target, key_version};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::snapshot::{KeyVersion, Read, Snapshot, Workspace};

const RULE: RuleId = RuleId::KeyExpiry;

/// The whole workspace PATCH body: only the key identifier, the one CMK setting the update model
/// allows (azure-notes §3.3).
pub(super) fn body(key_identifier: &str) -> Value {
    json!({"properties": {"encryption": {"keyVaultProperties": {"keyIdentifier": key_identifier}}}})
}

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let KeyTarget { vault, key, client } = key_target(&workspace, act)?;
    let pinned = key.version().map(str::to_owned);
    let mut snapshot = super::partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault).await?);
    let latest = key_version(act.key(&vault, key.name(), None).await?, key.name(), None);
    snapshot.key = Some(match &pinned {
        Some(version) => key_version(
            act.key(&vault, key.name(), Some(version)).await?,
            key.name(),
            Some(version),
        ),
        None => latest.clone(),
    });
    snapshot.latest_key = Some(latest.clone());
    let observed = act.still_failing(RULE, &snapshot)?;

    let reusable = match (&pinned, &latest) {
        (Some(pinned), Read::Found(latest))
            if latest.version.as_deref() != Some(pinned.as_str())
                && good_version(act, &snapshot, latest) =>
        {
            latest.version.clone()
        }
        _ => None,
    };
    let (version, how) = match reusable {
        Some(version) => (
            version,
            "the latest version does not expire soon, so no rotation was needed".to_owned(),
        ),
        None => {
            let request = format!("POST https://{}/keys/{}/rotate", key.host(), key.name());
            let rotated = data_plane(
                request.clone(),
                act.deadline,
                client.rotate_key(key.name(), None),
            )
            .await
            .map_err(|e| Stop::azure(&request, &e))?;
            let version = rotated
                .into_model()
                .ok()
                .and_then(|bundle| bundle.key)
                .and_then(|jwk| jwk.kid)
                .and_then(|kid| KeyUrl::parse(&kid).ok())
                .and_then(|kid| kid.version().map(str::to_owned))
                .ok_or_else(|| Stop::Failed {
                    detail: format!(
                        "{request} answered without a new key version; the key may have been rotated, the next run reuses that version"
                    ),
                    transient: true,
                })?;
            (version, format!("rotated the key ({request})"))
        }
    };
    let new_url = format!("https://{}/keys/{}/{version}", key.host(), key.name());

    if pinned.is_some() {
        act.arm
            .patch(
                workspace_id.as_str(),
                act.api_version("Microsoft.MachineLearningServices"),
                &body(&new_url),
                act.deadline,
            )
            .await
            .map_err(|e| {
                Stop::azure(
                    &format!("{how}, then PATCH keyIdentifier={new_url} on {workspace_id}"),
                    &e,
                )
            })?;
        let workspace = act.workspace(workspace_id).await?;
        let named = named_version(&workspace);
        if named.as_deref() != Some(version.as_str()) {
            return Err(Stop::Failed {
                detail: format!(
                    "{how} and PATCHed keyIdentifier={new_url} on {workspace_id}, but the workspace now names version {}",
                    named.as_deref().unwrap_or("(none)")
                ),
                transient: false,
            });
        }
        snapshot.workspace = Read::Found(workspace);
    }
    let in_use = act.key(&vault, key.name(), Some(&version)).await?;
    snapshot.key = Some(key_version(in_use, key.name(), Some(&version)));
    snapshot.latest_key = Some(key_version(
        act.key(&vault, key.name(), None).await?,
        key.name(),
        None,
    ));
    let now = act.verified(RULE, &snapshot)?;
    let repointed = if pinned.is_some() {
        format!("; PATCHed keyIdentifier of {workspace_id} to {new_url}")
    } else {
        "; the workspace names the key without a version and uses the new one".to_owned()
    };
    Ok(format!(
        "{how}; version in use now {version}{repointed} (before: {observed}); verified: {now}"
    ))
}

/// True when a version is enabled and `key.expiry` passes on it.
fn good_version(act: &Act<'_>, snapshot: &Snapshot, version: &KeyVersion) -> bool {
    if version.enabled == Some(false) {
        return false;
    }
    let mut candidate = snapshot.clone();
    candidate.key = Some(Read::Found(version.clone()));
    act.verified(RULE, &candidate).is_ok()
}

/// The version the workspace's keyIdentifier names, if any.
fn named_version(workspace: &Workspace) -> Option<String> {
    workspace
        .encryption
        .as_ref()
        .and_then(|e| e.key_identifier.as_deref())
        .and_then(|text| KeyUrl::parse(text).ok())
        .and_then(|key| key.version().map(str::to_owned))
}

pub(super) fn describe(snapshot: &Snapshot) -> String {
    let Some(encryption) = snapshot
        .workspace
        .found()
        .and_then(|w| w.encryption.as_ref())
    else {
        return "would rotate the workspace's key, once the workspace can be read".to_owned();
    };
    let key = encryption
        .key_identifier
        .as_deref()
        .and_then(|text| KeyUrl::parse(text).ok());
    let vault_name = encryption
        .key_vault_arm_id
        .as_deref()
        .and_then(|text| ArmResourceId::parse(text).ok())
        .map(|id| id.name().to_owned());
    let Some(key) = key else {
        return "would not rotate: the workspace's keyIdentifier is unusable".to_owned();
    };
    if let Some(vault_name) = &vault_name
        && !vault_name.eq_ignore_ascii_case(key.vault_name())
    {
        return format!(
            "would not rotate: the keyIdentifier is in vault {} but keyVaultArmId names {vault_name}, and a workspace's key may only change within its vault",
            key.vault_name()
        );
    }
    let versionless = format!("https://{}/keys/{}", key.host(), key.name());
    match key.version() {
        Some(version) => format!(
            "would rotate {versionless} (POST /keys/{}/rotate; or reuse its latest version if that does not expire soon) and PATCH the workspace's keyIdentifier from version {version} to the new version",
            key.name()
        ),
        None => format!(
            "would rotate {versionless} (POST /keys/{}/rotate); the workspace names the key without a version and follows the new one",
            key.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{compliant_snapshot, encryption_mut};

    #[test]
    fn the_body_changes_only_the_key_identifier() {
        assert_eq!(
            body("https://kv1.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"),
            json!({"properties": {"encryption": {"keyVaultProperties": {
                "keyIdentifier": "https://kv1.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"
            }}}})
        );
    }

    #[test]
    fn describes_rotation_repointing_and_refusal() {
        let mut snapshot = compliant_snapshot();
        assert!(
            describe(&snapshot).starts_with(
                "would rotate https://kv1.vault.azure.net/keys/cmk (POST /keys/cmk/rotate; or reuse"
            ),
            "{}",
            describe(&snapshot)
        );
        encryption_mut(&mut snapshot).key_identifier =
            Some("https://kv1.vault.azure.net/keys/cmk".into());
        assert!(describe(&snapshot).ends_with("follows the new one"));
        encryption_mut(&mut snapshot).key_identifier =
            Some("https://other-kv.vault.azure.net/keys/cmk".into());
        assert!(
            describe(&snapshot)
                .starts_with("would not rotate: the keyIdentifier is in vault other-kv")
        );
    }
}
