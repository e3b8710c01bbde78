//! The engine: one entry point per kind of work (an event, an on-demand check), each producing
//! an [`Outcome`]. Later stages — resolve, observe, evaluate, plan, act — plug in behind
//! [`Engine::reconcile`]; today a relevant trigger is answered with the resource it resolves to
//! and no findings, because the rules are not built yet (see the README).

use serde::Deserialize;
use serde_json::Value;

use crate::ids::{ArmResourceId, KeyUrl};
use crate::intake::{Classified, RawEvent, Rejection, ResourceKind, Target, Trigger, classify};
use crate::outcome::{Disposition, EventRef, Outcome};
use crate::settings::Settings;

/// Shared, immutable state of the running handler.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
}

impl Engine {
    /// Builds the engine from validated settings.
    pub fn new(settings: Settings) -> Self {
        Self { settings }
    }

    /// The configuration in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Handles one event (the trigger binding's value) from start to finish.
    pub fn on_event(&self, value: Value) -> Outcome {
        let event = match RawEvent::from_binding(value) {
            Ok(event) => event,
            Err(rejection) => return rejected(EventRef::default(), rejection),
        };
        let event_ref = EventRef {
            id: Some(event.id.clone()),
            event_type: Some(event.event_type.clone()),
            subject: event.subject.clone(),
        };
        match classify(&event, &self.settings.intake) {
            Err(rejection) => rejected(event_ref, rejection),
            Ok(Classified::Ignored(reason)) => {
                Outcome::new(event_ref, Disposition::Ignored, Some(reason))
            }
            Ok(Classified::Relevant(trigger)) => self.reconcile(event_ref, &trigger),
        }
    }

    /// Checks what a trigger points at. Everything that reaches here was relevant and in scope.
    pub fn reconcile(&self, event: EventRef, trigger: &Trigger) -> Outcome {
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        outcome.resource = Some(trigger.target.to_string());
        outcome.workspaces = workspace_of(&trigger.target)
            .map(|ws| vec![ws.to_string()])
            .unwrap_or_default();
        outcome
    }

    /// Handles an on-demand check (`POST /api/evaluate`, `cmk-guard evaluate --resource`).
    /// `Err` is a bad request: the caller gets the reason and a 400.
    pub fn evaluate_request(&self, body: &[u8], request_id: &str) -> Result<Outcome, Rejection> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct EvaluateRequest {
            resource: String,
            #[serde(default)]
            apply: bool,
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(format!("body: not valid JSON: {e}")))?;
        let request: EvaluateRequest = crate::intake::deserialize_at("body", value)?;
        if request.apply {
            return Err(Rejection::new(
                "apply: remediation is not available in this version; evaluate without `apply`",
            ));
        }
        let target = self.parse_evaluate_target(&request.resource)?;
        let trigger = Trigger {
            event_id: request_id.to_owned(),
            event_type: EVALUATE_EVENT_TYPE.to_owned(),
            change: crate::intake::ChangeKind::Write,
            subscription: match &target {
                Target::Arm { id, .. } | Target::Key { vault: id, .. } => id.subscription().clone(),
            },
            target,
            operation: None,
            caller_object_id: None,
            correlation_id: None,
            time: None,
        };
        let event = EventRef {
            id: Some(request_id.to_owned()),
            event_type: Some(EVALUATE_EVENT_TYPE.to_owned()),
            subject: Some(request.resource),
        };
        Ok(self.reconcile(event, &trigger))
    }

    fn parse_evaluate_target(&self, resource: &str) -> Result<Target, Rejection> {
        if resource.starts_with("https://") {
            let key =
                KeyUrl::parse(resource).map_err(|e| Rejection::new(format!("resource: {e}")))?;
            if !key.is_under(&self.settings.intake.keyvault_dns_suffix) {
                return Err(Rejection::new(format!(
                    "resource: key host {} is not under the Key Vault DNS suffix {}",
                    key.host(),
                    self.settings.intake.keyvault_dns_suffix
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
        if let Some(allowed) = &self.settings.intake.subscriptions
            && !allowed.contains(id.subscription())
        {
            return Err(Rejection::new(format!(
                "resource: subscription {} is not in CMKGUARD_SUBSCRIPTIONS",
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
}

/// The `event.type` of outcomes of on-demand checks.
pub const EVALUATE_EVENT_TYPE: &str = "cmk-guard.Evaluate";

fn rejected(event: EventRef, rejection: Rejection) -> Outcome {
    Outcome::new(event, Disposition::Rejected, Some(rejection.to_string()))
}

/// The workspace a target belongs to, when the target itself says so.
fn workspace_of(target: &Target) -> Option<ArmResourceId> {
    match target {
        Target::Arm {
            id,
            kind: ResourceKind::Workspace,
        } => Some(id.clone()),
        Target::Arm {
            id,
            kind: ResourceKind::OnlineEndpoint | ResourceKind::BatchEndpoint,
        } => id.top_level_resource(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    const WS: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";

    fn engine(vars: &[(&str, &str)]) -> Engine {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Engine::new(
            Settings::from_lookup(move |n| {
                vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
            .unwrap(),
        )
    }

    #[test]
    fn evaluates_a_workspace_on_demand() {
        let outcome = engine(&[])
            .evaluate_request(format!(r#"{{"resource":"{WS}"}}"#).as_bytes(), "r1")
            .unwrap();
        assert_eq!(outcome.disposition, Disposition::Evaluated);
        assert_eq!(outcome.workspaces, vec![WS.to_string()]);
        assert_eq!(
            outcome.event.event_type.as_deref(),
            Some(EVALUATE_EVENT_TYPE)
        );
    }

    #[test]
    fn bad_evaluate_requests_say_why() {
        let engine = engine(&[(
            "CMKGUARD_SUBSCRIPTIONS",
            "00000000-0000-0000-0000-000000000001",
        )]);
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
            let err = engine
                .evaluate_request(body.as_bytes(), "r1")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
