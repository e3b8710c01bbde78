//! The timer's sweep: every workspace in scope re-checked, resumable across invocations, with
//! a digest at the end when one is due (`plan::digest_window`: at most one per `digest_hours`,
//! and only with an open finding people were not told about within it).

use tokio::time::Instant;

use super::{EVENT_BUDGET, Engine, Failure, SCAN_CONCURRENCY, Unfinished, add_findings};
use crate::act::{Actor, Evaluated, Origin, Situation};
use crate::ids::{ArmResourceId, SubscriptionId};
use crate::observe::wiring::WiringReads;
use crate::outcome::{Disposition, EventRef, Outcome};
use crate::resolve::{self, ALL_WORKSPACES, Found};
use crate::snapshot::Snapshot;
use crate::state::{FindingKey, FindingRecord, Versioned};

impl Engine {
    /// The timer's full re-check: every workspace in scope, in id order, resuming after the
    /// cursor a previous sweep left when its time ran out; evaluated with the current time
    /// (keys expire without any event), acted on like an event, with a digest at the end when
    /// one is due.
    pub async fn sweep(&self, event: EventRef) -> Result<Outcome, Unfinished> {
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        match self.sweep_into(&mut outcome).await {
            Ok(()) => Ok(outcome),
            Err(failure) => self.settle(outcome, failure),
        }
    }

    async fn sweep_into(&self, outcome: &mut Outcome) -> Result<(), Failure> {
        // With a queue (`CMKGUARD_SWEEP_QUEUE`), one message per subscription (engine/fanout.rs).
        if let Some(queue) = self.sweep_queue()? {
            return self.fan_out(outcome, &queue).await;
        }
        let started = Instant::now();
        let budget_end = started + self.settings.sweep_budget;
        let actor = self.actor().ok_or(Failure::NoStore)?;
        let store = &actor.store;
        let progress = store
            .sweep_cursor()
            .await?
            .map(|text| SweepProgress::from_cursor(&text));
        let cursor = progress.as_ref().map(|p| p.after.clone());
        let mut digest = progress.and_then(|p| p.digest);
        // Listing is not cut short by a small budget: without the list there is nothing to resume.
        let listing_deadline = budget_end.max(started + EVENT_BUDGET);
        // The management groups' subscriptions first; a group that cannot be listed keeps its
        // last known subscriptions and is reported, and the sweep goes on.
        let failures = self.discover_subscriptions(listing_deadline).await;
        super::discover::add_discovery_failures(outcome, &failures);
        let allowed = self.settings.intake.subscriptions.snapshot();
        let todo = self
            .workspaces_to_sweep(
                outcome,
                allowed.as_deref(),
                cursor.as_deref(),
                listing_deadline,
            )
            .await?;
        let now = time::OffsetDateTime::now_utc();
        let pass = self
            .sweep_workspaces(outcome, &todo, budget_end, &mut digest, now)
            .await?;
        let (last_done, stopped_early) = (pass.last_done, pass.stopped_early);
        let next_cursor = if stopped_early {
            last_done.or(cursor)
        } else {
            None
        };
        let saved = next_cursor.as_ref().map(|after| {
            SweepProgress {
                after: after.clone(),
                digest: digest.clone(),
            }
            .to_cursor()
        });
        self.save_managed_groups().await;
        store.set_sweep_cursor(saved.as_deref()).await?;
        if stopped_early {
            outcome.reason = Some(format!(
                "the sweep's time budget ran out after {} of {} workspaces; the next sweep resumes after {}",
                outcome.workspaces.len(),
                todo.len(),
                next_cursor.as_deref().unwrap_or("the start")
            ));
        } else {
            let digest = digest.unwrap_or_else(|| crate::act::merge_digest(None, &[]));
            self.log_managed_groups();
            self.finish_sweep(actor, outcome, &digest, now).await?;
        }
        Ok(())
    }

    /// The end of a whole sweep (or of a fanned-out run's last place): the digest, then the
    /// housekeeping. A failed prune leaves old records for the next sweep to remove, which is
    /// no reason to fail this one.
    pub(super) async fn finish_sweep(
        &self,
        actor: &Actor,
        outcome: &mut Outcome,
        digest: &crate::notify::Digest,
        now: time::OffsetDateTime,
    ) -> Result<(), Failure> {
        actor
            .send_digest(
                outcome,
                digest,
                &self.settings.policy,
                self.settings.mode,
                now,
            )
            .await?;
        if let Err(error) = actor.store.prune(now).await {
            tracing::warn!(message = "Pruning old state failed; the next sweep tries again.", error = %crate::text::chain(&error));
        }
        Ok(())
    }

    /// The workspaces a sweep of `scope` (`None`: every allowed subscription) checks, in id
    /// order after `after`: those listed, and those unlisted that still have open findings in
    /// scope (a deleted workspace's findings get resolved). A listing that fails is reported
    /// on `outcome` and fails the sweep: without the list there is nothing to resume.
    pub(super) async fn workspaces_to_sweep(
        &self,
        outcome: &mut Outcome,
        scope: Option<&[SubscriptionId]>,
        after: Option<&str>,
        listing_deadline: Instant,
    ) -> Result<Vec<Found>, Failure> {
        let listed = match resolve::query_workspaces(
            &self.observer,
            ALL_WORKSPACES,
            scope,
            listing_deadline,
        )
        .await
        {
            Ok(ids) => ids,
            Err(error) => {
                super::scan::add_listing_failure(outcome, scope, &error);
                return Err(Failure::Listing(error));
            }
        };
        let store = &self.actor().ok_or(Failure::NoStore)?.store;
        let open = store.open_findings().await?;
        let unlisted = unlisted_with_open_findings(&listed, &open, scope);
        let mut todo: Vec<Found> = listed
            .into_iter()
            .chain(unlisted)
            .filter(|found| {
                after.is_none_or(|after| found.id.as_str().to_ascii_lowercase().as_str() > after)
            })
            .collect();
        todo.sort_by_key(|found| found.id.as_str().to_ascii_lowercase());
        Ok(todo)
    }

    /// Checks `todo` (in order, a chunk of `SCAN_CONCURRENCY` at a time) until done or until
    /// `budget_end` has passed after at least one chunk, acting on each chunk and merging its
    /// findings into `digest`; returns how far it got.
    pub(super) async fn sweep_workspaces(
        &self,
        outcome: &mut Outcome,
        todo: &[Found],
        budget_end: Instant,
        digest: &mut Option<crate::notify::Digest>,
        now: time::OffsetDateTime,
    ) -> Result<SweepPass, Failure> {
        let actor = self.actor().ok_or(Failure::NoStore)?;
        let mut wiring = WiringReads::new(self.observer.arm(), &self.settings.wiring);
        // Each subscription's inventory is read once per pass (`observe::bulk`).
        let mut inventories = super::scan::Inventories::new(todo, budget_end);
        let mut last_done: Option<String> = None;
        let mut stopped_early = false;
        for chunk in todo.chunks(SCAN_CONCURRENCY) {
            // Every invocation checks at least one chunk, however long the listing took: one
            // that stopped before its first chunk would leave the cursor where it was, and
            // the sweep would never get further.
            if last_done.is_some() && Instant::now() >= budget_end {
                stopped_early = true;
                break;
            }
            // A new subscription's inventory first, within the sweep's budget: on a slow Azure
            // it can take longer than a chunk's budget, which must not be spent by then.
            self.read_inventories(&mut inventories, chunk, Instant::now() + EVENT_BUDGET)
                .await;
            // Each chunk gets the usual per-invocation read budget; the sweep's own budget only
            // decides whether another chunk is started.
            let chunk_deadline = Instant::now() + EVENT_BUDGET;
            let mut snapshots: Vec<Snapshot> = self
                .snapshots_in_bulk(&mut inventories, chunk, chunk_deadline, now)
                .await;
            if let Some(wiring) = &mut wiring {
                wiring.fill(&mut snapshots, chunk_deadline).await;
            }
            let first_finding = outcome.findings.len();
            let evaluated: Vec<Evaluated> = snapshots
                .iter()
                .map(|snapshot| {
                    let evaluation = self.evaluate(snapshot, None, now);
                    add_findings(outcome, &evaluation);
                    Evaluated {
                        evaluation,
                        snapshot,
                    }
                })
                .collect();
            let situation = Situation {
                origin: Origin::Check,
                policy: &self.settings.policy,
                mode: self.settings.mode,
                now,
                deadline: chunk_deadline,
                audit: true,
            };
            // Listed before acting: the chunk's audit record says which workspaces it read, so
            // that the trail (`history`) finds it and sees what the read no longer raises.
            outcome
                .workspaces
                .extend(chunk.iter().map(|found| found.id.to_string()));
            actor.act(outcome, &evaluated, &situation).await?;
            *digest = Some(crate::act::merge_digest(
                digest.take(),
                &outcome.findings[first_finding..],
            ));
            last_done = chunk
                .last()
                .map(|found| found.id.as_str().to_ascii_lowercase());
        }
        Ok(SweepPass {
            last_done,
            stopped_early,
        })
    }
}

/// How far one pass over a list of workspaces got.
#[derive(Debug)]
pub(super) struct SweepPass {
    /// The last workspace id done (lower-case), if any.
    pub(super) last_done: Option<String>,
    /// Whether the budget ran out before the list was done.
    pub(super) stopped_early: bool,
}

/// Where a sweep stopped and what it found so far, kept in the store's sweep cursor so that
/// the digest of a sweep resumed over several invocations covers all of it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SweepProgress {
    /// The last workspace id done (lower-case); the next sweep starts after it.
    after: String,
    digest: Option<crate::notify::Digest>,
}

impl SweepProgress {
    fn from_cursor(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_else(|_| Self {
            after: text.to_owned(),
            digest: None,
        })
    }

    fn to_cursor(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.after.clone())
    }
}

/// The workspaces with open findings in `allowed` subscriptions that the listing does not
/// name. The sweep reads them through ARM too: a workspace that was deleted is no longer listed,
/// and only the 404 of its own read closes its findings (the listing is only discovery,
/// azure-notes Trap T19).
pub(super) fn unlisted_with_open_findings(
    listed: &[Found],
    open: &[(FindingKey, Versioned<FindingRecord>)],
    allowed: Option<&[SubscriptionId]>,
) -> Vec<Found> {
    let mut known: std::collections::BTreeSet<String> = listed
        .iter()
        .map(|found| found.id.as_str().to_ascii_lowercase())
        .collect();
    open.iter()
        .filter_map(|(key, _)| ArmResourceId::parse(&key.workspace).ok())
        .filter(|id| allowed.is_none_or(|allowed| allowed.contains(id.subscription())))
        .filter(|id| known.insert(id.as_str().to_ascii_lowercase()))
        .map(|id| Found { id, hint: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_also_reads_unlisted_workspaces_with_open_findings_in_scope() {
        use crate::outcome::{FindingState, Severity};
        use crate::state::Version;
        let in_scope = "00000000-0000-0000-0000-000000000001";
        let elsewhere = "00000000-0000-0000-0000-000000000002";
        let ws = |subscription: &str, name: &str| {
            format!(
                "/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{name}"
            )
        };
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let open = |workspace: String, rule: &str| {
            let key = FindingKey {
                workspace,
                rule: rule.to_owned(),
                resource: "/subscriptions/s/providers/Microsoft.KeyVault/vaults/kv".to_owned(),
            };
            let record = FindingRecord {
                state: FindingState::Open,
                severity: Severity::High,
                first_seen: now,
                last_seen: now,
                last_notified: Some(now),
                observed: String::new(),
            };
            (
                key,
                Versioned {
                    value: record,
                    version: Version::new("1"),
                },
            )
        };
        let listed = [Found {
            id: ArmResourceId::parse(&ws(in_scope, "listed")).unwrap(),
            hint: None,
        }];
        let stored = [
            open(ws(in_scope, "LISTED"), "vault.purge-protection"),
            open(ws(in_scope, "gone"), "vault.purge-protection"),
            open(ws(in_scope, "gone"), "key.expiry"),
            open(ws(elsewhere, "far"), "key.expiry"),
            open("not an ARM id".to_owned(), "key.expiry"),
        ];
        let names = |allowed: Option<&[SubscriptionId]>| -> Vec<String> {
            unlisted_with_open_findings(&listed, &stored, allowed)
                .iter()
                .map(|found| found.id.name().to_owned())
                .collect()
        };
        let allowed = [crate::ids::SubscriptionId::parse(in_scope).unwrap()];
        assert_eq!(names(Some(&allowed)), ["gone"]);
        assert_eq!(names(None), ["gone", "far"]);
    }
}
