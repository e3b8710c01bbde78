//! An on-demand check (`POST /api/evaluate`, `cmk-guard evaluate --resource`): the request
//! body parsed and its resource checked against the intake settings, without I/O. What the
//! check then does is the engine's business; a bad request is a [`Rejection`] (HTTP 400).

use serde::Deserialize;
use serde_json::Value;

use super::event::deserialize;
use super::{ChangeKind, IntakeSettings, Rejection, ResourceKind, Target, Trigger};
use crate::ids::{ArmResourceId, KeyUrl};

/// The `event.type` of outcomes of on-demand checks.
pub const EVALUATE_EVENT_TYPE: &str = "cmk-guard.Evaluate";

/// A valid on-demand check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// The resource as the caller wrote it (the Outcome's subject).
    pub resource: String,
    /// What to check, as a trigger with the request id as its event id.
    pub trigger: Trigger,
    /// Whether to act on the findings (remediate mode only).
    pub apply: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    resource: String,
    #[serde(default)]
    apply: bool,
}

impl CheckRequest {
    /// Parses the JSON body `{"resource": "<ARM id>", "apply": false}`.
    pub fn parse(
        body: &[u8],
        request_id: &str,
        settings: &IntakeSettings,
    ) -> Result<Self, Rejection> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(format!("body: not valid JSON: {e}")))?;
        let body: Body = deserialize("body", value)?;
        let target = target(&body.resource, settings)?;
        let trigger = Trigger::new(
            request_id.to_owned(),
            EVALUATE_EVENT_TYPE,
            ChangeKind::Write,
            target,
        );
        Ok(Self {
            resource: body.resource,
            trigger,
            apply: body.apply,
        })
    }
}

/// The resource to check: a workspace, a key vault or a key, by ARM id, in scope.
fn target(resource: &str, settings: &IntakeSettings) -> Result<Target, Rejection> {
    if resource.starts_with("https://") {
        let key = KeyUrl::parse(resource).map_err(|e| Rejection::new(format!("resource: {e}")))?;
        if !key.is_under(&settings.keyvault_dns_suffix) {
            return Err(Rejection::new(format!(
                "resource: key host {} is not under the Key Vault DNS suffix {}",
                key.host(),
                settings.keyvault_dns_suffix
            )));
        }
        return Err(Rejection::new(format!(
            "resource: a key URL names no subscription; pass the key's ARM id (…/providers/Microsoft.KeyVault/vaults/{}/keys/{}) instead",
            key.vault_name(),
            key.name()
        )));
    }
    let id =
        ArmResourceId::parse(resource).map_err(|e| Rejection::new(format!("resource: {e}")))?;
    if !settings.subscriptions.allows(id.subscription()) {
        return Err(Rejection::new(format!(
            "resource: subscription {} is not in CMKGUARD_SUBSCRIPTIONS or under CMKGUARD_MANAGEMENT_GROUPS",
            id.subscription()
        )));
    }
    let kind = if id.is_type("Microsoft.MachineLearningServices/workspaces") {
        ResourceKind::Workspace
    } else if id.is_type("Microsoft.KeyVault/vaults") {
        ResourceKind::Vault
    } else if id.is_type("Microsoft.KeyVault/vaults/keys") {
        ResourceKind::VaultKey
    } else {
        return Err(Rejection::new(format!(
            "resource: {} is a {}; expected an ML workspace, a key vault or a key",
            id,
            id.resource_type()
        )));
    };
    Ok(Target::Arm { id, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";

    #[test]
    fn bad_check_requests_say_why() {
        let settings = IntakeSettings {
            subscriptions: crate::ids::Allowlist::listed(Some(vec![
                crate::ids::SubscriptionId::parse("00000000-0000-0000-0000-000000000001").unwrap(),
            ])),
            keyvault_dns_suffix: "vault.azure.net".to_owned(),
            managed_groups: crate::ids::ManagedGroups::default(),
        };
        for (body, expected) in [
            ("{", "body: not valid JSON"),
            ("{}", "missing field `resource`"),
            (r#"{"resource":5}"#, "body.resource: invalid type"),
            (r#"{"resource":"ws1"}"#, "is not an ARM resource id"),
            (
                &format!(r#"{{"resource":"{WS}","extra":1}}"#),
                "unknown field `extra`",
            ),
            (
                &format!(r#"{{"resource":"{WS}"}}"#),
                "not in CMKGUARD_SUBSCRIPTIONS",
            ),
            (
                r#"{"resource":"https://kv1.vault.azure.net/keys/k"}"#,
                "names no subscription",
            ),
            (
                r#"{"resource":"https://kv1.evil.example/keys/k"}"#,
                "not under the Key Vault DNS suffix",
            ),
            (
                r#"{"resource":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"}"#,
                "expected an ML workspace",
            ),
        ] {
            let err = CheckRequest::parse(body.as_bytes(), "r1", &settings).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    fn settings() -> IntakeSettings {
        IntakeSettings {
            subscriptions: crate::ids::Allowlist::all(),
            keyvault_dns_suffix: "vault.azure.net".to_owned(),
            managed_groups: crate::ids::ManagedGroups::default(),
        }
    }

    #[test]
    fn a_workspace_id_becomes_a_trigger_with_the_request_id() {
        let request = CheckRequest::parse(
            format!(r#"{{"resource":"{WS}","apply":true}}"#).as_bytes(),
            "r1",
            &settings(),
        )
        .unwrap();
        assert!(request.apply);
        assert_eq!(request.trigger.event_id, "r1");
        assert_eq!(request.trigger.event_type, EVALUATE_EVENT_TYPE);
        assert_eq!(request.trigger.target.to_string(), WS);
    }
}
