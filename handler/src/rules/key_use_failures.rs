//! `key.use-failures`: a service's `wrapKey`, `unwrapKey` or `get` on the workspace's CMK key
//! failed, as the Key Vault audit log reports it — the moment a CMK outage actually happens,
//! whatever caused it (access removed, key disabled or deleted, a firewall, a policy).
//!
//! Requirement: the services that encrypt the workspace's data can use its key. Source: Azure
//! ML CMK guide, <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>
//! (losing access to the key makes the workspace's data unavailable); Key Vault logging,
//! <https://learn.microsoft.com/azure/key-vault/general/logging>. No Azure Policy built-in,
//! Defender recommendation or Cloud Custodian filter reads these failures.
//!
//! Only the audit log (`OnKeyVaultAudit`) raises it: a failed use (403, 404 or another 4xx but
//! the 401 challenge and 429 throttling) of the workspace's key fails — a wrap or unwrap by any
//! caller, a `get` only by the workspace's CMK identity. It resolves when every caller that
//! failed later wraps or unwraps the key successfully itself (a successful `get` proves nothing:
//! anyone with read can get), or when a sweep or a check finds the chain healthy (vault and key
//! exist, the key is enabled, the workspace identity can wrap and unwrap it).
//! Every other event says nothing about uses: the rule answers not applicable and an open
//! finding stays open.
//!
//! Compliant: no failed use; or a later successful wrap/unwrap. Non-compliant: a record such as
//! `"operationName": "KeyUnwrap", "properties": {"httpStatusCode": 403}` naming the key.

use std::collections::BTreeMap;

use super::chain;
use super::{Check, Checks, Context, Links, Rule, Status};
use crate::catalogue::RuleId;
use crate::ids::KeyUrl;
use crate::intake::{ChangeKind, KeyUse, Trigger, UseOperation, same_key};
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyUseFailures,
    judge: check,
};

const EXPECTED: &str =
    "services can wrap, unwrap and get the key: no failed use in the Key Vault audit log";

/// At most this many (caller, operation, result) groups are named in `observed`.
const NAMED: usize = 3;

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    if let Err(gate) = chain::cmk(snapshot) {
        return Checks::One(gate.check(RULE.id, resource, EXPECTED));
    }
    let Some(key) = links.key_url() else {
        let why = "the workspace names no usable key (see guard.visibility)";
        return Checks::One(Check::new(
            RULE.id,
            resource,
            Status::NotApplicable,
            why,
            EXPECTED,
        ));
    };
    let check = match context.trigger {
        Some(trigger) if trigger.change == ChangeKind::AuditLog => {
            from_uses(context, trigger, key, resource)
        }
        Some(_) => Check::new(
            RULE.id,
            resource,
            Status::NotApplicable,
            "the event says nothing about uses of the key; only the Key Vault audit log does",
            EXPECTED,
        ),
        None => from_chain(context, links, resource),
    };
    Checks::One(check)
}

/// The verdict of an audit-log batch: its uses of this key, in time order, caller by caller.
/// A caller's failures stand until that same caller wraps or unwraps successfully later: one
/// service still working says nothing about another that lost access. A failed `get` counts
/// only from the workspace's CMK identity: anyone in the tenant can be refused a read, and an
/// alert anybody can raise would be spoofing and fatigue, not an outage.
fn from_uses(context: &Context, trigger: &Trigger, key: &KeyUrl, resource: String) -> Check {
    let cmk_identity = chain::workspace(context.snapshot)
        .ok()
        .and_then(|w| w.cmk_principal())
        .map(|p| p.principal_id);
    let mut uses: Vec<(usize, &KeyUse)> = trigger
        .uses
        .iter()
        .filter(|u| same_key(&u.key, key))
        .filter(|u| {
            u.operation != UseOperation::Get
                || u.succeeded()
                || is_caller(u, cmk_identity.as_deref())
        })
        .enumerate()
        .collect();
    // Records in time order; those without a time keep their place in the batch.
    uses.sort_by_key(|(index, u)| (u.time, *index));
    let mut failing: BTreeMap<String, Vec<&KeyUse>> = BTreeMap::new();
    let mut recovered: Option<&KeyUse> = None;
    for (_, key_use) in &uses {
        let caller = key_use.caller.key();
        if key_use.failed() {
            failing.entry(caller).or_default().push(key_use);
        } else if key_use.succeeded() && key_use.operation != UseOperation::Get {
            failing.remove(&caller);
            recovered = Some(key_use);
        }
    }
    let failures: Vec<&KeyUse> = failing.into_values().flatten().collect();
    match (failures.is_empty(), recovered) {
        (false, _) => Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            describe(&failures),
            EXPECTED,
        ),
        (true, Some(success)) => Check::pass(
            RULE.id,
            resource,
            format!(
                "{} {} the key successfully{}",
                success.caller,
                past_tense(success.operation),
                success
                    .time
                    .map(|t| format!(" at {}", chain::format_unix(t.unix_timestamp())))
                    .unwrap_or_default()
            ),
            EXPECTED,
        ),
        (true, None) => Check::new(
            RULE.id,
            resource,
            Status::NotApplicable,
            "the audit log names no wrap or unwrap of this key",
            EXPECTED,
        ),
    }
}

fn is_caller(key_use: &KeyUse, principal: Option<&str>) -> bool {
    principal.is_some_and(|p| {
        key_use
            .caller
            .object_id
            .as_deref()
            .is_some_and(|oid| oid.eq_ignore_ascii_case(p))
    })
}

/// Who failed to do what, how often and with what result: one sentence per group.
fn describe(failures: &[&KeyUse]) -> String {
    let mut groups: BTreeMap<(String, UseOperation, String), (usize, Option<i64>)> =
        BTreeMap::new();
    for failure in failures {
        let result = if failure.result.is_empty() {
            failure.status.to_string()
        } else {
            format!("{} {}", failure.status, failure.result)
        };
        let entry = groups
            .entry((failure.caller.to_string(), failure.operation, result))
            .or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(failure.time.map(|t| t.unix_timestamp()));
    }
    let mut sentences: Vec<String> = groups
        .iter()
        .take(NAMED)
        .map(|((caller, operation, result), (count, last))| {
            let times = if *count == 1 {
                "once".to_owned()
            } else {
                format!("{count} times")
            };
            let when = last
                .map(|t| format!(", last at {}", chain::format_unix(t)))
                .unwrap_or_default();
            format!(
                "{caller}: {} failed {times} ({result}){when}",
                operation.as_str()
            )
        })
        .collect();
    if groups.len() > NAMED {
        sentences.push(format!("and {} more", groups.len() - NAMED));
    }
    sentences.join("; ")
}

fn past_tense(operation: UseOperation) -> &'static str {
    match operation {
        UseOperation::Wrap => "wrapped with",
        UseOperation::Unwrap => "unwrapped with",
        UseOperation::Get => "read",
    }
}

/// The verdict of a sweep or a check: healthy when the rules a failed use would point at all
/// pass; otherwise those rules say what is wrong and an open finding stays open.
fn from_chain(context: &Context, links: &Links, resource: String) -> Check {
    let healthy = [
        super::vault_exists::RULE,
        super::key_exists::RULE,
        super::key_enabled::RULE,
        super::workspace_key_access::RULE,
    ]
    .iter()
    .all(|rule| {
        let checks = (rule.judge)(context, links);
        let checks = checks.as_slice();
        !checks.is_empty() && checks.iter().all(|c| c.status == Status::Pass)
    });
    if healthy {
        Check::pass(
            RULE.id,
            resource,
            "the chain is healthy: the vault and key exist, the key is enabled and the workspace identity can wrap and unwrap it",
            EXPECTED,
        )
    } else {
        Check::new(
            RULE.id,
            resource,
            Status::NotApplicable,
            "the chain has a problem its own rule reports; a failed use is judged from the audit log",
            EXPECTED,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::ids::ArmResourceId;
    use crate::intake::{Caller, Target};
    use crate::policy::Policy;
    use crate::snapshot::Snapshot;

    fn key_of(snapshot: &Snapshot) -> KeyUrl {
        Links::new(snapshot).key_url().unwrap().clone()
    }

    fn key_use(key: &KeyUrl, operation: UseOperation, status: u16, second: i64) -> KeyUse {
        KeyUse {
            key: key.clone(),
            operation,
            status,
            result: if status == 403 {
                "Forbidden: Operation unwrapKey is not permitted on this key.".into()
            } else {
                "OK".into()
            },
            caller: Caller {
                app_id: Some("3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d".into()),
                ..Caller::default()
            },
            time: time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).ok(),
        }
    }

    fn audit(snapshot: &Snapshot, uses: Vec<KeyUse>) -> Trigger {
        let vault = ArmResourceId::parse(Links::new(snapshot).vault).unwrap();
        let target = Target::Arm {
            id: vault,
            kind: crate::intake::ResourceKind::Vault,
        };
        let mut trigger = Trigger::new(
            "batch".into(),
            crate::intake::AUDIT_EVENT_TYPE,
            ChangeKind::AuditLog,
            target,
        );
        trigger.uses = uses;
        trigger
    }

    fn verdict(snapshot: &Snapshot, trigger: Option<&Trigger>) -> Vec<Check> {
        let policy = Policy::default();
        let mut context = context(snapshot, &policy);
        context.trigger = trigger;
        RULE.check(&context)
    }

    #[test]
    fn a_failed_unwrap_is_critical_and_names_caller_operation_and_result() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let trigger = audit(
            &snapshot,
            vec![
                key_use(&key, UseOperation::Unwrap, 403, 0),
                key_use(&key, UseOperation::Unwrap, 403, 5),
            ],
        );
        let checks = verdict(&snapshot, Some(&trigger));
        assert_eq!(checks[0].status, Status::Fail(Severity::Critical));
        let observed = &checks[0].observed;
        assert!(
            observed.starts_with("application 3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d: unwrapKey failed 2 times (403 Forbidden: Operation unwrapKey is not permitted on this key.), last at "),
            "{observed}"
        );
    }

    #[test]
    fn a_later_wrap_or_unwrap_resolves_and_a_get_does_not() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let later_unwrap = audit(
            &snapshot,
            vec![
                key_use(&key, UseOperation::Unwrap, 403, 0),
                key_use(&key, UseOperation::Unwrap, 200, 10),
            ],
        );
        assert_eq!(
            verdict(&snapshot, Some(&later_unwrap))[0].status,
            Status::Pass
        );
        let earlier_unwrap = audit(
            &snapshot,
            vec![
                key_use(&key, UseOperation::Unwrap, 200, 0),
                key_use(&key, UseOperation::Unwrap, 403, 10),
            ],
        );
        assert!(matches!(
            verdict(&snapshot, Some(&earlier_unwrap))[0].status,
            Status::Fail(_)
        ));
        let get = audit(
            &snapshot,
            vec![
                key_use(&key, UseOperation::Unwrap, 403, 0),
                key_use(&key, UseOperation::Get, 200, 10),
            ],
        );
        assert!(matches!(
            verdict(&snapshot, Some(&get))[0].status,
            Status::Fail(_)
        ));
        let only_success = audit(&snapshot, vec![key_use(&key, UseOperation::Wrap, 200, 0)]);
        assert_eq!(
            verdict(&snapshot, Some(&only_success))[0].status,
            Status::Pass
        );
    }

    #[test]
    fn another_callers_success_does_not_resolve_a_services_failure() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let failing = key_use(&key, UseOperation::Unwrap, 403, 0);
        let mut other = key_use(&key, UseOperation::Unwrap, 200, 10);
        other.caller.app_id = Some("another-service".into());
        let trigger = audit(&snapshot, vec![failing.clone(), other]);
        assert!(matches!(
            verdict(&snapshot, Some(&trigger))[0].status,
            Status::Fail(_)
        ));
        let mut same = key_use(&key, UseOperation::Wrap, 200, 20);
        same.caller = failing.caller.clone();
        let mut later = audit(&snapshot, vec![failing, same]);
        later.uses.rotate_left(1); // the batch's order does not matter, the times do
        assert_eq!(verdict(&snapshot, Some(&later))[0].status, Status::Pass);
    }

    #[test]
    fn a_failed_get_counts_only_from_the_workspace_identity() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let anyone = key_use(&key, UseOperation::Get, 403, 0);
        let trigger = audit(&snapshot, vec![anyone.clone()]);
        assert_eq!(
            verdict(&snapshot, Some(&trigger))[0].status,
            Status::NotApplicable
        );
        let identity = chain::workspace(&snapshot)
            .unwrap()
            .cmk_principal()
            .unwrap()
            .principal_id;
        let mut own = anyone;
        own.caller.object_id = Some(identity.to_uppercase());
        let trigger = audit(&snapshot, vec![own]);
        assert!(matches!(
            verdict(&snapshot, Some(&trigger))[0].status,
            Status::Fail(_)
        ));
    }

    #[test]
    fn uses_of_other_keys_and_401s_say_nothing() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let other = KeyUrl::parse(&format!("https://{}/keys/other-key", key.host())).unwrap();
        let trigger = audit(
            &snapshot,
            vec![
                key_use(&other, UseOperation::Unwrap, 403, 0),
                key_use(&key, UseOperation::Unwrap, 401, 0),
            ],
        );
        assert_eq!(
            verdict(&snapshot, Some(&trigger))[0].status,
            Status::NotApplicable
        );
    }

    #[test]
    fn the_sweep_resolves_on_a_healthy_chain_only_and_other_events_leave_it_open() {
        let snapshot = compliant_snapshot();
        assert_eq!(verdict(&snapshot, None)[0].status, Status::Pass);
        let mut disabled = compliant_snapshot();
        key_mut(&mut disabled).enabled = Some(false);
        assert_eq!(verdict(&disabled, None)[0].status, Status::NotApplicable);
        let mut unreadable = compliant_snapshot();
        unreadable.key = Some(failed_read("key", "k"));
        assert_eq!(verdict(&unreadable, None)[0].status, Status::NotApplicable);
        let mut event = audit(&snapshot, Vec::new());
        event.change = ChangeKind::Write;
        assert_eq!(
            verdict(&snapshot, Some(&event))[0].status,
            Status::NotApplicable
        );
    }

    #[test]
    fn many_callers_are_bounded() {
        let snapshot = compliant_snapshot();
        let key = key_of(&snapshot);
        let uses = (0..6)
            .map(|i| {
                let mut u = key_use(&key, UseOperation::Wrap, 403, i);
                u.caller.app_id = Some(format!("app-{i}"));
                u
            })
            .collect();
        let checks = verdict(&snapshot, Some(&audit(&snapshot, uses)));
        assert!(
            checks[0].observed.ends_with("; and 3 more"),
            "{}",
            checks[0].observed
        );
    }

    #[test]
    fn no_cmk_is_not_applicable() {
        assert_eq!(statuses(&RULE, no_cmk), [Status::NotApplicable]);
    }
}
