//! `subscription.providers`: `POST /subscriptions/{s}/providers/{ns}/register` for one provider
//! the CMK workspace needs (one finding per provider).
//!
//! Only the five namespaces of [`REQUIRED_PROVIDERS`] are ever registered, and only in the
//! workspace's own subscription. Registration is asynchronous: `Registering` right after the
//! call counts as done, `Registered` follows.

use serde_json::json;

use super::{Act, Stage, Stop};
use crate::ids::ArmResourceId;
use crate::observe::parse;
use crate::snapshot::{REQUIRED_PROVIDERS, Read};

/// The provider a finding names, if it is one CMK needs in the workspace's subscription.
fn provider(workspace_id: &ArmResourceId, resource: &str) -> Stage<(String, &'static str)> {
    let id = ArmResourceId::parse(resource)
        .map_err(|e| Stop::refused(format!("the finding names no provider: {e}")))?;
    let namespace = REQUIRED_PROVIDERS
        .iter()
        .find(|ns| ns.eq_ignore_ascii_case(id.name()))
        .filter(|_| id.is_type("Microsoft.Resources/providers"))
        .ok_or_else(|| {
            Stop::refused(format!(
                "{resource} is not one of the resource providers CMK needs ({})",
                REQUIRED_PROVIDERS.join(", ")
            ))
        })?;
    if id.subscription() != workspace_id.subscription() {
        return Err(Stop::refused(format!(
            "{resource} is not in the workspace's subscription {}",
            workspace_id.subscription()
        )));
    }
    Ok((format!("/subscriptions/{}", id.subscription()), namespace))
}

/// `registrationState` of a provider, read fresh.
async fn state(act: &Act<'_>, path: &str) -> Stage<String> {
    match act
        .read(path, "Microsoft.Resources", "provider registration")
        .await?
    {
        Read::Found(value) => Ok(parse::provider(&value, "")
            .registration_state
            .unwrap_or_else(|| "(unknown)".to_owned())),
        _ => Ok("NotRegistered".to_owned()),
    }
}

pub(super) async fn apply(
    act: &Act<'_>,
    workspace_id: &ArmResourceId,
    resource: &str,
) -> Stage<String> {
    let (subscription, namespace) = provider(workspace_id, resource)?;
    let path = format!("{subscription}/providers/{namespace}");
    let before = state(act, &path).await?;
    if before.eq_ignore_ascii_case("Registered") {
        return Err(Stop::Skipped(format!(
            "already compliant: {namespace} is Registered"
        )));
    }
    let register = format!("{path}/register");
    act.arm
        .post(
            &register,
            act.api_version("Microsoft.Resources"),
            &json!({}),
            act.deadline,
        )
        .await
        .map_err(|e| Stop::azure(&format!("POST {register}"), &e))?;
    let after = state(act, &path).await?;
    if !["Registering", "Registered"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&after))
    {
        return Err(Stop::Failed {
            detail: format!(
                "POST {register} was accepted but {namespace} is {after}, not Registering or Registered"
            ),
            transient: false,
        });
    }
    Ok(format!(
        "POST {register} (before: {namespace} was {before}); verified: {namespace} is {after}"
    ))
}

pub(super) fn describe(resource: &str) -> String {
    match ArmResourceId::parse(resource) {
        Ok(id) if id.is_type("Microsoft.Resources/providers") => format!(
            "would POST /subscriptions/{}/providers/{}/register",
            id.subscription(),
            id.name()
        ),
        _ => format!("would not register anything: {resource} is not a resource provider"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";

    #[test]
    fn only_required_providers_of_the_workspace_subscription() {
        let ws = ArmResourceId::parse(WS).unwrap();
        assert_eq!(
            provider(
                &ws,
                "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/microsoft.search"
            )
            .unwrap(),
            (
                "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34".to_owned(),
                "Microsoft.Search"
            )
        );
        for resource in [
            "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.Compute",
            "/subscriptions/5b9e0c2a-7d41-4f3e-8a6b-1c2d3e4f5a6b/providers/Microsoft.Search",
            WS,
        ] {
            assert!(
                matches!(
                    provider(&ws, resource),
                    Err(Stop::Failed {
                        transient: false,
                        ..
                    })
                ),
                "{resource}"
            );
        }
        assert_eq!(
            describe(
                "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.Search"
            ),
            "would POST /subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.Search/register"
        );
    }
}
