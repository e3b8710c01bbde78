//! `key.enabled`: the key version the workspace uses is enabled and already valid.
//!
//! Requirement: the key is enabled; a disabled key (or one whose `nbf` lies in the future) cannot
//! wrap or unwrap, so the workspace loses access to its data. There is no automatic remediation
//! by default: disabling a key may be a deliberate revocation. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Cloud Custodian `keyvault-key` `value: attributes.data.enabled: false` (pull only);
//! no Azure Policy built-in, Prowler or Checkov check.
//!
//! Compliant: `"attributes": {"enabled": true}`.
//! Non-compliant: `"attributes": {"enabled": false}`, or `"nbf"` after now.

use super::chain;
use super::chain::Gate;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyEnabled,
    judge: check,
};

const EXPECTED: &str = "the key version in use is enabled and within its validity period";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    let key = match chain::key(snapshot) {
        Ok(key) => key,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, EXPECTED)),
    };
    let label = links.key_label.as_str();
    let check = match (key.enabled, key.not_before) {
        (Some(false), _) => Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            format!("the key {label} is disabled"),
            EXPECTED,
        ),
        (_, Some(not_before)) if not_before > context.now.unix_timestamp() => Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            format!(
                "the key {label} is not valid before {}",
                chain::format_unix(not_before)
            ),
            EXPECTED,
        ),
        (Some(true), _) => Check::pass(
            RULE.id,
            resource,
            ["the key ", label, " is enabled"].concat(),
            EXPECTED,
        ),
        (None, _) => Gate::Unknown(format!(
            "the key {label} does not report whether it is enabled"
        ))
        .check(RULE.id, resource, EXPECTED),
    };
    Checks::One(check)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::Read;

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("enabled", |_| {}, &[PASS]),
                (
                    "disabled",
                    |s| key_mut(s).enabled = Some(false),
                    &[CRITICAL],
                ),
                (
                    "not yet valid",
                    |s| key_mut(s).not_before = Some(NOW.unix_timestamp() + DAY),
                    &[CRITICAL],
                ),
                (
                    "valid since yesterday",
                    |s| key_mut(s).not_before = Some(NOW.unix_timestamp() - DAY),
                    &[PASS],
                ),
                ("not reported", |s| key_mut(s).enabled = None, &[UNKNOWN]),
                ("key gone", |s| s.key = Some(Read::NotFound), &[NA]),
                (
                    "key unreadable",
                    |s| s.key = Some(failed_read("key", KEY_URL)),
                    &[UNKNOWN],
                ),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }
}
