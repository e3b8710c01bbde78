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

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use super::{EVENT_BUDGET, Engine, Failure, Unfinished};
use crate::act::Actor;
use crate::catalogue::RuleId;
use crate::ids::{Membership, SubscriptionId};
use crate::outcome::{Disposition, EventRef, Finding, FindingState, Outcome, Severity};
use crate::queue::{MAX_SUBSCRIPTIONS, QueueError, SweepMessage, SweepQueue};
use crate::resolve::{self, ALL_WORKSPACES};

/// The `event.type` of `SweepSubscription` outcomes.
pub const QUEUE_EVENT_TYPE: &str = "Microsoft.Azure.Functions.QueueTrigger";
/// How many messages are sent at once.
const SEND_CONCURRENCY: usize = 16;

/// The claim that a run's place `index` is done.
fn done_claim(run: &str, index: u32) -> String {
    format!("sweep-run|{run}|done|{index}")
}

/// The claim of a run's digest: exactly one invocation wins it.
fn digest_claim(run: &str) -> String {
    format!("sweep-run|{run}|digest")
}

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

    /// `SweepSubscription`: one subscription's share of a fanned-out sweep. A message that is
    /// not a sweep message, or names a subscription out of scope, is refused (answered, so that
    /// it is not retried); a failure that a retry can help fails the invocation so that the
    /// host delivers the message again (and after `maxDequeueCount`, to the poison queue).
    pub async fn sweep_subscription(
        &self,
        value: Value,
        invocation_id: &str,
    ) -> Result<Outcome, Unfinished> {
        let event = |subject: String| {
            EventRef::from_event(
                Some(invocation_id.to_owned()),
                Some(QUEUE_EVENT_TYPE.to_owned()),
                Some(subject),
            )
        };
        let message = match crate::queue::decode_binding(value) {
            Ok(message) => message,
            Err(refusal) => {
                return Ok(Outcome::new(
                    event("SweepSubscription".to_owned()),
                    Disposition::Rejected,
                    Some(refusal.to_string()),
                ));
            }
        };
        let subject = format!("/subscriptions/{}", message.subscription);
        let mut outcome = Outcome::new(event(subject.clone()), Disposition::Evaluated, None);
        match self.membership(&message.subscription).await {
            Membership::In => {}
            Membership::NotYetKnown => return self.settle(outcome, Failure::ScopeNotYetKnown),
            Membership::Out => {
                return Ok(Outcome::new(
                    event(subject),
                    Disposition::Rejected,
                    Some(format!(
                        "subscription {} is not in scope (CMKGUARD_SUBSCRIPTIONS, \
                         CMKGUARD_MANAGEMENT_GROUPS)",
                        message.subscription
                    )),
                ));
            }
        }
        match self.sweep_share(&mut outcome, &message).await {
            Ok(()) => Ok(outcome),
            Err(failure) => self.settle(outcome, failure),
        }
    }

    /// Whether the subscription is in scope, listing the management groups first when they
    /// never were.
    async fn membership(&self, subscription: &SubscriptionId) -> Membership {
        let allowlist = &self.settings.intake.subscriptions;
        if allowlist.membership(subscription) == Membership::NotYetKnown {
            self.discover_subscriptions(Instant::now() + EVENT_BUDGET)
                .await;
        }
        allowlist.membership(subscription)
    }

    /// Sweeps the message's subscription from where it says, then either enqueues the
    /// continuation or marks the place done and finishes the run when it was the last.
    async fn sweep_share(
        &self,
        outcome: &mut Outcome,
        message: &SweepMessage,
    ) -> Result<(), Failure> {
        let actor = self.actor().ok_or(Failure::NoStore)?;
        let now = time::OffsetDateTime::now_utc();
        let done = done_claim(&message.run, message.index);
        // A message delivered again after its work was done only finishes the run.
        if !actor.store.event_claimed(&done).await? {
            let budget_end = Instant::now() + self.settings.sweep_budget;
            let stopped_after = self
                .sweep_one_subscription(outcome, message, budget_end)
                .await?;
            if let Some(after) = stopped_after {
                let queue = self.sweep_queue()?.ok_or(Failure::NoStore)?;
                let next = SweepMessage {
                    after: Some(after.clone()),
                    ..message.clone()
                };
                queue.send(&next).await?;
                outcome.reason = Some(format!(
                    "the budget ran out after {} workspaces; the rest of the subscription \
                     follows in a new message, after {after}",
                    outcome.workspaces.len()
                ));
                return Ok(());
            }
            actor.store.claim_event(&done, now).await?;
        }
        self.finish_run(outcome, actor, message, now).await
    }

    /// Sends the run's digest when every place of the run is done and this invocation wins
    /// the digest's claim; otherwise does nothing.
    async fn finish_run(
        &self,
        outcome: &mut Outcome,
        actor: &Actor,
        message: &SweepMessage,
        now: time::OffsetDateTime,
    ) -> Result<(), Failure> {
        for index in 0..message.of {
            if !actor
                .store
                .event_claimed(&done_claim(&message.run, index))
                .await?
            {
                return Ok(());
            }
        }
        if !actor
            .store
            .claim_event(&digest_claim(&message.run), now)
            .await?
        {
            return Ok(());
        }
        let open: Vec<Finding> = actor
            .store
            .open_findings()
            .await?
            .into_iter()
            .filter_map(|(key, record)| {
                Some(Finding {
                    rule: RuleId::parse(&key.rule)?,
                    resource: key.resource,
                    workspace: key.workspace,
                    severity: record.value.severity,
                    state: record.value.state,
                    observed: record.value.observed,
                    expected: String::new(),
                })
            })
            .collect();
        let digest = crate::act::merge_digest(None, &open);
        actor
            .send_digest(
                outcome,
                &digest,
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

impl Engine {
    /// Sweeps the subscription's workspaces (after the message's `after`, in id order) with
    /// the sweep's loop; returns where it stopped when the budget ran out first.
    async fn sweep_one_subscription(
        &self,
        outcome: &mut Outcome,
        message: &SweepMessage,
        budget_end: Instant,
    ) -> Result<Option<String>, Failure> {
        let listing_deadline = budget_end.max(Instant::now() + EVENT_BUDGET);
        let scope = std::slice::from_ref(&message.subscription);
        let listed = match resolve::query_workspaces(
            &self.observer,
            ALL_WORKSPACES,
            Some(scope),
            listing_deadline,
        )
        .await
        {
            Ok(listed) => listed,
            Err(error) => {
                super::scan::add_listing_failure(outcome, Some(scope), &error);
                return Err(Failure::Listing(error));
            }
        };
        let store = &self.actor().ok_or(Failure::NoStore)?.store;
        let open = store.open_findings().await?;
        let unlisted = super::sweep::unlisted_with_open_findings(&listed, &open, Some(scope));
        let mut todo: Vec<_> = listed
            .into_iter()
            .chain(unlisted)
            .filter(|found| {
                message
                    .after
                    .as_deref()
                    .is_none_or(|after| found.id.as_str().to_ascii_lowercase().as_str() > after)
            })
            .collect();
        todo.sort_by_key(|found| found.id.as_str().to_ascii_lowercase());
        let now = time::OffsetDateTime::now_utc();
        let mut digest = None;
        let pass = self
            .sweep_workspaces(outcome, &todo, budget_end, &mut digest, now)
            .await?;
        Ok(if pass.stopped_early {
            pass.last_done.or_else(|| message.after.clone())
        } else {
            None
        })
    }
}
