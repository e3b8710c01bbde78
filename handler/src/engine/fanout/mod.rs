//! The sweep fanned out over the Storage queue (`CMKGUARD_SWEEP_QUEUE`), so that the Functions
//! platform spreads a tenant's subscriptions over instances:
//!
//! - the Sweep function reports what the last run left in the poison queue, then enqueues one
//!   message per subscription of a new run (`{run, subscription, index, of}`);
//! - `SweepSubscription` sweeps one subscription with the sweep's own loop; when its budget
//!   runs out it enqueues its continuation (`after`) instead of moving the global cursor;
//! - each finished subscription is claimed in the state store (an insert that fails when the
//!   claim exists, in both backends); the invocation that finds every place of the run claimed
//!   claims the run's digest too, and only the winner of that claim sends the digest, built
//!   from the store's open findings, not from what one invocation saw.

mod share;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{EVENT_BUDGET, Engine, Failure};
use crate::catalogue::RuleId;
use crate::ids::SubscriptionId;
use crate::outcome::{Finding, FindingState, Outcome, Severity};
use crate::queue::{MAX_SUBSCRIPTIONS, QueueError, SweepMessage, SweepQueue};
use crate::resolve::{self, ALL_WORKSPACES};

/// How many messages are sent at once.
const SEND_CONCURRENCY: usize = 16;

impl Engine {
    /// The sweep's queue, when one is configured and the engine acts.
    pub(super) fn sweep_queue(&self) -> Result<Option<SweepQueue>, Failure> {
        let (Some(settings), Some(actor)) = (&self.settings.sweep_queue, self.actor()) else {
            return Ok(None);
        };
        let azure = &actor.identity;
        Ok(Some(SweepQueue::open(
            settings,
            &azure.transport,
            azure.credential.clone(),
        )?))
    }

    /// The Sweep function's work with a queue: report the poison queue, then enqueue one
    /// message per subscription in scope for a new run.
    pub(super) async fn fan_out(
        &self,
        outcome: &mut Outcome,
        queue: &SweepQueue,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + EVENT_BUDGET;
        self.report_poisoned(outcome, queue).await?;
        let failures = self.discover_subscriptions(deadline).await;
        super::discover::add_discovery_failures(outcome, &failures);
        let subscriptions = self.fan_out_scope(outcome, deadline).await?;
        let of = u32::try_from(subscriptions.len())
            .ok()
            .filter(|of| *of <= MAX_SUBSCRIPTIONS)
            .ok_or(Failure::Queue(QueueError {
                transient: false,
                message: format!(
                    "{} subscriptions are more than one run fans out to ({MAX_SUBSCRIPTIONS})",
                    subscriptions.len()
                ),
            }))?;
        let run = uuid::Uuid::new_v4().to_string();
        let messages = subscriptions
            .into_iter()
            .zip(0..)
            .map(|(subscription, index)| SweepMessage {
                run: run.clone(),
                subscription,
                after: None,
                index,
                of,
            });
        let sent: Vec<Result<(), QueueError>> = futures_util::stream::iter(messages)
            .map(|message| async move { queue.send(&message).await })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        sent.into_iter().collect::<Result<(), _>>()?;
        self.save_managed_groups().await;
        outcome.reason = Some(format!(
            "fanned out: {of} subscriptions enqueued as run {run}; SweepSubscription sweeps each"
        ));
        Ok(())
    }

    /// The subscriptions of a run: the allowlist, or when every readable subscription is in
    /// scope, those the listing finds and those with open findings.
    async fn fan_out_scope(
        &self,
        outcome: &mut Outcome,
        deadline: Instant,
    ) -> Result<Vec<SubscriptionId>, Failure> {
        if let Some(allowed) = self.settings.intake.subscriptions.snapshot() {
            return Ok(allowed);
        }
        let listed =
            match resolve::query_workspaces(&self.observer, ALL_WORKSPACES, None, deadline).await {
                Ok(listed) => listed,
                Err(error) => {
                    super::scan::add_listing_failure(outcome, None, &error);
                    return Err(Failure::Listing(error));
                }
            };
        let store = &self.actor().ok_or(Failure::NoStore)?.store;
        let open = store.open_findings().await?;
        let mut found: std::collections::BTreeSet<SubscriptionId> = listed
            .iter()
            .map(|found| found.id.subscription().clone())
            .collect();
        found.extend(
            open.iter()
                .filter_map(|(key, _)| crate::ids::ArmResourceId::parse(&key.workspace).ok())
                .map(|id| id.subscription().clone()),
        );
        Ok(found.into_iter().collect())
    }

    /// Reports each message the host moved to the poison queue as a `guard.visibility` finding,
    /// then removes it: the run it belonged to is over, and this sweep enqueues the
    /// subscription again, so a subscription that still fails is reported again next time.
    async fn report_poisoned(
        &self,
        outcome: &mut Outcome,
        queue: &SweepQueue,
    ) -> Result<(), Failure> {
        let poisoned = queue.poisoned().await?;
        for item in &poisoned {
            match &item.message {
                Ok(message) => outcome.findings.push(poisoned_finding(message)),
                Err(refusal) => tracing::warn!(
                    message = "The sweep's poison queue held a message that is not a sweep message; removed.",
                    reason = %refusal
                ),
            }
        }
        for item in &poisoned {
            queue.remove(item).await?;
        }
        Ok(())
    }
}

/// The `guard.visibility` finding of a subscription whose sweep message was poisoned.
fn poisoned_finding(message: &SweepMessage) -> Finding {
    Finding {
        rule: RuleId::GuardVisibility,
        resource: format!("/subscriptions/{}", message.subscription),
        workspace: String::new(),
        severity: Severity::High,
        state: FindingState::Open,
        observed: format!(
            "the sweep of this subscription (run {}) failed on every delivery and its message \
             went to the poison queue: its workspaces were not checked by that sweep",
            message.run
        ),
        expected: "every subscription swept; see the SweepSubscription invocations' logs for \
                   why it failed (Azure access, throttling, the state store), fix it, and the \
                   next sweep checks the subscription again"
            .to_owned(),
    }
}
