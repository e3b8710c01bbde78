//! `subscription.providers`: the resource providers a CMK workspace needs are registered.
//!
//! Requirement: Microsoft.MachineLearningServices, Microsoft.Storage, Microsoft.KeyVault,
//! Microsoft.DocumentDB and Microsoft.Search are registered in the workspace's subscription: the
//! CMK workspace keeps its data in Storage, Cosmos DB and AI Search resources that Azure ML
//! creates there. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>
//! (prerequisites). Equivalents: none in Azure Policy, Prowler, Checkov or Cloud Custodian.
//!
//! Compliant: every provider reports `"registrationState": "Registered"`.
//! Non-compliant: `Microsoft.Search` reports `NotRegistered`, or is missing from the list.

use super::chain::{self, Gate};
use super::{Check, Context, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::{REQUIRED_PROVIDERS, Read};

pub(super) const RULE: Rule = Rule {
    id: RuleId::SubscriptionProviders,
    check,
};

fn check(context: &Context) -> Vec<Check> {
    let snapshot = context.snapshot;
    let subscription = snapshot.workspace_id.subscription();
    let subscription_resource = format!("/subscriptions/{subscription}");
    let expected = |namespace: &str| format!("{namespace} is registered in the subscription");
    let stop = |gate: Gate| {
        vec![gate.check(
            RULE.id,
            subscription_resource.clone(),
            "the resource providers CMK needs are registered",
        )]
    };
    if let Err(gate) = chain::cmk(snapshot) {
        return stop(gate);
    }
    let registrations = match &snapshot.providers {
        Some(Read::Found(registrations)) => registrations.as_slice(),
        Some(Read::NotFound) => &[],
        Some(Read::Failed(_)) => {
            return stop(Gate::Unknown(
                "the provider registrations could not be read".into(),
            ));
        }
        None => {
            return stop(Gate::Unknown(
                "the provider registrations were not read".into(),
            ));
        }
    };
    REQUIRED_PROVIDERS
        .iter()
        .map(|namespace| {
            let resource = format!("{subscription_resource}/providers/{namespace}");
            let state = registrations
                .iter()
                .find(|r| r.namespace.eq_ignore_ascii_case(namespace))
                .map(|r| r.registration_state.as_deref());
            match state {
                Some(Some(state)) if state.eq_ignore_ascii_case("Registered") => Check::pass(
                    RULE.id,
                    resource,
                    format!("{namespace} is Registered"),
                    expected(namespace),
                ),
                Some(Some(state)) => Check::fail(
                    RULE.id,
                    resource,
                    Severity::Medium,
                    format!("{namespace} is {state}"),
                    expected(namespace),
                ),
                Some(None) => Gate::Unknown(format!("{namespace} reports no registration state"))
                    .check(RULE.id, resource, expected(namespace)),
                None => Check::fail(
                    RULE.id,
                    resource,
                    Severity::Medium,
                    format!(
                        "{namespace} is not registered (absent from the subscription's providers)"
                    ),
                    expected(namespace),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn set_state(s: &mut crate::snapshot::Snapshot, namespace: &str, state: Option<&str>) {
        if let Some(Read::Found(list)) = &mut s.providers {
            for registration in list.iter_mut().filter(|r| r.namespace == namespace) {
                registration.registration_state = state.map(str::to_owned);
            }
        }
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("all registered", |_| {}, &[PASS; 5]),
                (
                    "Search not registered",
                    |s| set_state(s, "Microsoft.Search", Some("NotRegistered")),
                    &[PASS, PASS, PASS, PASS, MEDIUM],
                ),
                (
                    "DocumentDB registering, lower-case namespace elsewhere",
                    |s| {
                        set_state(s, "Microsoft.DocumentDB", Some("Registering"));
                        if let Some(Read::Found(list)) = &mut s.providers {
                            list[0].namespace = "microsoft.machinelearningservices".into();
                        }
                    },
                    &[PASS, PASS, PASS, MEDIUM, PASS],
                ),
                (
                    "Storage missing from the list",
                    |s| {
                        if let Some(Read::Found(list)) = &mut s.providers {
                            list.retain(|r| r.namespace != "Microsoft.Storage");
                        }
                    },
                    &[PASS, MEDIUM, PASS, PASS, PASS],
                ),
                (
                    "state not reported",
                    |s| set_state(s, "Microsoft.KeyVault", None),
                    &[PASS, PASS, UNKNOWN, PASS, PASS],
                ),
                (
                    "unreadable",
                    |s| s.providers = Some(failed_read("providers", SUBSCRIPTION)),
                    &[UNKNOWN],
                ),
                ("not read", |s| s.providers = None, &[UNKNOWN]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn each_provider_is_its_own_resource() {
        let checks = run(&RULE, &compliant_snapshot());
        assert_eq!(
            checks[4].resource,
            format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Search")
        );
    }
}
