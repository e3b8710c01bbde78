//! The read-only `cmk-guard scan`: every ML workspace of whole subscriptions, listed with
//! Resource Graph and each re-read through ARM, in bulk (`observe::bulk`, shared with the
//! sweep: [`Inventories`] and `Engine::snapshots_in_bulk`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Engine, add_findings};
use crate::azure::AzureError;
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, SubscriptionId};
use crate::observe::bulk::Inventory;
use crate::observe::read_failure;
use crate::outcome::{Disposition, EventRef, Outcome};
use crate::resolve::{self, ALL_WORKSPACES, Found};
use crate::rules;
use crate::snapshot::Snapshot;

/// The `event.type` of scan outcomes.
pub const SCAN_EVENT_TYPE: &str = "cmk-guard.Scan";

/// How many workspaces a scan reads at once (the request rate limit applies on top).
pub const SCAN_CONCURRENCY: usize = 32;

/// How many workspaces a scan reads, evaluates and reports before the next ones.
const SCAN_CHUNK: usize = 8 * SCAN_CONCURRENCY;

/// How far a scan is: what a progress display shows (the Azure requests behind it are the
/// pacing's, `azure::pacing::activity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanProgress {
    /// Subscriptions whose every workspace is checked (those without any count from the list).
    pub subscriptions_done: usize,
    /// The subscriptions in scope, or those the list found workspaces in when the scope is
    /// every readable subscription.
    pub subscriptions_total: usize,
    pub workspaces_done: usize,
    pub workspaces_total: usize,
}

/// Hears how far a scan is: once the workspaces are listed, then after each one is checked.
/// Called on the scan's task, so it must be quick.
pub trait ScanObserver: Sync {
    fn progress(&self, progress: ScanProgress);
}

/// No one listening.
impl ScanObserver for () {
    fn progress(&self, _: ScanProgress) {}
}

/// Counts workspaces and subscriptions done for [`ScanProgress`].
struct Tally {
    /// Workspaces not yet checked, per subscription (lower-cased).
    left: HashMap<String, usize>,
    progress: ScanProgress,
}

impl Tally {
    fn new(subscriptions: Option<&[SubscriptionId]>, workspaces: &[Found]) -> Self {
        let mut left: HashMap<String, usize> = HashMap::new();
        for found in workspaces {
            *left
                .entry(found.id.subscription().as_str().to_ascii_lowercase())
                .or_default() += 1;
        }
        let mut all: HashSet<String> = left.keys().cloned().collect();
        all.extend(
            subscriptions
                .unwrap_or_default()
                .iter()
                .map(|s| s.as_str().to_ascii_lowercase()),
        );
        let progress = ScanProgress {
            subscriptions_done: all.len() - left.len(),
            subscriptions_total: all.len(),
            workspaces_done: 0,
            workspaces_total: workspaces.len(),
        };
        Self { left, progress }
    }

    /// `found` is checked.
    fn done(&mut self, found: &ArmResourceId) -> ScanProgress {
        self.progress.workspaces_done += 1;
        let key = found.subscription().as_str().to_ascii_lowercase();
        if let Some(left) = self.left.get_mut(&key) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.left.remove(&key);
                self.progress.subscriptions_done += 1;
            }
        }
        self.progress
    }
}

impl Engine {
    /// Checks every ML workspace of `subscriptions` (all readable ones when `None`): listed with
    /// Resource Graph, each re-read through ARM (azure-notes Trap T19; in bulk, each
    /// subscription's lists once), at most
    /// [`SCAN_CONCURRENCY`] at a time and within the shared Azure request rate. What could not be
    /// read in time, the list of workspaces included, becomes a `guard.visibility` finding
    /// rather than a failed scan: the outcome always says what was and was not seen.
    /// `observer` hears how far it is.
    pub async fn scan(
        &self,
        id: &str,
        subscriptions: Option<&[SubscriptionId]>,
        deadline: Instant,
        observer: &dyn ScanObserver,
    ) -> Outcome {
        let event = EventRef {
            id: Some(id.to_owned()),
            event_type: Some(SCAN_EVENT_TYPE.to_owned()),
            subject: Some(match subscriptions {
                Some(subs) => subs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                None => "all readable subscriptions".to_owned(),
            }),
        };
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        let workspaces = match resolve::query_workspaces(
            &self.observer,
            ALL_WORKSPACES,
            subscriptions,
            deadline,
        )
        .await
        {
            Ok(ids) => ids,
            Err(error) => {
                // The scan's answer: it could not see which workspaces there are.
                add_listing_failure(&mut outcome, subscriptions, &error);
                return outcome;
            }
        };
        let mut tally = Tally::new(subscriptions, &workspaces);
        observer.progress(tally.progress);
        let now = time::OffsetDateTime::now_utc();
        let mut inventories = Inventories::new(&workspaces, deadline);
        let mut wiring =
            crate::observe::wiring::WiringReads::new(self.observer.arm(), &self.settings.wiring);
        for chunk in workspaces.chunks(SCAN_CHUNK) {
            let mut snapshots = self
                .snapshots_in_bulk(&mut inventories, chunk, deadline, now)
                .await;
            if let Some(wiring) = &mut wiring {
                wiring.fill(&mut snapshots, deadline).await;
            }
            for (snapshot, found) in snapshots.iter().zip(chunk) {
                let evaluation = self.evaluate(snapshot, None, now);
                add_findings(&mut outcome, &evaluation);
                observer.progress(tally.done(&found.id));
            }
        }
        outcome.workspaces = workspaces.iter().map(|f| f.id.to_string()).collect();
        outcome.findings.sort_by(|a, b| {
            a.workspace
                .cmp(&b.workspace)
                .then(a.rule.cmp(&b.rule))
                .then(a.resource.cmp(&b.resource))
        });
        outcome
    }
}

/// The bulk inventories of a pass (`observe::bulk`), each read when the pass first reaches a
/// workspace of its subscription, for the pass's workspaces of that subscription.
pub(super) struct Inventories {
    wanted: HashMap<String, Vec<ArmResourceId>>,
    read: HashMap<String, Arc<Inventory>>,
    /// When reading an inventory must be done: the pass's end, not one chunk's (an inventory
    /// serves every chunk of its subscription).
    deadline: Instant,
}

impl Inventories {
    /// None read yet, for the pass over `found` that ends at `deadline`.
    pub(super) fn new(found: &[Found], deadline: Instant) -> Self {
        let mut wanted: HashMap<String, Vec<ArmResourceId>> = HashMap::new();
        for found in found {
            wanted
                .entry(found.id.subscription().as_str().to_ascii_lowercase())
                .or_default()
                .push(found.id.clone());
        }
        Self {
            wanted,
            read: HashMap::new(),
            deadline,
        }
    }
}

impl Engine {
    /// The snapshots of `chunk`, in order, at most [`SCAN_CONCURRENCY`] read at once, each
    /// answered from its subscription's inventory where it can. A workspace whose bulk
    /// evaluation cannot stand (`needs_targeted_read`) is read again through the targeted
    /// reads and that snapshot returned instead.
    pub(super) async fn snapshots_in_bulk(
        &self,
        inventories: &mut Inventories,
        chunk: &[Found],
        deadline: Instant,
        now: time::OffsetDateTime,
    ) -> Vec<Snapshot> {
        self.read_inventories(inventories, chunk, deadline).await;
        let inventories = &*inventories;
        futures_util::stream::iter(chunk)
            .map(|found| async move {
                let key = found.id.subscription().as_str().to_ascii_lowercase();
                let hint = found.hint.as_ref();
                if let Some(inventory) = inventories.read.get(&key) {
                    let snapshot = self
                        .observer
                        .snapshot_from(inventory, &found.id, hint, deadline)
                        .await;
                    if !self.needs_targeted_read(&self.evaluate(&snapshot, None, now)) {
                        return snapshot;
                    }
                }
                self.observer
                    .snapshot_hinted(&found.id, hint, deadline)
                    .await
            })
            .buffered(SCAN_CONCURRENCY)
            .collect()
            .await
    }

    /// Reads the inventory of every subscription of `chunk` not read yet in this pass (until
    /// the pass's deadline or `deadline`, whichever is later). Call it before starting the
    /// clock of a chunk's own reads: a slow inventory must not spend their budget.
    pub(super) async fn read_inventories(
        &self,
        inventories: &mut Inventories,
        chunk: &[Found],
        deadline: Instant,
    ) {
        for found in chunk {
            let subscription = found.id.subscription();
            let key = subscription.as_str().to_ascii_lowercase();
            if inventories.read.contains_key(&key) {
                continue;
            }
            let wanted = inventories.wanted.get(&key).cloned().unwrap_or_default();
            let wanted: Vec<&ArmResourceId> = wanted.iter().collect();
            let inventory = self
                .observer
                .inventory(subscription, &wanted, inventories.deadline.max(deadline))
                .await;
            inventories.read.insert(key, Arc::new(inventory));
        }
    }
}

impl Engine {
    /// True when a bulk evaluation cannot stand on its own: a failing `workspace.key-access`
    /// (access granted through a group is invisible in bulk). Nothing else needs it: the other
    /// rules judge the very objects the lists returned, and every remediation reads what it
    /// fixes again, fresh, and checks the rule still fails before it writes (`remediate`).
    fn needs_targeted_read(&self, evaluation: &rules::Evaluation) -> bool {
        evaluation
            .findings
            .iter()
            .chain(evaluation.exempted.iter().map(|e| &e.finding))
            .any(|f| f.rule == RuleId::WorkspaceKeyAccess)
    }
}

/// One `guard.visibility` finding per subscription whose workspaces could not be listed
/// (`/subscriptions` when the scope is every readable subscription).
pub(super) fn add_listing_failure(
    outcome: &mut Outcome,
    subscriptions: Option<&[SubscriptionId]>,
    error: &AzureError,
) {
    let scopes: Vec<String> = match subscriptions {
        Some(subscriptions) => subscriptions
            .iter()
            .map(|s| format!("/subscriptions/{s}"))
            .collect(),
        None => vec!["/subscriptions".to_owned()],
    };
    for scope in scopes {
        let failure = read_failure("list of ML workspaces (Resource Graph)", &scope, error);
        outcome.findings.push(rules::unreadable(&scope, &failure));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";
    const EMPTY: &str = "00000000-0000-0000-0000-00000000000c";

    fn workspace(sub: &str, name: &str) -> Found {
        Found {
            id: ArmResourceId::parse(&format!(
                "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{name}"
            ))
            .unwrap(),
            hint: None,
        }
    }

    #[test]
    fn a_subscription_is_done_with_its_last_workspace_and_an_empty_one_at_once() {
        let found = [
            workspace(A, "one"),
            workspace(B, "two"),
            workspace(A, "three"),
        ];
        let scope: Vec<SubscriptionId> = [A, B, EMPTY]
            .iter()
            .map(|s| SubscriptionId::parse(s).unwrap())
            .collect();
        let mut tally = Tally::new(Some(&scope), &found);
        let at = |s, w| ScanProgress {
            subscriptions_done: s,
            subscriptions_total: 3,
            workspaces_done: w,
            workspaces_total: 3,
        };
        assert_eq!(tally.progress, at(1, 0));
        assert_eq!(tally.done(&found[0].id), at(1, 1));
        assert_eq!(tally.done(&found[1].id), at(2, 2));
        assert_eq!(tally.done(&found[2].id), at(3, 3));
    }

    #[test]
    fn every_readable_subscription_counts_those_the_list_found() {
        let found = [workspace(A, "one"), workspace(&A.to_uppercase(), "two")];
        let tally = Tally::new(None, &found);
        assert_eq!(tally.progress.subscriptions_total, 1);
        assert_eq!(tally.progress.subscriptions_done, 0);
    }
}
