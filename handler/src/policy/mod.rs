//! The policy file (docs/architecture.md *Policy file*): per-rule switches, severities and
//! thresholds, consent to remediations, notification routing, exemptions and scope, in TOML.
//!
//! The file is read once, at start, and any mistake stops cmk-guard with a message naming the
//! line and key, e.g. ``policy.toml: line 7, key `rules."key.expiry".warn_days`: …``. The file's
//! shape and its validation live in `file`, apart from the validated runtime [`Policy`]; which
//! rules exist and which remediations cannot be undone, the [`crate::catalogue`] says.
//! `docs/rules.md` is the reference for users.

mod error;
mod exemption;
mod file;
mod named_rule;
mod notify;
mod remediation;
mod scope;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use time::Date;

use crate::catalogue::{Remediation, RuleId};
use crate::outcome::Severity;

pub use error::PolicyError;
pub use exemption::Exemption;
pub(crate) use exemption::is_at_or_below;
pub use notify::Notify;
pub use remediation::{RemediationConsent, RotationPolicySettings};
pub use scope::Scope;

/// Where the built-in policy says it came from.
pub const BUILT_IN: &str = "built-in policy";

/// The validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file the policy came from, or [`BUILT_IN`], for messages.
    pub source: String,
    disabled: BTreeSet<RuleId>,
    severities: BTreeMap<RuleId, Severity>,
    key_expiry: ExpiryThresholds,
    min_rsa_bits: u32,
    azure_ml_object_ids: Vec<String>,
    remediation: BTreeMap<RuleId, RemediationConsent>,
    key_rotation_policy: RotationPolicySettings,
    pub notify: Notify,
    pub exemptions: Vec<Exemption>,
    pub scope: Scope,
}

/// `key.expiry` thresholds, in days before the key version in use expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryThresholds {
    /// Within this many days the finding is medium.
    pub warn_days: u32,
    /// Within this many days the finding is high.
    pub critical_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            source: BUILT_IN.to_owned(),
            disabled: BTreeSet::new(),
            severities: BTreeMap::new(),
            key_expiry: ExpiryThresholds {
                warn_days: 30,
                critical_days: 7,
            },
            min_rsa_bits: 3072,
            azure_ml_object_ids: Vec::new(),
            remediation: BTreeMap::new(),
            key_rotation_policy: RotationPolicySettings::default(),
            notify: Notify::default(),
            exemptions: Vec::new(),
            scope: Scope::default(),
        }
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &name)
    }

    /// Parses and validates policy text; `source_name` names it in messages and in
    /// [`Policy::source`].
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        file::parse(text, source_name)
    }

    /// False when the policy turns the rule off (`enabled = false`).
    pub fn rule_enabled(&self, rule: RuleId) -> bool {
        !self.disabled.contains(&rule)
    }

    /// The severity the policy imposes on every finding of the rule, if any.
    pub fn severity_override(&self, rule: RuleId) -> Option<Severity> {
        self.severities.get(&rule).copied()
    }

    pub fn key_expiry(&self) -> ExpiryThresholds {
        self.key_expiry
    }

    /// The smallest RSA modulus that passes `key.type-size`.
    pub fn min_rsa_bits(&self) -> u32 {
        self.min_rsa_bits
    }

    /// Object ids of Azure ML's first-party service principal in this tenant, trusted by
    /// `managed-resources.tamper`.
    pub fn azure_ml_object_ids(&self) -> &[String] {
        &self.azure_ml_object_ids
    }

    /// What the policy says about a rule's remediation (a finding's rule, as written in it).
    pub fn remediation(&self, rule: RuleId) -> RemediationConsent {
        self.remediation.get(&rule).copied().unwrap_or_default()
    }

    /// The rotation policy the `key.rotation-policy` remediation writes.
    pub fn key_rotation_policy(&self) -> &RotationPolicySettings {
        &self.key_rotation_policy
    }

    /// True when the policy allows remediating the rule (in `remediate` mode): the catalogue
    /// gives the rule a remediation, the policy enables it, and an irreversible one also has
    /// `irreversible_ok`.
    pub fn allows_remediation(&self, rule: RuleId) -> bool {
        let consent = self.remediation(rule);
        consent.enabled
            && match rule.remediation() {
                Remediation::Reversible => true,
                Remediation::Irreversible => consent.irreversible_ok,
                Remediation::Manual => false,
            }
    }

    /// One line on what the policy changes from the defaults, for `cmk-guard policy check`.
    pub fn summary(&self, today: Date) -> String {
        let list = |items: Vec<&str>| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let expired = self
            .exemptions
            .iter()
            .filter(|e| e.is_expired(today))
            .count();
        let remediations = RuleId::evaluated()
            .filter(|rule| self.allows_remediation(*rule))
            .map(RuleId::as_str)
            .collect();
        let scope = match &self.scope.require_cmk_tag {
            None => "CMK required for all workspaces".to_owned(),
            Some(tag) => format!("CMK required for workspaces tagged `{tag}`"),
        };
        format!(
            "{} rules, disabled: {}; severity overrides: {}; key.expiry warn {} / critical {} days; min RSA {} bits; remediation allowed: {}; {} exemption(s), {expired} expired; {scope}",
            RuleId::evaluated().count(),
            list(self.disabled.iter().map(|rule| rule.as_str()).collect()),
            self.severities.len(),
            self.key_expiry.warn_days,
            self.key_expiry.critical_days,
            self.min_rsa_bits,
            list(remediations),
            self.exemptions.len(),
        )
    }
}

#[cfg(test)]
mod tests;
