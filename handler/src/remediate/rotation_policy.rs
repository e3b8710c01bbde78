//! `key.rotation-policy`: data-plane `PUT /keys/{name}/rotationpolicy` (through the official
//! `KeyClient::update_key_rotation_policy`) with the policy file's settings
//! (`[remediation."key.rotation-policy"]`; by default Rotate 30 days before expiry, Notify 30
//! days before, each version living a year). ARM cannot write it (its key PUT never updates an
//! existing key, azure-notes Trap T9), but ARM reads it back, which is how the result is verified.

use azure_security_keyvault_keys::models::{
    KeyRotationPolicy, KeyRotationPolicyAction, KeyRotationPolicyAttributes, LifetimeAction,
    LifetimeActionTrigger, LifetimeActionType,
};

use super::{Act, KeyTarget, Stage, Stop, data_plane, key_target, key_version};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::observe::parse;
use crate::policy::{Policy, RotationPolicySettings};
use crate::snapshot::Snapshot;

const RULE: RuleId = RuleId::KeyRotationPolicy;

/// The policy written: a Rotate and a Notify action before expiry, and the versions' lifetime.
pub(super) fn policy(settings: &RotationPolicySettings) -> KeyRotationPolicy {
    let before_expiry = |action: KeyRotationPolicyAction, duration: &str| LifetimeAction {
        action: Some(LifetimeActionType {
            type_prop: Some(action),
        }),
        trigger: Some(LifetimeActionTrigger {
            time_after_create: None,
            time_before_expiry: Some(duration.to_owned()),
        }),
    };
    KeyRotationPolicy {
        attributes: Some(KeyRotationPolicyAttributes {
            expiry_time: Some(settings.expiry_time.clone()),
            ..KeyRotationPolicyAttributes::default()
        }),
        lifetime_actions: Some(vec![
            before_expiry(
                KeyRotationPolicyAction::Rotate,
                &settings.rotate_before_expiry,
            ),
            before_expiry(
                KeyRotationPolicyAction::Notify,
                &settings.notify_before_expiry,
            ),
        ]),
        ..KeyRotationPolicy::default()
    }
}

fn summary(settings: &RotationPolicySettings) -> String {
    format!(
        "Rotate {} before expiry, Notify {} before expiry, expiryTime {}",
        settings.rotate_before_expiry, settings.notify_before_expiry, settings.expiry_time
    )
}

pub(super) async fn apply(act: &Act<'_>, workspace_id: &ArmResourceId) -> Stage<String> {
    let workspace = act.workspace(workspace_id).await?;
    let KeyTarget { vault, key, client } = key_target(&workspace, act)?;
    let mut snapshot = super::partial_snapshot(workspace_id, workspace);
    snapshot.vault = Some(act.vault(&vault).await?);
    read_key(act, &mut snapshot, &vault, &key).await?;
    let observed = act.still_failing(RULE, &snapshot)?;
    let settings = act.policy.key_rotation_policy();
    let request = format!(
        "PUT https://{}/keys/{}/rotationpolicy",
        key.host(),
        key.name()
    );
    let content = policy(settings)
        .try_into()
        .map_err(|e: azure_core::Error| Stop::refused(format!("the rotation policy: {e}")))?;
    data_plane(
        request.clone(),
        act.deadline,
        client.update_key_rotation_policy(key.name(), content, None),
    )
    .await
    .map_err(|e| Stop::azure(&request, &e))?;
    read_key(act, &mut snapshot, &vault, &key).await?;
    let now = act.verified(RULE, &snapshot)?;
    Ok(format!(
        "PUT the rotation policy of https://{}/keys/{}: {} (before: {observed}); verified: {now}",
        key.host(),
        key.name(),
        summary(settings)
    ))
}

/// The key (latest version) and its rotation policy, read fresh through ARM.
async fn read_key(
    act: &Act<'_>,
    snapshot: &mut Snapshot,
    vault: &ArmResourceId,
    key: &KeyUrl,
) -> Stage<()> {
    let read = act.key(vault, key.name(), None).await?;
    snapshot.rotation_policy = Some(read.clone().map(|value| parse::rotation_policy(&value)));
    snapshot.key = Some(key_version(read, key.name(), None));
    Ok(())
}

pub(super) fn describe(snapshot: &Snapshot, policy: &Policy) -> String {
    let key = snapshot
        .workspace
        .found()
        .and_then(|w| w.encryption.as_ref())
        .and_then(|e| e.key_identifier.as_deref())
        .and_then(|text| KeyUrl::parse(text).ok())
        .map(|key| format!("https://{}/keys/{}", key.host(), key.name()))
        .unwrap_or_else(|| "the workspace's key".to_owned());
    format!(
        "would PUT a rotation policy on {key}: {}",
        summary(policy.key_rotation_policy())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_support::compliant_snapshot;
    use serde_json::json;

    #[test]
    fn the_policy_rotates_and_notifies_before_expiry() {
        let written = serde_json::to_value(policy(&RotationPolicySettings::default())).unwrap();
        assert_eq!(
            written,
            json!({
                "attributes": {"expiryTime": "P1Y"},
                "lifetimeActions": [
                    {"action": {"type": "Rotate"}, "trigger": {"timeBeforeExpiry": "P30D"}},
                    {"action": {"type": "Notify"}, "trigger": {"timeBeforeExpiry": "P30D"}},
                ],
            })
        );
    }

    #[test]
    fn describes_the_policy_from_the_policy_file() {
        let policy = Policy::from_toml_str(
            "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"P2Y\"\nrotate_before_expiry = \"P60D\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            describe(&compliant_snapshot(), &policy),
            "would PUT a rotation policy on https://kv1.vault.azure.net/keys/cmk: Rotate P60D before expiry, Notify P30D before expiry, expiryTime P2Y"
        );
    }
}
