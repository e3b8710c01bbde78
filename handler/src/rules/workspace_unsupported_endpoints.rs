//! `workspace.unsupported-endpoints`: a CMK workspace has no v2 online or batch endpoints.
//!
//! Requirement: a workspace with a customer-managed key does not support v2 online endpoints and
//! batch endpoints (docs/architecture.md, *The CMK requirements*, from the limitations of the Azure
//! ML CMK guide, <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>).
//! The current revision of that guide no longer states this limitation (noted there), so the default
//! severity is medium and the rule can be turned off in the policy. Equivalents: none in Azure
//! Policy, Prowler or Checkov; Cloud Custodian can approximate it with an
//! `…/onlineEndpoints/write` event and a `parent` filter on `properties.encryption.status`.
//! Every endpoint under `…/workspaces/{w}/onlineEndpoints` or `…/batchEndpoints` is a v2 endpoint.
//!
//! Compliant: a CMK workspace whose endpoint lists are empty (or any workspace without CMK).
//! Non-compliant: a CMK workspace with `…/workspaces/ws/onlineEndpoints/scoring`.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::{EndpointKind, Read};

pub(super) const RULE: Rule = Rule {
    id: RuleId::WorkspaceUnsupportedEndpoints,
    judge: check,
};

const EXPECTED: &str =
    "a workspace with a customer-managed key has no v2 online or batch endpoints";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.workspace.to_owned();
    if let Err(gate) = chain::cmk(snapshot) {
        return Checks::One(gate.check(RULE.id, resource, EXPECTED));
    }
    let endpoints = match &snapshot.endpoints {
        Some(Read::Found(endpoints)) => endpoints.as_slice(),
        Some(Read::NotFound) => &[],
        Some(Read::Failed(_)) => {
            let why = "the workspace's endpoints could not be listed".to_owned();
            return Checks::One(Gate::Unknown(why).check(RULE.id, resource, EXPECTED));
        }
        None => {
            let why = "the workspace's endpoints were not listed".to_owned();
            return Checks::One(Gate::Unknown(why).check(RULE.id, resource, EXPECTED));
        }
    };
    if endpoints.is_empty() {
        return Checks::One(Check::pass(
            RULE.id,
            resource,
            "the workspace has no online or batch endpoints",
            EXPECTED,
        ));
    }
    endpoints
        .iter()
        .map(|endpoint| {
            let kind = match endpoint.kind {
                EndpointKind::Online => "online",
                EndpointKind::Batch => "batch",
            };
            Check::fail(
                RULE.id,
                endpoint.id.clone(),
                Severity::Medium,
                format!(
                    "the CMK workspace has the v2 {kind} endpoint `{}`",
                    endpoint.name
                ),
                EXPECTED,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::Endpoint;

    fn endpoint(name: &str, kind: EndpointKind) -> Endpoint {
        let collection = match kind {
            EndpointKind::Online => "onlineEndpoints",
            EndpointKind::Batch => "batchEndpoints",
        };
        Endpoint {
            id: format!("{WORKSPACE_ID}/{collection}/{name}"),
            name: name.into(),
            kind,
            provisioning_state: Some("Succeeded".into()),
        }
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("no endpoints", |_| {}, &[PASS]),
                (
                    "one online, one batch endpoint",
                    |s| {
                        s.endpoints = Some(Read::Found(vec![
                            endpoint("scoring", EndpointKind::Online),
                            endpoint("nightly", EndpointKind::Batch),
                        ]))
                    },
                    &[MEDIUM, MEDIUM],
                ),
                (
                    "endpoints without CMK",
                    |s| {
                        no_cmk(s);
                        s.endpoints =
                            Some(Read::Found(vec![endpoint("scoring", EndpointKind::Online)]));
                    },
                    &[NA],
                ),
                (
                    "endpoints unreadable",
                    |s| s.endpoints = Some(failed_read("endpoints", WORKSPACE_ID)),
                    &[UNKNOWN],
                ),
                ("endpoints not listed", |s| s.endpoints = None, &[UNKNOWN]),
            ],
        );
    }

    #[test]
    fn each_endpoint_is_its_own_resource() {
        let mut snapshot = compliant_snapshot();
        snapshot.endpoints = Some(Read::Found(vec![endpoint("scoring", EndpointKind::Online)]));
        let checks = run(&RULE, &snapshot);
        assert_eq!(
            checks[0].resource,
            format!("{WORKSPACE_ID}/onlineEndpoints/scoring")
        );
    }
}
