//! `key.expiry`: the key version the workspace uses is not expired or about to expire.
//!
//! Requirement: the key is not expired; an expired key cannot wrap or unwrap. The version judged
//! is the one in use, which for a pinned `keyIdentifier` may be older than the latest version
//! (azure-notes Trap T10). Expired → critical; within `critical_days` (default 7) → high; within
//! `warn_days` (default 30) → medium (policy `[rules."key.expiry"]`). Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Azure Policy `5ff38825-c5d8-47c5-b70e-069a21955146` (Keys should have more than
//! the specified number of days before expiration); Key Vault's `KeyNearExpiry`/`KeyExpired`
//! events; Cloud Custodian `keyvault-key` `value_type: expiration` (pull only). Prowler and
//! Checkov have none.
//!
//! Compliant: `"exp"` a year from now.
//! Non-compliant: `"exp"` yesterday (critical), in 3 days (high), in 20 days (medium).

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;
use crate::snapshot::Read;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyExpiry,
    judge: check,
};

const SECONDS_PER_DAY: i64 = 86_400;

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let thresholds = context.policy.key_expiry();
    let warn_days = thresholds.warn_days.to_string();
    let expected = [
        "the key version in use expires in more than ",
        &warn_days,
        " days",
    ]
    .concat();
    let resource = links.key.to_owned();
    let key = match chain::key(snapshot) {
        Ok(key) => key,
        Err(gate) => return Checks::One(gate.check(RULE.id, resource, expected.clone())),
    };
    let label = links.key_label.as_str();
    let Some(expires) = key.expires else {
        let why = format!("the key {label} has no expiration date (see key.expiry-set)");
        return Checks::One(Gate::NotApplicable(why).check(RULE.id, resource, expected.clone()));
    };
    let remaining = expires - context.now.unix_timestamp();
    let at = &links.key_expires_at;
    let mut observed = if remaining <= 0 {
        ["the key ", label, " expired at ", at].concat()
    } else {
        let days = (remaining / SECONDS_PER_DAY).to_string();
        [
            "the key ",
            label,
            " expires at ",
            at,
            ", in ",
            &days,
            " days",
        ]
        .concat()
    };
    if let Some(latest) = snapshot.latest_key.as_ref().and_then(Read::found)
        && latest.version.is_some()
        && latest.version != key.version
    {
        let latest_expiry = latest
            .expires
            .map(chain::format_unix)
            .unwrap_or_else(|| "never".to_owned());
        observed.push_str(&format!(
            "; the workspace pins this version while the latest is {} (expires {latest_expiry})",
            chain::key_label(latest)
        ));
    }
    let severity = if remaining <= 0 {
        Some(Severity::Critical)
    } else if remaining <= i64::from(thresholds.critical_days) * SECONDS_PER_DAY {
        Some(Severity::High)
    } else if remaining <= i64::from(thresholds.warn_days) * SECONDS_PER_DAY {
        Some(Severity::Medium)
    } else {
        None
    };
    Checks::One(match severity {
        Some(severity) => Check::fail(RULE.id, resource, severity, observed, expected),
        None => Check::pass(RULE.id, resource, observed, expected),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::policy::Policy;

    fn expiring_in(days: i64) -> impl Fn(&mut crate::snapshot::Snapshot) {
        move |s| key_mut(s).expires = Some(NOW.unix_timestamp() + days * DAY)
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("a year left", |_| {}, &[PASS]),
                ("31 days left", |s| expiring_in(31)(s), &[PASS]),
                ("30 days left", |s| expiring_in(30)(s), &[MEDIUM]),
                ("8 days left", |s| expiring_in(8)(s), &[MEDIUM]),
                ("7 days left", |s| expiring_in(7)(s), &[HIGH]),
                (
                    "1 second left",
                    |s| key_mut(s).expires = Some(NOW.unix_timestamp() + 1),
                    &[HIGH],
                ),
                ("expiring now", |s| expiring_in(0)(s), &[CRITICAL]),
                ("expired yesterday", |s| expiring_in(-1)(s), &[CRITICAL]),
                ("no expiry", |s| key_mut(s).expires = None, &[NA]),
                ("key gone", |s| s.key = Some(Read::NotFound), &[NA]),
                ("key not read", |s| s.key = None, &[UNKNOWN]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn the_pinned_version_is_judged_not_the_latest() {
        let mut snapshot = compliant_snapshot();
        key_mut(&mut snapshot).expires = Some(NOW.unix_timestamp() - DAY);
        if let Some(Read::Found(latest)) = &mut snapshot.latest_key {
            latest.version = Some("fedcba9876543210fedcba9876543210".into());
            latest.expires = Some(NOW.unix_timestamp() + 365 * DAY);
        }
        let check = &run(&RULE, &snapshot)[0];
        assert_eq!(check.status, CRITICAL);
        assert!(
            check.observed.contains("pins this version"),
            "{}",
            check.observed
        );
    }

    #[test]
    fn thresholds_come_from_the_policy() {
        let policy = Policy::from_toml_str(
            "[rules.\"key.expiry\"]\nwarn_days = 90\ncritical_days = 14\n",
            "t",
        )
        .unwrap();
        let verdict = |days: i64| {
            let mut snapshot = compliant_snapshot();
            expiring_in(days)(&mut snapshot);
            RULE.check(&context(&snapshot, &policy))[0].status
        };
        assert_eq!(verdict(60), MEDIUM);
        assert_eq!(verdict(10), HIGH);
        assert_eq!(verdict(91), PASS);
    }
}
