//! What cmk-guard covers, learned at run time and shared by every part that must agree on it:
//! the subscription allowlist (`CMKGUARD_SUBSCRIPTIONS` and the subscriptions discovered under
//! `CMKGUARD_MANAGEMENT_GROUPS`) and the names of the resource groups Azure ML provisions for
//! workspaces. One value, cloned into the ARM client's scope guard, intake and the sweep: a
//! clone shares the same cell, so a discovery or a learned name is seen by all of them at once.
//! Reading is a lock held only to clone an `Arc`; intake stays free of I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use super::{IdError, SubscriptionId, truncate};

/// A management group id (its `name`, such as `mg-platform`): 1 to 90 letters, digits, `-`,
/// `_`, `(`, `)` and `.`, as Azure allows. Compared ignoring ASCII case, spelled as given.
#[derive(Debug, Clone)]
pub struct ManagementGroupId(String);

impl ManagementGroupId {
    /// Accepts a management group id as Azure names them.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid = (1..=90).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_().".contains(&b));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdError(format!(
                "management group id `{}` is not 1 to 90 letters, digits, `-`, `_`, `(`, `)` or `.`",
                truncate(text)
            )))
        }
    }

    /// The id as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for ManagementGroupId {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for ManagementGroupId {}

impl fmt::Display for ManagementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a subscription is in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Listed, discovered, or every subscription is in scope.
    In,
    /// Not in the allowlist as it is known.
    Out,
    /// Not listed, and the management groups' subscriptions were never discovered yet: it may
    /// well be in scope, so an event about it is asked for again rather than refused.
    NotYetKnown,
}

/// The subscriptions cmk-guard may read and write.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// `CMKGUARD_SUBSCRIPTIONS`.
    listed: Option<Arc<[SubscriptionId]>>,
    /// `CMKGUARD_MANAGEMENT_GROUPS`.
    groups: Arc<[ManagementGroupId]>,
    /// The subscriptions last discovered under each group (by lower-case id); a group is
    /// missing until its first listing succeeded.
    discovered: Arc<RwLock<Discovered>>,
}

impl Allowlist {
    /// Every subscription the identity can read (neither variable set).
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the listed subscriptions (`None`: all), and no management group.
    pub fn listed(listed: Option<Vec<SubscriptionId>>) -> Self {
        Self::new(listed, Vec::new())
    }

    /// The listed subscriptions and, once discovered, those under `groups`.
    pub fn new(listed: Option<Vec<SubscriptionId>>, groups: Vec<ManagementGroupId>) -> Self {
        Self {
            listed: listed.map(Arc::from),
            groups: Arc::from(groups),
            discovered: Arc::default(),
        }
    }

    /// The configured management groups.
    pub fn groups(&self) -> &[ManagementGroupId] {
        &self.groups
    }

    /// True unless every readable subscription is in scope.
    pub fn is_limited(&self) -> bool {
        self.listed.is_some() || !self.groups.is_empty()
    }

    /// True while a configured management group has never been listed.
    pub fn awaits_discovery(&self) -> bool {
        let discovered = self.read();
        self.groups
            .iter()
            .any(|group| !discovered.contains_key(&group.as_str().to_ascii_lowercase()))
    }

    /// Whether `subscription` is in scope now.
    pub fn membership(&self, subscription: &SubscriptionId) -> Membership {
        if !self.is_limited()
            || self
                .listed
                .as_deref()
                .is_some_and(|listed| listed.contains(subscription))
        {
            return Membership::In;
        }
        if self
            .read()
            .values()
            .any(|found| found.contains(subscription))
        {
            Membership::In
        } else if self.awaits_discovery() {
            Membership::NotYetKnown
        } else {
            Membership::Out
        }
    }

    /// True when `subscription` may be read and written now.
    pub fn allows(&self, subscription: &SubscriptionId) -> bool {
        self.membership(subscription) == Membership::In
    }

    /// The subscriptions in scope now, in id order; `None` means every readable one.
    pub fn snapshot(&self) -> Option<Vec<SubscriptionId>> {
        if !self.is_limited() {
            return None;
        }
        let mut union: BTreeSet<SubscriptionId> =
            self.listed.iter().flat_map(|l| l.iter().cloned()).collect();
        for found in self.read().values() {
            union.extend(found.iter().cloned());
        }
        Some(union.into_iter().collect())
    }

    /// Replaces what was discovered under `group` after a listing of it succeeded. A group
    /// whose listing failed is not touched: its last known subscriptions stay in scope.
    pub fn set_discovered(&self, group: &ManagementGroupId, found: BTreeSet<SubscriptionId>) {
        let mut discovered = self
            .discovered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        discovered.insert(group.as_str().to_ascii_lowercase(), Arc::new(found));
    }

    /// How many subscriptions are known under the management groups now.
    pub fn discovered_count(&self) -> usize {
        self.read()
            .values()
            .flat_map(|found| found.iter())
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Discovered> {
        self.discovered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Subscriptions by the lower-case id of the management group they were listed under.
type Discovered = BTreeMap<String, Arc<BTreeSet<SubscriptionId>>>;

/// At most this many service-provisioned resource group names are kept: a name beyond them is
/// not learned (the sweep says so once), so that what workspaces report cannot grow the set,
/// the state store's copy or intake's work without bound.
pub const MAX_MANAGED_GROUPS: usize = 1000;

/// True when `name` can be a resource group's name as ARM allows it: 1 to 90 letters or
/// digits of any script, `-`, `_`, `.`, `(` and `)`, not ending in `.`.
pub fn is_resource_group_name(name: &str) -> bool {
    // A letter takes at most 4 bytes: a longer text is not read character by character.
    name.len() <= 90 * 4
        && (1..=90).contains(&name.chars().count())
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// The names of the resource groups Azure ML provisioned for workspaces
/// (`serviceProvisionedResourceGroup`), learned from evaluations and kept in the state store:
/// intake treats a write or delete in any of them as relevant, whatever the name, without I/O.
/// Only resource group names are kept, at most [`MAX_MANAGED_GROUPS`] of them.
#[derive(Debug, Clone, Default)]
pub struct ManagedGroups(Arc<RwLock<GroupNames>>);

#[derive(Debug, Default)]
struct GroupNames {
    /// Lower-case names.
    known: BTreeSet<String>,
    /// Learned here and not yet saved to the state store.
    unsaved: BTreeSet<String>,
    /// A name was refused because the set is full (said once).
    full_reported: bool,
}

/// What [`ManagedGroups::learn`] did with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new name, now watched (and to be saved).
    New,
    /// Already known.
    Known,
    /// Not a resource group's name ([`is_resource_group_name`]): not learned.
    NotAName,
    /// [`MAX_MANAGED_GROUPS`] names are known already: not learned. `first` is true for the
    /// first name refused so, the one to warn about.
    Full { first: bool },
}

impl ManagedGroups {
    /// True when `name` (any case) is a learned service-provisioned resource group.
    pub fn contains(&self, name: &str) -> bool {
        let names = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !names.known.is_empty() && names.known.contains(&name.to_ascii_lowercase())
    }

    /// True once any name is known (intake then parses resource ids to look for them).
    pub fn names_known(&self) -> bool {
        let names = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !names.known.is_empty()
    }

    /// Remembers a name when it is a resource group's name and the set is not full; a new
    /// name is also marked to be saved.
    pub fn learn(&self, name: &str) -> Learned {
        let name = name.trim();
        if !is_resource_group_name(name) {
            return Learned::NotAName;
        }
        let name = name.to_ascii_lowercase();
        if self.contains(&name) {
            return Learned::Known;
        }
        let mut names = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.known.contains(&name) {
            return Learned::Known;
        }
        if names.known.len() >= MAX_MANAGED_GROUPS {
            let first = !std::mem::replace(&mut names.full_reported, true);
            return Learned::Full { first };
        }
        names.unsaved.insert(name.clone());
        names.known.insert(name);
        Learned::New
    }

    /// Remembers names read from the state store (already saved), with the bounds of
    /// [`ManagedGroups::learn`]. Returns how many were left out (not names, or beyond
    /// [`MAX_MANAGED_GROUPS`]).
    pub fn load(&self, saved: impl IntoIterator<Item = String>) -> usize {
        let mut names = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut left_out = 0;
        for name in saved {
            let name = name.trim();
            if !is_resource_group_name(name) {
                left_out += 1;
                continue;
            }
            let name = name.to_ascii_lowercase();
            if names.known.contains(&name) {
                continue;
            }
            if names.known.len() >= MAX_MANAGED_GROUPS {
                left_out += 1;
                continue;
            }
            names.known.insert(name);
        }
        left_out
    }

    /// The names learned since the last call; give them back with [`ManagedGroups::unsaved`]
    /// if saving them failed.
    pub fn take_unsaved(&self) -> Vec<String> {
        let mut names = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut names.unsaved).into_iter().collect()
    }

    /// Marks names to be saved again.
    pub fn unsaved(&self, names: Vec<String>) {
        let mut names_now = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names_now.unsaved.extend(names);
    }

    /// Every known name, sorted.
    pub fn names(&self) -> Vec<String> {
        let names = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        names.known.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";
    const C: &str = "00000000-0000-0000-0000-00000000000c";

    fn sub(text: &str) -> SubscriptionId {
        SubscriptionId::parse(text).unwrap()
    }

    #[test]
    fn management_group_ids_are_validated_and_compared_ignoring_case() {
        for ok in ["mg-platform", "a", "Contoso_(EU).1", &"x".repeat(90)] {
            assert!(ManagementGroupId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "mg/other",
            "mg platform",
            "mg%2F",
            &"x".repeat(91),
            "mg\u{e9}",
        ] {
            let error = ManagementGroupId::parse(bad).unwrap_err();
            assert!(error.to_string().contains("management group id"), "{bad}");
        }
        assert_eq!(
            ManagementGroupId::parse("MG-Platform").unwrap(),
            ManagementGroupId::parse("mg-platform").unwrap()
        );
    }

    #[test]
    fn without_either_variable_every_subscription_is_in_scope() {
        let all = Allowlist::all();
        assert!(!all.is_limited());
        assert_eq!(all.membership(&sub(A)), Membership::In);
        assert_eq!(all.snapshot(), None);
    }

    #[test]
    fn the_union_of_listed_and_discovered_is_shared_by_every_clone() {
        let group = ManagementGroupId::parse("mg").unwrap();
        let other = ManagementGroupId::parse("mg-other").unwrap();
        let allowlist = Allowlist::new(Some(vec![sub(A)]), vec![group.clone(), other.clone()]);
        let intake = allowlist.clone();
        assert!(allowlist.awaits_discovery());
        assert_eq!(intake.membership(&sub(A)), Membership::In);
        assert_eq!(intake.membership(&sub(B)), Membership::NotYetKnown);
        assert_eq!(intake.snapshot(), Some(vec![sub(A)]));

        // One group listed: its subscriptions are in; the other group may still hold any.
        allowlist.set_discovered(&group, BTreeSet::from([sub(B)]));
        assert!(intake.awaits_discovery());
        assert_eq!(intake.membership(&sub(B)), Membership::In);
        assert_eq!(intake.membership(&sub(C)), Membership::NotYetKnown);

        let upper = ManagementGroupId::parse("MG-OTHER").unwrap();
        allowlist.set_discovered(&upper, BTreeSet::from([sub(B)]));
        assert!(!intake.awaits_discovery());
        assert_eq!(intake.membership(&sub(C)), Membership::Out);
        assert_eq!(intake.snapshot(), Some(vec![sub(A), sub(B)]));
        assert_eq!(intake.discovered_count(), 1);

        // A later listing replaces only its own group's subscriptions.
        allowlist.set_discovered(&group, BTreeSet::from([sub(C)]));
        assert_eq!(intake.snapshot(), Some(vec![sub(A), sub(B), sub(C)]));
        allowlist.set_discovered(&upper, BTreeSet::new());
        assert_eq!(intake.snapshot(), Some(vec![sub(A), sub(C)]));
    }

    #[test]
    fn managed_group_names_are_learned_once_ignoring_case_and_saved_once() {
        let learned = ManagedGroups::default();
        let intake = learned.clone();
        assert!(!intake.contains("contoso-ml-managed"));
        assert_eq!(learned.learn("Contoso-ML-Managed"), Learned::New);
        assert_eq!(learned.learn("contoso-ml-managed"), Learned::Known);
        assert_eq!(learned.learn("  "), Learned::NotAName);
        assert!(intake.contains("CONTOSO-ml-managed"));
        assert_eq!(learned.load(["Rg-From-Store".to_owned()]), 0);
        assert!(intake.contains("rg-from-store"));
        assert_eq!(learned.names(), ["contoso-ml-managed", "rg-from-store"]);
        let unsaved = learned.take_unsaved();
        assert_eq!(unsaved, ["contoso-ml-managed"]);
        assert!(learned.take_unsaved().is_empty());
        learned.unsaved(unsaved);
        assert_eq!(learned.take_unsaved(), ["contoso-ml-managed"]);
    }

    #[test]
    fn only_names_arm_allows_for_resource_groups_are_learned() {
        for ok in [
            "a",
            "Contoso_(ML).managed-1",
            "gr\u{fc}ppe",
            &"x".repeat(90),
            &"\u{e9}".repeat(90),
        ] {
            assert!(is_resource_group_name(ok), "{ok}");
        }
        for bad in [
            "",
            "ends-with-dot.",
            "a/b",
            "a b",
            "a%2Fb",
            "a\\b",
            "a\u{0}b",
            &"x".repeat(91),
            &"\u{e9}".repeat(91),
            &"x".repeat(1_000_000),
        ] {
            assert!(!is_resource_group_name(bad), "{:.20}", bad);
        }
        let learned = ManagedGroups::default();
        assert_eq!(learned.learn(&"x".repeat(1_000_000)), Learned::NotAName);
        assert_eq!(learned.learn("rg."), Learned::NotAName);
        assert!(!learned.names_known());
        assert!(learned.take_unsaved().is_empty());
    }

    #[test]
    fn at_most_the_bound_of_names_is_learned_and_the_first_refusal_is_said() {
        let learned = ManagedGroups::default();
        for i in 0..MAX_MANAGED_GROUPS {
            assert_eq!(learned.learn(&format!("rg-{i}")), Learned::New);
        }
        assert_eq!(learned.learn("rg-0"), Learned::Known);
        assert_eq!(learned.learn("rg-new"), Learned::Full { first: true });
        assert_eq!(learned.learn("rg-newer"), Learned::Full { first: false });
        assert!(!learned.contains("rg-new"));
        assert_eq!(learned.names().len(), MAX_MANAGED_GROUPS);
        assert_eq!(learned.take_unsaved().len(), MAX_MANAGED_GROUPS);
    }

    #[test]
    fn loading_applies_the_same_bounds_to_what_the_store_returns() {
        let learned = ManagedGroups::default();
        let stored = (0..MAX_MANAGED_GROUPS + 5)
            .map(|i| format!("RG-{i:04}"))
            .chain(["a/b".to_owned(), "x".repeat(91), "rg-0000".to_owned()]);
        // Five beyond the bound and two that are not names; the repeated name is no loss.
        assert_eq!(learned.load(stored), 7);
        assert_eq!(learned.names().len(), MAX_MANAGED_GROUPS);
        assert!(learned.contains("rg-0000"));
        assert!(!learned.contains("a/b"));
        assert!(
            learned.take_unsaved().is_empty(),
            "loaded names are saved already"
        );
        assert_eq!(learned.learn("rg-other"), Learned::Full { first: true });
    }

    #[test]
    fn a_listed_allowlist_without_groups_never_waits() {
        let listed = Allowlist::listed(Some(vec![sub(A)]));
        assert!(!listed.awaits_discovery());
        assert_eq!(listed.membership(&sub(B)), Membership::Out);
    }
}
