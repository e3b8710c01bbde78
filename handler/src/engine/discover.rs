//! What cmk-guard covers, learned at run time into values shared with intake and the scope
//! guard:
//!
//! - the subscriptions under `CMKGUARD_MANAGEMENT_GROUPS`, listed at start (best effort) and at
//!   every sweep. Each group's answer replaces what was known under that group; a failed
//!   listing keeps the group's last known subscriptions (and the sweep reports it as a
//!   `guard.visibility` finding), so that a passing outage never narrows the scope;
//! - the service-provisioned resource groups workspaces name, learned from every evaluation, so
//!   that a write or delete in such a group is relevant whatever its name, not only under the
//!   `azureml-rg-` prefix. New names are saved to the state store (a union across instances) and
//!   loaded at start, so that a cold instance knows them before its first sweep.

use tokio::time::Instant;

use super::Engine;
use crate::azure::{ArmClient, AzureError, descendant_subscriptions};
use crate::ids::{Allowlist, ArmResourceId, Learned, ManagementGroupId};
use crate::observe::read_failure;
use crate::outcome::Outcome;
use crate::rules;
use crate::snapshot::Snapshot;

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
    let mut failures = Vec::new();
    if allowlist.groups().is_empty() {
        return failures;
    }
    for group in allowlist.groups() {
        match descendant_subscriptions(arm, group, deadline).await {
            Ok(subscriptions) => allowlist.set_discovered(group, subscriptions),
            Err(error) => {
                tracing::warn!(
                    message = "Listing the subscriptions under a management group failed; the last known ones stay in scope.",
                    group = %group,
                    error = %crate::text::chain(&error)
                );
                failures.push(DiscoveryFailure {
                    group: group.clone(),
                    error,
                });
            }
        }
    }
    tracing::info!(
        message = "Subscriptions under the management groups.",
        groups = allowlist.groups().len(),
        failed = failures.len(),
        subscriptions = allowlist.discovered_count()
    );
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

impl Engine {
    /// Remembers the resource group the workspace names in `serviceProvisionedResourceGroup`
    /// (a name or an ARM id) unless intake matches it by its `azureml-rg-` prefix anyway: the
    /// learned set stays small, and intake parses event ids only once it holds a name. Only a
    /// resource group's name is learned, and at most [`crate::ids::MAX_MANAGED_GROUPS`] of them
    /// (the first name refused beyond them is logged as a warning).
    pub(super) fn learn_managed_group(&self, snapshot: &Snapshot) {
        let Some(value) = snapshot
            .workspace
            .found()
            .and_then(|w| w.service_provisioned_resource_group.as_deref())
        else {
            return;
        };
        let value = value.trim();
        let name = match ArmResourceId::parse(value) {
            Ok(id) => id.resource_group().map(str::to_owned),
            Err(_) => Some(value.to_owned()),
        };
        let Some(name) = name.filter(|name| {
            !name
                .to_ascii_lowercase()
                .starts_with(crate::intake::MANAGED_RESOURCE_GROUP_PREFIX)
        }) else {
            return;
        };
        match self.settings.intake.managed_groups.learn(&name) {
            Learned::New => tracing::info!(
                message = "Learned a service-provisioned resource group: writes and deletes in it are watched.",
                resource_group = %name,
                workspace = %snapshot.workspace_id
            ),
            Learned::Full { first: true } => tracing::warn!(
                message = "Too many service-provisioned resource groups without the azureml-rg- prefix: this one and any further are not learned, so writes and deletes in them are seen only by the sweep.",
                limit = crate::ids::MAX_MANAGED_GROUPS,
                resource_group = %name,
                workspace = %snapshot.workspace_id
            ),
            // Not a resource group's name: no event id can hold it, so there is nothing to watch.
            Learned::Known | Learned::NotAName | Learned::Full { first: false } => {}
        }
    }

    /// Saves the names learned since the last save. Best effort: a failure is logged and the
    /// names are saved with the next ones.
    pub(super) async fn save_managed_groups(&self) {
        let Some(actor) = self.actor() else {
            return;
        };
        let learned = &self.settings.intake.managed_groups;
        let unsaved = learned.take_unsaved();
        if unsaved.is_empty() {
            return;
        }
        if let Err(error) = actor.store.add_managed_resource_groups(&unsaved).await {
            tracing::warn!(
                message = "Saving the learned service-provisioned resource groups failed; they are saved with the next ones.",
                error = %crate::text::chain(&error)
            );
            learned.unsaved(unsaved);
        }
    }

    /// Loads the names saved by any instance (at start). Best effort: the next sweep learns
    /// them again.
    pub async fn load_managed_groups(&self) {
        let Some(actor) = self.actor() else {
            return;
        };
        match actor.store.managed_resource_groups().await {
            Ok(names) => {
                let left_out = self.settings.intake.managed_groups.load(names);
                if left_out > 0 {
                    tracing::warn!(
                        message = "Some stored service-provisioned resource group names were left out: not resource group names, or beyond the limit.",
                        left_out,
                        limit = crate::ids::MAX_MANAGED_GROUPS
                    );
                }
            }
            Err(error) => tracing::warn!(
                message = "Reading the learned service-provisioned resource groups failed; the next sweep learns them again.",
                error = %crate::text::chain(&error)
            ),
        }
    }

    /// Says which service-provisioned resource groups without the `azureml-rg-` prefix are
    /// watched (at the end of a sweep), so that an operator can add them to the Event Grid
    /// filters.
    pub(super) fn log_managed_groups(&self) {
        let names = self.settings.intake.managed_groups.names();
        if !names.is_empty() {
            tracing::info!(
                message = "Service-provisioned resource groups watched.",
                count = names.len(),
                without_prefix = ?names
            );
        }
    }
}
