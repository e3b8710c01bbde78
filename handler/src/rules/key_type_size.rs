//! `key.type-size`: the key is RSA with a large enough modulus.
//!
//! Requirement: the CMK is an RSA key (Azure ML wraps with RSA), 3072 bits or more recommended.
//! `RSA-HSM` counts as RSA (azure-notes Trap T4). At or above `min_rsa_bits` (policy
//! `[rules."key.type-size"]`, default 3072) passes; below 2048 → high; between → medium; an EC or
//! oct key cannot serve as CMK → high. The size is ARM's `keySize`, else the modulus bit length,
//! as observe reports it. Source: Azure ML CMK guide,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: Azure Policy `82067dbb-e53b-4e06-b631-546d197452d9` (Keys using RSA cryptography
//! should have a specified minimum key size) and `75c4f823-d65c-4f29-a733-01d0077fdbcb` (key
//! type); Cloud Custodian `keyvault-key` `key-type` (no size). Prowler and Checkov have none.
//!
//! Compliant: `"kty": "RSA-HSM", "keySize": 3072`.
//! Non-compliant: `"kty": "RSA", "keySize": 2048` (medium), `"kty": "EC", "curveName": "P-256"`.

use super::chain::{self, Gate};
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::outcome::Severity;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyTypeSize,
    judge: check,
};

/// Below this an RSA key is weak by any standard.
const WEAK_RSA_BITS: u32 = 2048;

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let min_bits = context.policy.min_rsa_bits();
    let expected = [
        "an RSA or RSA-HSM key of at least ",
        &min_bits.to_string(),
        " bits",
    ]
    .concat();
    let resource = links.key.to_owned();
    let stop = |gate: Gate| Checks::One(gate.check(RULE.id, resource.clone(), expected.clone()));
    let key = match chain::key(snapshot) {
        Ok(key) => key,
        Err(gate) => return stop(gate),
    };
    let label = links.key_label.as_str();
    let Some(kty) = key.kty.as_deref() else {
        return stop(Gate::Unknown(format!(
            "the key {label} does not report its type"
        )));
    };
    if !family(kty).eq_ignore_ascii_case("RSA") {
        let curve = key
            .curve_name
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let observed = format!("the key {label} is {kty}{curve}; a CMK must be RSA");
        return Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::High,
            observed,
            expected,
        ));
    }
    let Some(bits) = key.key_size else {
        return stop(Gate::Unknown(format!(
            "the key {label} does not report its size"
        )));
    };
    let observed = [
        "the key ",
        label,
        " is ",
        kty,
        " with ",
        &bits.to_string(),
        " bits",
    ]
    .concat();
    Checks::One(if bits >= min_bits {
        Check::pass(RULE.id, resource, observed, expected)
    } else if bits < WEAK_RSA_BITS {
        Check::fail(RULE.id, resource, Severity::High, observed, expected)
    } else {
        Check::fail(RULE.id, resource, Severity::Medium, observed, expected)
    })
}

/// `RSA-HSM` → `RSA`, `EC-HSM` → `EC`, `oct-HSM` → `oct`.
fn family(kty: &str) -> &str {
    let split = kty.len().saturating_sub("-HSM".len());
    match kty.get(split..) {
        Some(tail) if tail.eq_ignore_ascii_case("-HSM") => &kty[..split],
        _ => kty,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::policy::Policy;
    use crate::snapshot::Read;

    fn rsa(kty: &'static str, bits: u32) -> impl Fn(&mut crate::snapshot::Snapshot) {
        move |s| {
            let key = key_mut(s);
            key.kty = Some(kty.into());
            key.key_size = Some(bits);
        }
    }

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("RSA 3072", |_| {}, &[PASS]),
                ("RSA 4096", |s| rsa("RSA", 4096)(s), &[PASS]),
                ("RSA-HSM 3072", |s| rsa("RSA-HSM", 3072)(s), &[PASS]),
                ("rsa-hsm lower case", |s| rsa("rsa-hsm", 3072)(s), &[PASS]),
                ("RSA 2048", |s| rsa("RSA", 2048)(s), &[MEDIUM]),
                ("RSA-HSM 2048", |s| rsa("RSA-HSM", 2048)(s), &[MEDIUM]),
                ("RSA 1024", |s| rsa("RSA", 1024)(s), &[HIGH]),
                (
                    "EC P-256",
                    |s| {
                        let key = key_mut(s);
                        key.kty = Some("EC".into());
                        key.key_size = None;
                        key.curve_name = Some("P-256".into());
                    },
                    &[HIGH],
                ),
                (
                    "EC-HSM",
                    |s| key_mut(s).kty = Some("EC-HSM".into()),
                    &[HIGH],
                ),
                (
                    "oct-HSM",
                    |s| key_mut(s).kty = Some("oct-HSM".into()),
                    &[HIGH],
                ),
                ("type not reported", |s| key_mut(s).kty = None, &[UNKNOWN]),
                (
                    "size not reported",
                    |s| key_mut(s).key_size = None,
                    &[UNKNOWN],
                ),
                ("key gone", |s| s.key = Some(Read::NotFound), &[NA]),
                ("no CMK", no_cmk, &[NA]),
            ],
        );
    }

    #[test]
    fn the_minimum_comes_from_the_policy() {
        let policy =
            Policy::from_toml_str("[rules.\"key.type-size\"]\nmin_rsa_bits = 4096\n", "t").unwrap();
        let snapshot = compliant_snapshot();
        let check = &RULE.check(&context(&snapshot, &policy))[0];
        assert_eq!(check.status, MEDIUM);
        assert!(check.expected.contains("4096"));
    }

    #[test]
    fn families() {
        for (kty, expected) in [
            ("RSA-HSM", "RSA"),
            ("RSA", "RSA"),
            ("EC-hsm", "EC"),
            ("oct", "oct"),
            ("", ""),
        ] {
            assert_eq!(family(kty), expected);
        }
    }
}
