//! `[remediation."<rule>"]`: consent to a rule's remediation, and the rotation policy the
//! `key.rotation-policy` remediation writes. Which rules have a remediation, and which cannot be
//! undone, the catalogue says.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::error::{Invalid, KeyPath};
use crate::catalogue::{Remediation, RuleId};

/// What the policy says about one rule's remediation. Off unless the file turns it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemediationConsent {
    pub enabled: bool,
    /// Consent to a change that cannot be undone (purge protection).
    pub irreversible_ok: bool,
}

/// The rotation policy the `key.rotation-policy` remediation writes
/// (`[remediation."key.rotation-policy"]`). Durations are ISO-8601, as Key Vault takes them.
/// The default rotates a key 30 days before it expires, notifies 30 days before, and gives each
/// new version a year: a CMK then never reaches its expiry unattended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicySettings {
    /// `attributes.expiryTime`: how long each new key version lives.
    pub expiry_time: String,
    /// A `Rotate` action this long before the version expires.
    pub rotate_before_expiry: String,
    /// A `Notify` action (Event Grid `KeyNearExpiry`) this long before the version expires.
    pub notify_before_expiry: String,
}

impl Default for RotationPolicySettings {
    fn default() -> Self {
        Self {
            expiry_time: "P1Y".to_owned(),
            rotate_before_expiry: "P30D".to_owned(),
            notify_before_expiry: "P30D".to_owned(),
        }
    }
}

/// One `[remediation."<rule>"]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRemediation {
    enabled: Option<Spanned<bool>>,
    irreversible_ok: Option<Spanned<bool>>,
    expiry_time: Option<Spanned<String>>,
    rotate_before_expiry: Option<Spanned<String>>,
    notify_before_expiry: Option<Spanned<String>>,
}

/// Key Vault refuses a rotation policy whose `expiryTime` is shorter than this.
const MIN_KEY_EXPIRY_DAYS: u32 = 28;
/// Key Vault's shortest `timeBeforeExpiry`.
const MIN_BEFORE_EXPIRY_DAYS: u32 = 7;

impl RawRemediation {
    /// The rotation-policy settings, when this is `key.rotation-policy`'s section and it sets
    /// any; an error when another rule's section sets them or a duration is unusable.
    pub(super) fn rotation_policy(
        &self,
        rule: RuleId,
        at: &KeyPath,
    ) -> Result<Option<RotationPolicySettings>, Invalid> {
        let given = [
            (&self.expiry_time, "expiry_time"),
            (&self.rotate_before_expiry, "rotate_before_expiry"),
            (&self.notify_before_expiry, "notify_before_expiry"),
        ];
        if rule != RuleId::KeyRotationPolicy {
            return match given
                .iter()
                .find_map(|(value, key)| value.as_ref().map(|v| (v, key)))
            {
                Some((value, key)) => Err(Invalid::new(
                    value.span(),
                    at.key(key),
                    format!(
                        "`{key}` applies only to remediation `key.rotation-policy`, not `{rule}`"
                    ),
                )),
                None => Ok(None),
            };
        }
        if given.iter().all(|(value, _)| value.is_none()) {
            return Ok(None);
        }
        let defaults = RotationPolicySettings::default();
        // A value left out takes its default; a default that clashes with what the file wrote
        // is reported at the first value written.
        let (written_span, written_key): (Range<usize>, &str) = given
            .iter()
            .find_map(|(value, key)| value.as_ref().map(|v| (v.span(), *key)))
            .unwrap_or_default();
        let duration = |value: &Option<Spanned<String>>, default: &str, key: &str| match value {
            Some(text) => {
                let trimmed = text.get_ref().trim();
                iso_duration_days(trimmed)
                    .map(|days| (trimmed.to_owned(), days, text.span(), key.to_owned()))
                    .ok_or_else(|| {
                        Invalid::new(
                            text.span(),
                            at.key(key),
                            format!(
                                "`{trimmed}` is not an ISO-8601 duration in years, months, weeks or days such as P1Y or P30D"
                            ),
                        )
                    })
            }
            None => Ok((
                default.to_owned(),
                iso_duration_days(default).unwrap_or(0),
                written_span.clone(),
                written_key.to_owned(),
            )),
        };
        let (expiry_time, expiry_days, expiry_span, expiry_key) =
            duration(&self.expiry_time, &defaults.expiry_time, "expiry_time")?;
        if expiry_days < MIN_KEY_EXPIRY_DAYS {
            return Err(Invalid::new(
                expiry_span,
                at.key(expiry_key),
                format!(
                    "expiry_time must be at least {MIN_KEY_EXPIRY_DAYS} days (Key Vault's minimum)"
                ),
            ));
        }
        let before_expiry = |value: &Option<Spanned<String>>, default: &str, key: &str| {
            let (text, days, span, written) = duration(value, default, key)?;
            if days < MIN_BEFORE_EXPIRY_DAYS || days >= expiry_days {
                return Err(Invalid::new(
                    span,
                    at.key(written),
                    format!(
                        "{key} must be at least {MIN_BEFORE_EXPIRY_DAYS} days and shorter than expiry_time ({expiry_time})"
                    ),
                ));
            }
            Ok(text)
        };
        let rotate_before_expiry = before_expiry(
            &self.rotate_before_expiry,
            &defaults.rotate_before_expiry,
            "rotate_before_expiry",
        )?;
        let notify_before_expiry = before_expiry(
            &self.notify_before_expiry,
            &defaults.notify_before_expiry,
            "notify_before_expiry",
        )?;
        Ok(Some(RotationPolicySettings {
            expiry_time,
            rotate_before_expiry,
            notify_before_expiry,
        }))
    }

    /// The consent, checked against what the catalogue says the remediation does.
    pub(super) fn consent(
        &self,
        rule: RuleId,
        at: &KeyPath,
    ) -> Result<RemediationConsent, Invalid> {
        let consent = RemediationConsent {
            enabled: self.enabled.as_ref().is_some_and(|e| *e.get_ref()),
            irreversible_ok: self.irreversible_ok.as_ref().is_some_and(|e| *e.get_ref()),
        };
        match rule.remediation() {
            // A rule without remediation is refused as a `[remediation]` key already.
            Remediation::Manual => Ok(RemediationConsent::default()),
            Remediation::Reversible => match &self.irreversible_ok {
                Some(flag) => Err(Invalid::new(
                    flag.span(),
                    at.key("irreversible_ok"),
                    format!(
                        "the remediation of `{rule}` can be undone; irreversible_ok applies only to vault.purge-protection"
                    ),
                )),
                None => Ok(consent),
            },
            Remediation::Irreversible if consent.enabled && !consent.irreversible_ok => {
                let span = self.enabled.as_ref().map(Spanned::span).unwrap_or_default();
                Err(Invalid::new(
                    span,
                    at.key("enabled"),
                    format!(
                        "the remediation of `{rule}` cannot be undone: also set irreversible_ok = true to allow it"
                    ),
                ))
            }
            Remediation::Irreversible => Ok(consent),
        }
    }
}

/// The length in days of a date-only ISO-8601 duration (`P1Y`, `P2M`, `P30D`, `P1Y6M`), a year
/// counted as 365 days and a month as 30, which is all the comparisons above need. Time parts
/// (`PT12H`) are refused: Key Vault's rotation policy works in days.
pub(super) fn iso_duration_days(text: &str) -> Option<u32> {
    let mut rest = text.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let mut days: u32 = 0;
    for (unit, factor) in [('Y', 365), ('M', 30), ('W', 7), ('D', 1)] {
        if let Some((number, tail)) = rest.split_once(unit)
            && !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
        {
            let value: u32 = number.parse().ok()?;
            days = days.checked_add(value.checked_mul(factor)?)?;
            rest = tail;
        }
    }
    rest.is_empty().then_some(days)
}
