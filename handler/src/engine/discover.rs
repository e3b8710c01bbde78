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
use crate::ids::{Allowlist, ArmResourceId, ManagementGroupId};
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
    /// learned set stays small, and intake parses event ids only once it holds a name.
    pub(super) fn learn_managed_group(&self, snapshot: &Snapshot) {
        let Some(value) = snapshot
            .workspace
            .found()
            .and_then(|w| w.service_provisioned_resource_group.as_deref())
        else {
            return;
        };
        // A name that could not be a path segment of an id is never in one: not learned.
        let value = value.trim();
        let name = match ArmResourceId::parse(value) {
            Ok(id) => id.resource_group().map(str::to_owned),
            Err(_) => crate::ids::check_segment(value)
                .is_ok()
                .then(|| value.to_owned()),
        };
        if let Some(name) = name
            && !name
                .to_ascii_lowercase()
                .starts_with(crate::intake::MANAGED_RESOURCE_GROUP_PREFIX)
            && self.settings.intake.managed_groups.learn(&name)
        {
            tracing::info!(
                message = "Learned a service-provisioned resource group: writes and deletes in it are watched.",
                resource_group = %name,
                workspace = %snapshot.workspace_id
            );
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
            Ok(names) => self.settings.intake.managed_groups.load(names),
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
