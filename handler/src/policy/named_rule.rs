//! The rule ids the policy file may write, as typed keys: an id that is not one is refused where
//! it is written, so the message names its line and key.

use serde::{Deserialize, Deserializer};

use crate::catalogue::{Kind, RuleId, UnknownRule};

/// A rule id as the policy file may write it: a rule over a snapshot. Anything else is refused
/// where it is written, with the list of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct NamedRule(RuleId);

impl NamedRule {
    pub(super) fn id(self) -> RuleId {
        self.0
    }
}

impl<'de> Deserialize<'de> for NamedRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match RuleId::parse(&text) {
            Some(rule) if rule.kind() != Kind::Acting => Ok(NamedRule(rule)),
            _ => Err(serde::de::Error::custom(UnknownRule { id: text })),
        }
    }
}

/// A `[remediation]` key: a rule the catalogue gives a remediation. Any other id is refused
/// where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RemediableRule(RuleId);

impl RemediableRule {
    pub(super) fn id(self) -> RuleId {
        self.0
    }
}

impl<'de> Deserialize<'de> for RemediableRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rule = NamedRule::deserialize(deserializer)?.id();
        if rule.is_remediable() {
            Ok(RemediableRule(rule))
        } else {
            Err(serde::de::Error::custom(format!(
                "rule `{rule}` has no remediation"
            )))
        }
    }
}
