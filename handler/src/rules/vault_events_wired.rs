//! `vault.events-wired`: cmk-guard receives the CMK vault's Event Grid events and its
//! `AuditEvent` log (self-wiring).
//!
//! Requirement: every change to the CMK chain is seen as it happens, not at the next sweep
//! (issue 17). Key Vault events reach cmk-guard only through an event subscription on the
//! vault's Event Grid system topic (one per vault, in any resource group of its subscription),
//! and key-use failures and attribute changes only through a diagnostic setting that streams
//! `AuditEvent` to cmk-guard's Event Hub. Each part is checked only when it is configured
//! (`CMKGUARD_KEYVAULT_EVENTS_TARGET`; `CMKGUARD_AUDIT_EVENTHUB_RULE_ID` with
//! `CMKGUARD_AUDIT_EVENTHUB_NAME`); the wiring is read by the sweep and the scan, so on events
//! the rule does not apply and open findings stay open. Source: cmk-guard's own design
//! (docs/architecture.md *Rules*); Key Vault's Event Grid and logging documentation,
//! <https://learn.microsoft.com/azure/key-vault/general/event-grid-overview>,
//! <https://learn.microsoft.com/azure/key-vault/general/logging>.
//!
//! Compliant: the vault's system topic has an event subscription with destination
//! `AzureFunction` whose `resourceId` is the events target, including KeyNewVersionCreated,
//! KeyNearExpiry, KeyExpired and VaultAccessPolicyChanged (or every event type); and a
//! diagnostic setting with `AuditEvent` (or the `audit` or `allLogs` group) enabled streams to
//! the configured authorization rule and hub.
//! The subscription must deliver every such event: one with a subject filter
//! (`subjectBeginsWith`/`subjectEndsWith`) or advanced filters, expired (`expirationTimeUtc`
//! before the evaluation's time, or unreadable), or not provisioned (`provisioningState` other
//! than `Succeeded`; absent is accepted) does not count, and the finding says why. Otherwise
//! anyone able to write Event Grid on the vault's group could silence the events with a
//! subscription that matches nothing.
//! Non-compliant: no system topic; a topic whose subscriptions deliver elsewhere or deliver
//! nothing as above; a diagnostic setting that sends `AuditEvent` only to a Log Analytics
//! workspace, or whose `AuditEvent` entry is disabled.

use super::chain;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::VaultEventsWired,
    judge: check,
};

const EXPECTED: &str = "the vault's Event Grid system topic has cmk-guard's event subscription, and a diagnostic setting streams AuditEvent to cmk-guard's Event Hub";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.vault.to_owned();
    if let Err(gate) = chain::vault(snapshot) {
        return Checks::One(gate.check(RULE.id, resource, EXPECTED));
    }
    let not_applicable = |why: &'static str| {
        Checks::One(Check::new(
            RULE.id,
            resource.clone(),
            super::Status::NotApplicable,
            why,
            EXPECTED,
        ))
    };
    let wiring = match &snapshot.wiring {
        Some(Read::Found(wiring)) if wiring.targets.is_configured() => wiring,
        Some(Read::Failed(_)) => {
            return Checks::One(Check::new(
                RULE.id,
                resource,
                super::Status::Unknown,
                "the vault's Event Grid topic or diagnostic settings could not be read",
                EXPECTED,
            ));
        }
        _ if context.trigger.is_some() => {
            return not_applicable(
                "the vault's wiring is read by the sweep and scan, not on events or checks",
            );
        }
        _ => return not_applicable("self-wiring is not configured"),
    };
    let mut missing = Vec::new();
    if let Some(target) = &wiring.targets.events_target {
        match &wiring.topic {
            None => missing.push("the vault has no Event Grid system topic".to_owned()),
            Some(topic) => {
                if !topic.delivers_to(target, context.now) {
                    let partial = topic
                        .subscriptions
                        .iter()
                        .find_map(|s| s.shortfalls(target, context.now).map(|why| (s, why)));
                    missing.push(match partial {
                        Some((subscription, why)) => format!(
                            "the event subscription {} on the system topic {} {}",
                            subscription.name,
                            topic.name,
                            why.join(" and ")
                        ),
                        None => format!(
                            "the system topic {} has no event subscription to cmk-guard's function",
                            topic.name
                        ),
                    });
                }
            }
        }
    }
    if let Some(hub) = &wiring.targets.audit
        && !wiring
            .diagnostic_settings
            .iter()
            .any(|s| s.streams_audit(hub))
    {
        missing.push(format!(
            "no diagnostic setting streams AuditEvent to cmk-guard's Event Hub {}",
            hub.hub
        ));
    }
    let check = if missing.is_empty() {
        Check::pass(
            RULE.id,
            resource,
            "the vault's events and AuditEvent log reach cmk-guard",
            EXPECTED,
        )
    } else {
        Check::fail(
            RULE.id,
            resource,
            Severity::Medium,
            missing.join("; "),
            EXPECTED,
        )
    };
    Checks::One(check)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::ids::ArmResourceId;
    use crate::snapshot::{
        AuditHub, DiagnosticSetting, EventSubscription, ReadFailure, Snapshot, SystemTopic,
        VaultWiring, WIRED_EVENT_TYPES, WiringTargets,
    };

    pub const FUNCTION: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ops/providers/Microsoft.Web/sites/cmkguard/functions/OnKeyVaultEvent";
    pub const HUB_RULE: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ops/providers/Microsoft.EventHub/namespaces/cmkguard/authorizationRules/send";

    pub fn targets() -> WiringTargets {
        WiringTargets {
            events_target: Some(ArmResourceId::parse(FUNCTION).unwrap()),
            audit: Some(AuditHub {
                rule_id: ArmResourceId::parse(HUB_RULE).unwrap(),
                hub: "keyvault-audit".into(),
            }),
        }
    }

    /// The vault of the compliant snapshot, wired both ways.
    pub fn wired() -> VaultWiring {
        VaultWiring {
            targets: targets(),
            topic: Some(SystemTopic {
                id: format!("{VAULT_ID}-topic"),
                name: "kv1-cmk-guard".into(),
                subscriptions: vec![
                    EventSubscription {
                        name: "someone-else".into(),
                        endpoint_type: Some("WebHook".into()),
                        resource_id: None,
                        included_event_types: None,
                        ..EventSubscription::default()
                    },
                    EventSubscription {
                        name: "cmk-guard".into(),
                        endpoint_type: Some("AzureFunction".into()),
                        resource_id: Some(FUNCTION.to_uppercase()),
                        included_event_types: Some(
                            WIRED_EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
                        ),
                        provisioning_state: Some("Succeeded".into()),
                        ..EventSubscription::default()
                    },
                ],
            }),
            diagnostic_settings: vec![DiagnosticSetting {
                name: "cmk-guard-audit".into(),
                event_hub_authorization_rule_id: Some(HUB_RULE.to_lowercase()),
                event_hub_name: Some("keyvault-audit".into()),
                enabled_logs: vec!["AuditEvent".into()],
                other_destinations: Vec::new(),
            }],
        }
    }

    fn wiring_mut(snapshot: &mut Snapshot) -> &mut VaultWiring {
        if snapshot.wiring.is_none() {
            snapshot.wiring = Some(Read::Found(wired()));
        }
        match &mut snapshot.wiring {
            Some(Read::Found(wiring)) => wiring,
            _ => unreachable!(),
        }
    }

    /// cmk-guard's subscription in the wired snapshot.
    fn ours(snapshot: &mut Snapshot) -> &mut EventSubscription {
        &mut wiring_mut(snapshot).topic.as_mut().unwrap().subscriptions[1]
    }

    fn observed(bend: fn(&mut Snapshot)) -> String {
        let mut snapshot = compliant_snapshot();
        wiring_mut(&mut snapshot);
        bend(&mut snapshot);
        run(&RULE, &snapshot).remove(0).observed.into_owned()
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("not configured", |_| {}, &[NA]),
                (
                    "wired",
                    |s| {
                        wiring_mut(s);
                    },
                    &[PASS],
                ),
                ("no system topic", |s| wiring_mut(s).topic = None, &[MEDIUM]),
                (
                    "no subscription to cmk-guard",
                    |s| {
                        let topic = wiring_mut(s).topic.as_mut().unwrap();
                        topic.subscriptions.retain(|s| s.name != "cmk-guard");
                    },
                    &[MEDIUM],
                ),
                (
                    "every event type",
                    |s| {
                        let topic = wiring_mut(s).topic.as_mut().unwrap();
                        topic.subscriptions[1].included_event_types = None;
                    },
                    &[PASS],
                ),
                (
                    "a subject filter",
                    |s| ours(s).subject_filters = vec!["subjectBeginsWith /nothing".into()],
                    &[MEDIUM],
                ),
                (
                    "advanced filters",
                    |s| ours(s).advanced_filters = 1,
                    &[MEDIUM],
                ),
                (
                    "expired before now",
                    |s| ours(s).expiration_time = Some("2026-11-28T11:59:59Z".into()),
                    &[MEDIUM],
                ),
                (
                    "expires after now",
                    |s| ours(s).expiration_time = Some("2026-11-28T12:00:01Z".into()),
                    &[PASS],
                ),
                (
                    "expires after now, no offset given",
                    |s| ours(s).expiration_time = Some("2027-01-01T00:00:00.5".into()),
                    &[PASS],
                ),
                (
                    "an unreadable expiry",
                    |s| ours(s).expiration_time = Some("someday".into()),
                    &[MEDIUM],
                ),
                (
                    "provisioning failed",
                    |s| ours(s).provisioning_state = Some("Failed".into()),
                    &[MEDIUM],
                ),
                (
                    "no provisioning state",
                    |s| ours(s).provisioning_state = None,
                    &[PASS],
                ),
                (
                    "a filtered subscription beside a plain one",
                    |s| {
                        let mut filtered = ours(s).clone();
                        filtered.name = "narrow".into();
                        filtered.advanced_filters = 2;
                        let topic = wiring_mut(s).topic.as_mut().unwrap();
                        topic.subscriptions.insert(0, filtered);
                    },
                    &[PASS],
                ),
                (
                    "audit disabled",
                    |s| wiring_mut(s).diagnostic_settings[0].enabled_logs.clear(),
                    &[MEDIUM],
                ),
                (
                    "audit only to Log Analytics",
                    |s| wiring_mut(s).diagnostic_settings[0].event_hub_name = None,
                    &[MEDIUM],
                ),
                (
                    "audit through the allLogs group",
                    |s| wiring_mut(s).diagnostic_settings[0].enabled_logs = vec!["allLogs".into()],
                    &[PASS],
                ),
                (
                    "events only: the audit part is not checked",
                    |s| {
                        let wiring = wiring_mut(s);
                        wiring.targets.audit = None;
                        wiring.diagnostic_settings.clear();
                    },
                    &[PASS],
                ),
                (
                    "audit only: the events part is not checked",
                    |s| {
                        let wiring = wiring_mut(s);
                        wiring.targets.events_target = None;
                        wiring.topic = None;
                    },
                    &[PASS],
                ),
                (
                    "read failed",
                    |s| {
                        s.wiring = Some(Read::Failed(ReadFailure {
                            what: "diagnostic settings".into(),
                            resource: VAULT_ID.into(),
                            status: Some(403),
                            code: Some("AuthorizationFailed".into()),
                            message: "no".into(),
                            transient: false,
                        }))
                    },
                    &[UNKNOWN],
                ),
                ("vault gone", |s| s.vault = Some(Read::NotFound), &[NA]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn observed_says_exactly_what_is_missing() {
        assert_eq!(
            observed(|s| wiring_mut(s).topic = None),
            "the vault has no Event Grid system topic"
        );
        assert_eq!(
            observed(|s| {
                let topic = wiring_mut(s).topic.as_mut().unwrap();
                topic.subscriptions[1].resource_id = Some(format!("{FUNCTION}2"));
            }),
            "the system topic kv1-cmk-guard has no event subscription to cmk-guard's function"
        );
        assert_eq!(
            observed(|s| {
                let topic = wiring_mut(s).topic.as_mut().unwrap();
                topic.subscriptions[1].included_event_types =
                    Some(vec!["microsoft.keyvault.keyexpired".into()]);
            }),
            "the event subscription cmk-guard on the system topic kv1-cmk-guard does not include KeyNewVersionCreated, KeyNearExpiry, VaultAccessPolicyChanged"
        );
        assert_eq!(
            observed(|s| {
                let subscription = ours(s);
                subscription.provisioning_state = Some("Failed".into());
                subscription.expiration_time = Some("2026-01-01T00:00:00Z".into());
                subscription.subject_filters = vec!["subjectEndsWith .none".into()];
                subscription.advanced_filters = 3;
                subscription.included_event_types = Some(Vec::new());
            }),
            "the event subscription cmk-guard on the system topic kv1-cmk-guard is in provisioning state Failed and expired at 2026-01-01T00:00:00Z and filters subjects (subjectEndsWith .none) and has 3 advanced filter(s) and does not include KeyNewVersionCreated, KeyNearExpiry, KeyExpired, VaultAccessPolicyChanged"
        );
        assert_eq!(
            observed(|s| ours(s).expiration_time = Some("x".repeat(500))),
            format!(
                "the event subscription cmk-guard on the system topic kv1-cmk-guard has an unreadable expirationTimeUtc ({})",
                crate::ids::truncate(&"x".repeat(500))
            )
        );
        assert_eq!(
            observed(|s| {
                let wiring = wiring_mut(s);
                wiring.topic = None;
                wiring.diagnostic_settings[0].enabled_logs.clear();
            }),
            "the vault has no Event Grid system topic; no diagnostic setting streams AuditEvent to cmk-guard's Event Hub keyvault-audit"
        );
    }

    #[test]
    fn a_failed_wiring_read_is_unknown_and_a_visibility_finding() {
        let mut snapshot = compliant_snapshot();
        snapshot.wiring = Some(Read::Failed(ReadFailure {
            what: "diagnostic settings".into(),
            resource: format!("{VAULT_ID}/providers/Microsoft.Insights/diagnosticSettings"),
            status: Some(403),
            code: Some("AuthorizationFailed".into()),
            message: "denied".into(),
            transient: false,
        }));
        let policy = crate::policy::Policy::default();
        let evaluation = crate::rules::evaluate(&context(&snapshot, &policy));
        let findings: Vec<(&str, &str)> = evaluation
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.resource.as_str()))
            .collect();
        assert_eq!(
            findings,
            [(
                "guard.visibility",
                format!("{VAULT_ID}/providers/Microsoft.Insights/diagnosticSettings").as_str()
            )]
        );
        assert!(!evaluation.resolves(RULE.id.as_str(), VAULT_ID));
    }

    #[test]
    fn on_events_the_rule_does_not_apply() {
        let mut snapshot = compliant_snapshot();
        snapshot.wiring = None;
        let policy = crate::policy::Policy::default();
        let trigger = crate::intake::Trigger::new(
            "event-1".into(),
            "Microsoft.KeyVault.VaultAccessPolicyChanged",
            crate::intake::ChangeKind::VaultAccessPolicyChanged,
            crate::intake::Target::Arm {
                id: ArmResourceId::parse(VAULT_ID).unwrap(),
                kind: crate::intake::ResourceKind::Vault,
            },
        );
        let mut context = context(&snapshot, &policy);
        context.trigger = Some(&trigger);
        let checks = RULE.check(&context);
        assert_eq!(checks[0].status, NA);
        assert_eq!(
            checks[0].observed,
            "the vault's wiring is read by the sweep and scan, not on events or checks"
        );
    }
}
