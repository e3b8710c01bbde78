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
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::SubscriptionProviders,
    judge: check,
};

/// Each of [`crate::snapshot::REQUIRED_PROVIDERS`] with the texts of its passing check, written out rather than
/// formatted: this rule runs on every event, and these texts are the same every time.
struct Provider {
    namespace: &'static str,
    registered: &'static str,
    expected: &'static str,
}

const PROVIDERS: [Provider; 5] = [
    Provider {
        namespace: "Microsoft.MachineLearningServices",
        registered: "Microsoft.MachineLearningServices is Registered",
        expected: "Microsoft.MachineLearningServices is registered in the subscription",
    },
    Provider {
        namespace: "Microsoft.Storage",
        registered: "Microsoft.Storage is Registered",
        expected: "Microsoft.Storage is registered in the subscription",
    },
    Provider {
        namespace: "Microsoft.KeyVault",
        registered: "Microsoft.KeyVault is Registered",
        expected: "Microsoft.KeyVault is registered in the subscription",
    },
    Provider {
        namespace: "Microsoft.DocumentDB",
        registered: "Microsoft.DocumentDB is Registered",
        expected: "Microsoft.DocumentDB is registered in the subscription",
    },
    Provider {
        namespace: "Microsoft.Search",
        registered: "Microsoft.Search is Registered",
        expected: "Microsoft.Search is registered in the subscription",
    },
];

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let stop = |gate: Gate| {
        Checks::One(gate.check(
            RULE.id,
            links.subscription.clone(),
            "the resource providers CMK needs are registered",
        ))
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
    PROVIDERS
        .iter()
        .map(|provider| {
            let namespace = provider.namespace;
            let expected = provider.expected;
            let resource = [links.subscription.as_str(), "/providers/", namespace].concat();
            let state = registrations
                .iter()
                .find(|r| r.namespace.eq_ignore_ascii_case(namespace))
                .map(|r| r.registration_state.as_deref());
            match state {
                Some(Some(state)) if state.eq_ignore_ascii_case("Registered") => {
                    Check::pass(RULE.id, resource, provider.registered, expected)
                }
                Some(Some(state)) => Check::fail(
                    RULE.id,
                    resource,
                    Severity::Medium,
                    format!("{namespace} is {state}"),
                    expected,
                ),
                Some(None) => Gate::Unknown(format!("{namespace} reports no registration state"))
                    .check(RULE.id, resource, expected),
                None => Check::fail(
                    RULE.id,
                    resource,
                    Severity::Medium,
                    format!(
                        "{namespace} is not registered (absent from the subscription's providers)"
                    ),
                    expected,
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::REQUIRED_PROVIDERS;

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
    fn the_written_out_texts_are_those_of_the_required_providers() {
        let namespaces: Vec<&str> = PROVIDERS.iter().map(|p| p.namespace).collect();
        assert_eq!(namespaces, REQUIRED_PROVIDERS);
        for provider in &PROVIDERS {
            let namespace = provider.namespace;
            assert_eq!(provider.registered, format!("{namespace} is Registered"));
            assert_eq!(
                provider.expected,
                format!("{namespace} is registered in the subscription")
            );
        }
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
