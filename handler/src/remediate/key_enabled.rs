//! `key.enabled`: data-plane `PATCH /keys/{name}/{version}` with `attributes.enabled = true`
//! (`KeyClient::update_key_properties`) on the version the workspace uses.
//!
//! Off unless the policy enables it explicitly: a disabled key may be a deliberate revocation,
//! and re-enabling it would undo that. Only `enabled` is sent; a version that is enabled but not
//! yet valid (`nbf` in the future) is reported, not changed.

use azure_security_keyvault_keys::models::{
    KeyAttributes, KeyClientUpdateKeyPropertiesOptions, UpdateKeyPropertiesParameters,
};

use super::{Act, KeyTarget, Stage, Stop, data_plane, key_target, key_version};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::snapshot::{Read, Snapshot};

const RULE: RuleId = RuleId::KeyEnabled;

/// The whole update: `{"attributes":{"enabled":true}}`.
pub(super) fn parameters() -> UpdateKeyPropertiesParameters {
    UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            enabled: Some(true),
            ..KeyAttributes::default()
        }),
        ..UpdateKeyPropertiesParameters::default()
    }
}

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let KeyTarget { vault, key, client } = key_target(&workspace, act)?;
    let mut snapshot = super::partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault).await?);
    snapshot.key = Some(key_version(
        act.key(&vault, key.name(), key.version()).await?,
        key.name(),
        key.version(),
    ));
    let observed = act.still_failing(RULE, &snapshot)?;
    let Some(Read::Found(in_use)) = &snapshot.key else {
        return Err(Stop::refused(format!("the key {key} was not read")));
    };
    if in_use.enabled != Some(false) {
        return Err(Stop::refused(format!(
            "{observed}; enabling the key cannot fix that"
        )));
    }
    let version = in_use.version.clone().ok_or_else(|| {
        Stop::refused(format!("ARM did not say which version of {key} is in use"))
    })?;
    let request = format!("PATCH https://{}/keys/{}/{version}", key.host(), key.name());
    let content = parameters()
        .try_into()
        .map_err(|e: azure_core::Error| Stop::refused(format!("the key attributes: {e}")))?;
    let options = KeyClientUpdateKeyPropertiesOptions {
        key_version: Some(version.clone()),
        ..KeyClientUpdateKeyPropertiesOptions::default()
    };
    data_plane(
        request.clone(),
        act.deadline,
        client.update_key_properties(key.name(), content, Some(options)),
    )
    .await
    .map_err(|e| Stop::azure(&request, &e))?;
    snapshot.key = Some(key_version(
        act.key(&vault, key.name(), Some(&version)).await?,
        key.name(),
        Some(&version),
    ));
    let now = act.verified(RULE, &snapshot)?;
    Ok(format!(
        "PATCHed attributes.enabled=true on https://{}/keys/{}/{version} (before: {observed}); verified: {now}",
        key.host(),
        key.name()
    ))
}

pub(super) fn describe(snapshot: &Snapshot) -> String {
    let key = snapshot
        .workspace
        .found()
        .and_then(|w| w.encryption.as_ref())
        .and_then(|e| e.key_identifier.as_deref())
        .and_then(|text| KeyUrl::parse(text).ok());
    match key {
        Some(key) => format!(
            "would enable {key} (data-plane PATCH attributes.enabled=true); a disabled key may be a deliberate revocation"
        ),
        None => "would not enable the key: the workspace's keyIdentifier is unusable".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::{KEY_URL, compliant_snapshot};

    #[test]
    fn the_update_sends_only_enabled() {
        assert_eq!(
            serde_json::to_value(parameters()).unwrap(),
            serde_json::json!({"attributes": {"enabled": true}})
        );
    }

    #[test]
    fn describes_the_key_version() {
        assert!(describe(&compliant_snapshot()).starts_with(&format!("would enable {KEY_URL} ")));
    }
}
