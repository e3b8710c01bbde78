//! The rule catalogue: every rule id cmk-guard reports, what kind of finding it is, and what its
//! remediation may do. The policy (which consent it accepts), the rules (how findings resolve)
//! and the remediations (which exist, which need `irreversible_ok`) all read it from here, so
//! they cannot disagree.
//!
//! Rule ids are public contract (docs/architecture.md *Rules*): a [`RuleId`] is written, read and
//! serialised as exactly its documented string. This module imports nothing from the crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One rule id of the contract. Compared exactly: the ids are lowercase contract strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    WorkspaceCmkEnabled,
    WorkspaceVaultSameSubscription,
    WorkspaceKeyAccess,
    WorkspaceUnsupportedEndpoints,
    VaultExists,
    VaultSoftDelete,
    VaultPurgeProtection,
    VaultEventsWired,
    KeyExists,
    KeyEnabled,
    KeyExpiry,
    KeyExpirySet,
    KeyTypeSize,
    KeyRotationPolicy,
    KeyUseFailures,
    SubscriptionProviders,
    ManagedResourcesTamper,
    GuardVisibility,
    GuardRemediationBudget,
}

/// How findings of a rule come about, which decides how they resolve and whether the policy
/// file can name the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rule over the standing state of the chain: a finding it no longer raises is resolved.
    State,
    /// A rule over single events (`managed-resources.tamper`): nothing undoes an event, so its
    /// findings never resolve by a later evaluation.
    Event,
    /// Raised by cmk-guard about its own acting (`guard.remediation-budget`), not by a rule over
    /// a snapshot: the policy file cannot name it.
    Acting,
}

/// What a rule's remediation may do, so the policy can refuse consent that would mean nothing
/// and demand explicit consent for what cannot be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remediation {
    /// No remediation: a person fixes it.
    Manual,
    /// A fix that a person can undo.
    Reversible,
    /// The fix cannot be undone (purge protection): the policy must also say `irreversible_ok`.
    Irreversible,
}

/// What the catalogue says about one rule id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: RuleId,
    pub kind: Kind,
    pub remediation: Remediation,
    /// The policy may turn the rule off and exempt resources from it. `guard.visibility` it may
    /// not: without it an unread resource would read as compliant.
    pub optional: bool,
}

impl RuleId {
    /// Every id, in the order of the docs/architecture.md table (and of the findings).
    pub const ALL: [RuleId; 19] = [
        RuleId::WorkspaceCmkEnabled,
        RuleId::WorkspaceVaultSameSubscription,
        RuleId::WorkspaceKeyAccess,
        RuleId::WorkspaceUnsupportedEndpoints,
        RuleId::VaultExists,
        RuleId::VaultSoftDelete,
        RuleId::VaultPurgeProtection,
        RuleId::VaultEventsWired,
        RuleId::KeyExists,
        RuleId::KeyEnabled,
        RuleId::KeyExpiry,
        RuleId::KeyExpirySet,
        RuleId::KeyTypeSize,
        RuleId::KeyRotationPolicy,
        RuleId::KeyUseFailures,
        RuleId::SubscriptionProviders,
        RuleId::ManagedResourcesTamper,
        RuleId::GuardVisibility,
        RuleId::GuardRemediationBudget,
    ];

    /// The contract string.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::WorkspaceCmkEnabled => "workspace.cmk-enabled",
            RuleId::WorkspaceVaultSameSubscription => "workspace.vault-same-subscription",
            RuleId::WorkspaceKeyAccess => "workspace.key-access",
            RuleId::WorkspaceUnsupportedEndpoints => "workspace.unsupported-endpoints",
            RuleId::VaultExists => "vault.exists",
            RuleId::VaultSoftDelete => "vault.soft-delete",
            RuleId::VaultPurgeProtection => "vault.purge-protection",
            RuleId::VaultEventsWired => "vault.events-wired",
            RuleId::KeyExists => "key.exists",
            RuleId::KeyEnabled => "key.enabled",
            RuleId::KeyExpiry => "key.expiry",
            RuleId::KeyExpirySet => "key.expiry-set",
            RuleId::KeyTypeSize => "key.type-size",
            RuleId::KeyRotationPolicy => "key.rotation-policy",
            RuleId::KeyUseFailures => "key.use-failures",
            RuleId::SubscriptionProviders => "subscription.providers",
            RuleId::ManagedResourcesTamper => "managed-resources.tamper",
            RuleId::GuardVisibility => "guard.visibility",
            RuleId::GuardRemediationBudget => "guard.remediation-budget",
        }
    }

    /// The id written exactly so, if there is one.
    pub fn parse(text: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|id| id.as_str() == text)
    }

    /// The catalogue's entry: the one table of kinds and remediations.
    pub const fn entry(self) -> Entry {
        use Kind::{Acting, Event, State};
        use Remediation::{Irreversible, Manual, Reversible};
        let (kind, remediation) = match self {
            RuleId::WorkspaceCmkEnabled => (State, Manual),
            RuleId::WorkspaceVaultSameSubscription => (State, Manual),
            RuleId::WorkspaceKeyAccess => (State, Reversible),
            RuleId::WorkspaceUnsupportedEndpoints => (State, Manual),
            RuleId::VaultExists => (State, Manual),
            RuleId::VaultSoftDelete => (State, Manual),
            RuleId::VaultPurgeProtection => (State, Irreversible),
            RuleId::VaultEventsWired => (State, Reversible),
            RuleId::KeyExists => (State, Manual),
            RuleId::KeyEnabled => (State, Reversible),
            RuleId::KeyExpiry => (State, Reversible),
            RuleId::KeyExpirySet => (State, Manual),
            RuleId::KeyTypeSize => (State, Manual),
            RuleId::KeyRotationPolicy => (State, Reversible),
            RuleId::KeyUseFailures => (State, Manual),
            RuleId::SubscriptionProviders => (State, Reversible),
            RuleId::ManagedResourcesTamper => (Event, Manual),
            RuleId::GuardVisibility => (State, Manual),
            RuleId::GuardRemediationBudget => (Acting, Manual),
        };
        Entry {
            id: self,
            kind,
            remediation,
            optional: !matches!(
                self,
                RuleId::GuardVisibility | RuleId::GuardRemediationBudget
            ),
        }
    }

    pub const fn kind(self) -> Kind {
        self.entry().kind
    }

    pub const fn remediation(self) -> Remediation {
        self.entry().remediation
    }

    /// True when cmk-guard has a remediation for the rule.
    pub const fn is_remediable(self) -> bool {
        !matches!(self.remediation(), Remediation::Manual)
    }

    /// True when the rule's remediation cannot be undone.
    pub const fn is_irreversible(self) -> bool {
        matches!(self.remediation(), Remediation::Irreversible)
    }

    /// The ids a rule over a snapshot reports: what the policy file may name.
    pub fn evaluated() -> impl Iterator<Item = RuleId> {
        RuleId::ALL
            .into_iter()
            .filter(|id| id.kind() != Kind::Acting)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for RuleId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A text that is no rule id; its message lists the rules a policy can name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule `{id}`; the rules are {}", RuleId::evaluated().map(RuleId::as_str).collect::<Vec<_>>().join(", "))]
pub struct UnknownRule {
    pub id: String,
}

impl FromStr for RuleId {
    type Err = UnknownRule;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RuleId::parse(text).ok_or_else(|| UnknownRule {
            id: text.to_owned(),
        })
    }
}

impl PartialEq<str> for RuleId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RuleId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for RuleId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<RuleId> for str {
    fn eq(&self, other: &RuleId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<RuleId> for &str {
    fn eq(&self, other: &RuleId) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<RuleId> for String {
    fn eq(&self, other: &RuleId) -> bool {
        self == other.as_str()
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RuleId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_parses_displays_and_serialises_as_its_contract_string() {
        for id in RuleId::ALL {
            assert_eq!(RuleId::parse(id.as_str()), Some(id));
            assert_eq!(id.to_string(), id.as_str());
            assert_eq!(id.entry().id, id);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
            assert_eq!(serde_json::from_str::<RuleId>(&json).unwrap(), id);
        }
        assert_eq!(RuleId::parse("Vault.Exists"), None, "ids compare exactly");
        assert!(serde_json::from_str::<RuleId>("\"vault.exist\"").is_err());
        assert_eq!(RuleId::KeyExpiry, "key.expiry");
        assert_eq!("key.expiry".to_owned(), RuleId::KeyExpiry);
    }

    #[test]
    fn the_catalogue_says_which_remediations_exist_and_which_cannot_be_undone() {
        let remediable: Vec<&str> = RuleId::ALL
            .into_iter()
            .filter(|id| id.is_remediable())
            .map(RuleId::as_str)
            .collect();
        assert_eq!(
            remediable,
            [
                "workspace.key-access",
                "vault.purge-protection",
                "vault.events-wired",
                "key.enabled",
                "key.expiry",
                "key.rotation-policy",
                "subscription.providers",
            ]
        );
        let irreversible: Vec<RuleId> = RuleId::ALL
            .into_iter()
            .filter(|id| id.is_irreversible())
            .collect();
        assert_eq!(irreversible, [RuleId::VaultPurgeProtection]);
        let always_on: Vec<RuleId> = RuleId::evaluated()
            .filter(|id| !id.entry().optional)
            .collect();
        assert_eq!(always_on, [RuleId::GuardVisibility]);
        assert_eq!(RuleId::evaluated().count(), 18);
    }

    #[test]
    fn an_unknown_id_names_the_rules_a_policy_can_name() {
        let message = "vault.exist".parse::<RuleId>().unwrap_err().to_string();
        assert!(
            message
                .starts_with("unknown rule `vault.exist`; the rules are workspace.cmk-enabled, "),
            "{message}"
        );
        assert!(message.ends_with(", guard.visibility"), "{message}");
    }
}
