//! Discovery of the subscriptions under `CMKGUARD_MANAGEMENT_GROUPS`, at start (best effort)
//! and at every sweep. What is found replaces the shared allowlist's discovered part only when
//! every group answered: a failed discovery keeps the last known set (and the sweep reports it
//! as a `guard.visibility` finding), so that a passing outage never narrows the scope.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::Engine;
use crate::azure::{ArmClient, AzureError, descendant_subscriptions};
use crate::ids::{Allowlist, ManagementGroupId};
use crate::observe::read_failure;
use crate::outcome::Outcome;
use crate::rules;

/// A management group whose subscriptions could not be listed.
#[derive(Debug)]
pub struct DiscoveryFailure {
    pub group: ManagementGroupId,
    pub error: AzureError,
}

impl Engine {
    /// Lists the subscriptions under every configured management group and, when all answered,
    /// makes them the allowlist's discovered part. Nothing to do without management groups.
    pub async fn discover_subscriptions(&self, deadline: Instant) -> Vec<DiscoveryFailure> {
        discover(
            self.observer.arm(),
            &self.settings.intake.subscriptions,
            deadline,
        )
        .await
    }

    /// What start-up discovery needs, to run beside the server: the ARM client and the shared
    /// allowlist. `None` without management groups.
    pub fn discovery(&self) -> Option<(ArmClient, Allowlist)> {
        let allowlist = &self.settings.intake.subscriptions;
        (!allowlist.groups().is_empty()).then(|| (self.observer.arm().clone(), allowlist.clone()))
    }
}

/// [`Engine::discover_subscriptions`] with the parts it needs.
pub async fn discover(
    arm: &ArmClient,
    allowlist: &Allowlist,
    deadline: Instant,
) -> Vec<DiscoveryFailure> {
    let mut found = BTreeSet::new();
    let mut failures = Vec::new();
    if allowlist.groups().is_empty() {
        return failures;
    }
    for group in allowlist.groups() {
        match descendant_subscriptions(arm, group, deadline).await {
            Ok(subscriptions) => found.extend(subscriptions),
            Err(error) => failures.push(DiscoveryFailure {
                group: group.clone(),
                error,
            }),
        }
    }
    if failures.is_empty() {
        tracing::info!(
            message = "Subscriptions discovered under the management groups.",
            groups = allowlist.groups().len(),
            subscriptions = found.len()
        );
        allowlist.set_discovered(found);
    } else {
        for failure in &failures {
            tracing::warn!(
                message = "Listing the subscriptions under a management group failed; the last known ones stay in scope.",
                group = %failure.group,
                error = %crate::text::chain(&failure.error)
            );
        }
    }
    failures
}

/// One `guard.visibility` finding per management group that could not be listed.
pub(super) fn add_discovery_failures(outcome: &mut Outcome, failures: &[DiscoveryFailure]) {
    for DiscoveryFailure { group, error } in failures {
        let scope = format!("/providers/Microsoft.Management/managementGroups/{group}");
        let failure = read_failure("subscriptions under the management group", &scope, error);
        outcome.findings.push(rules::unreadable(&scope, &failure));
    }
}
