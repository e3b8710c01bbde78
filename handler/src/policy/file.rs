//! The policy file's shape (the `Raw*` types, kept apart from the validated [`Policy`]) and the
//! validation that turns one into the other. Unknown keys and unknown rule ids are errors, so a
//! typo never silently turns a check off.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::Policy;
use super::error::{self, Invalid, KeyPath, PolicyError};
use super::exemption::RawExemption;
use super::named_rule::{NamedRule, RemediableRule};
use super::notify::RawNotify;
use super::remediation::RawRemediation;
use super::scope::RawScope;
use crate::catalogue::RuleId;
use crate::ids::is_guid;
use crate::outcome::Severity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rules: BTreeMap<NamedRule, RawRule>,
    #[serde(default)]
    remediation: BTreeMap<RemediableRule, RawRemediation>,
    notify: Option<RawNotify>,
    #[serde(default)]
    exemptions: Vec<RawExemption>,
    scope: Option<RawScope>,
}

/// Parses and validates policy text; `source_name` names it in messages.
pub(super) fn parse(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
    let deserializer = toml::de::Deserializer::parse(text)
        .map_err(|error| error::syntax(&error, text, source_name))?;
    let raw: RawPolicy = serde_path_to_error::deserialize(deserializer)
        .map_err(|error| error::unparsable(&error, text, source_name))?;
    let mut policy = Policy {
        source: source_name.to_owned(),
        ..Policy::default()
    };
    raw.validate(&mut policy)
        .map_err(|invalid| invalid.into_error(text, source_name))?;
    Ok(policy)
}

impl RawPolicy {
    fn validate(self, policy: &mut Policy) -> Result<(), Invalid> {
        let root = KeyPath::default();
        for (rule, settings) in self.rules {
            let rule = rule.id();
            settings.apply(rule, policy, &root.key("rules").key(rule))?;
        }
        for (rule, raw) in self.remediation {
            let rule = rule.id();
            let at = root.key("remediation").key(rule);
            if let Some(settings) = raw.rotation_policy(rule, &at)? {
                policy.key_rotation_policy = settings;
            }
            policy.remediation.insert(rule, raw.consent(rule, &at)?);
        }
        if let Some(notify) = self.notify {
            policy.notify = notify.validate(&root.key("notify"))?;
        }
        for (index, exemption) in self.exemptions.into_iter().enumerate() {
            let at = root.key("exemptions").index(index);
            policy.exemptions.push(exemption.validate(&at)?);
        }
        if let Some(scope) = self.scope {
            policy.scope = scope.validate(&root.key("scope"))?;
        }
        Ok(())
    }
}

/// One `[rules."<rule>"]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    enabled: Option<Spanned<bool>>,
    severity: Option<Severity>,
    warn_days: Option<Spanned<u32>>,
    critical_days: Option<Spanned<u32>>,
    min_rsa_bits: Option<Spanned<u32>>,
    azure_ml_object_ids: Option<Vec<Spanned<String>>>,
}

impl RawRule {
    fn apply(self, rule: RuleId, policy: &mut Policy, at: &KeyPath) -> Result<(), Invalid> {
        let only_for = |value: std::ops::Range<usize>, key: &str, owner: RuleId| {
            Invalid::new(
                value,
                at.key(key),
                format!("`{key}` applies only to rule `{owner}`, not `{rule}`"),
            )
        };
        if let Some(enabled) = &self.enabled
            && !*enabled.get_ref()
        {
            if !rule.entry().optional {
                return Err(Invalid::new(
                    enabled.span(),
                    at.key("enabled"),
                    format!(
                        "`{rule}` cannot be turned off: it is how cmk-guard says what it could not read, so that silence never reads as compliant; grant the reads or fix the reference instead"
                    ),
                ));
            }
            policy.disabled.insert(rule);
        }
        if let Some(severity) = self.severity {
            policy.severities.insert(rule, severity);
        }
        for (value, key) in [
            (&self.warn_days, "warn_days"),
            (&self.critical_days, "critical_days"),
        ] {
            if let Some(value) = value
                && rule != RuleId::KeyExpiry
            {
                return Err(only_for(value.span(), key, RuleId::KeyExpiry));
            }
        }
        if let Some(warn_days) = &self.warn_days {
            if *warn_days.get_ref() > 3650 {
                return Err(Invalid::new(
                    warn_days.span(),
                    at.key("warn_days"),
                    "warn_days must be at most 3650",
                ));
            }
            policy.key_expiry.warn_days = *warn_days.get_ref();
        }
        if let Some(critical_days) = &self.critical_days {
            policy.key_expiry.critical_days = *critical_days.get_ref();
        }
        let thresholds = policy.key_expiry;
        if thresholds.critical_days > thresholds.warn_days {
            let (span, key) = match (&self.critical_days, &self.warn_days) {
                (Some(value), _) => (value.span(), "critical_days"),
                (None, Some(value)) => (value.span(), "warn_days"),
                (None, None) => (Default::default(), "critical_days"),
            };
            return Err(Invalid::new(
                span,
                at.key(key),
                format!(
                    "critical_days ({}) must not exceed warn_days ({})",
                    thresholds.critical_days, thresholds.warn_days
                ),
            ));
        }
        if let Some(bits) = &self.min_rsa_bits {
            if rule != RuleId::KeyTypeSize {
                return Err(only_for(bits.span(), "min_rsa_bits", RuleId::KeyTypeSize));
            }
            if ![2048, 3072, 4096].contains(bits.get_ref()) {
                return Err(Invalid::new(
                    bits.span(),
                    at.key("min_rsa_bits"),
                    format!(
                        "min_rsa_bits must be 2048, 3072 or 4096, not {}",
                        bits.get_ref()
                    ),
                ));
            }
            policy.min_rsa_bits = *bits.get_ref();
        }
        if let Some(ids) = self.azure_ml_object_ids {
            for id in ids {
                if rule != RuleId::ManagedResourcesTamper {
                    return Err(only_for(
                        id.span(),
                        "azure_ml_object_ids",
                        RuleId::ManagedResourcesTamper,
                    ));
                }
                if !is_guid(id.get_ref()) {
                    return Err(Invalid::new(
                        id.span(),
                        at.key("azure_ml_object_ids"),
                        format!("`{}` is not an object id (a GUID)", id.get_ref()),
                    ));
                }
                policy.azure_ml_object_ids.push(id.into_inner());
            }
        }
        Ok(())
    }
}
