//! The read-only `cmk-guard scan`: every ML workspace of whole subscriptions, listed with
//! Resource Graph and each re-read through ARM.

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Engine, add_findings};
use crate::azure::AzureError;
use crate::ids::SubscriptionId;
use crate::observe::read_failure;
use crate::outcome::{Disposition, EventRef, Outcome};
use crate::resolve::{self, ALL_WORKSPACES};
use crate::rules;

/// The `event.type` of scan outcomes.
pub const SCAN_EVENT_TYPE: &str = "cmk-guard.Scan";

/// How many workspaces a scan reads at once (the request rate limit applies on top).
pub const SCAN_CONCURRENCY: usize = 32;

impl Engine {
    /// Checks every ML workspace of `subscriptions` (all readable ones when `None`): listed with
    /// Resource Graph, each re-read through ARM (azure-notes Trap T19), at most
    /// [`SCAN_CONCURRENCY`] at a time and within the shared Azure request rate. What could not be
    /// read in time, the list of workspaces included, becomes a `guard.visibility` finding
    /// rather than a failed scan: the outcome always says what was and was not seen.
    /// `progress` hears (done, total).
    pub async fn scan(
        &self,
        id: &str,
        subscriptions: Option<&[SubscriptionId]>,
        deadline: Instant,
        progress: &(dyn Fn(usize, usize) + Sync),
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
        let total = workspaces.len();
        progress(0, total);
        let now = time::OffsetDateTime::now_utc();
        let mut snapshots = futures_util::stream::iter(workspaces.iter())
            .map(|found| {
                self.observer
                    .snapshot_hinted(&found.id, found.hint.as_ref(), deadline)
            })
            .buffer_unordered(SCAN_CONCURRENCY);
        let mut wiring =
            crate::observe::wiring::WiringReads::new(self.observer.arm(), &self.settings.wiring);
        let mut done = 0;
        while let Some(mut snapshot) = snapshots.next().await {
            if let Some(wiring) = &mut wiring {
                wiring
                    .fill(std::slice::from_mut(&mut snapshot), deadline)
                    .await;
            }
            let evaluation = self.evaluate(&snapshot, None, now);
            add_findings(&mut outcome, &evaluation);
            done += 1;
            progress(done, total);
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
