//! `SweepSubscription`: one subscription's share of a fanned-out sweep, the sweep's own loop
//! over its workspaces, and the end of the run (the digest, sent once).

use serde_json::Value;
use tokio::time::Instant;

use super::super::{EVENT_BUDGET, Engine, Failure, Unfinished};
use crate::act::Actor;
use crate::catalogue::RuleId;
use crate::ids::{Membership, SubscriptionId};
use crate::outcome::{Disposition, EventRef, Finding, Outcome};
use crate::queue::SweepMessage;

/// The `event.type` of `SweepSubscription` outcomes.
pub const QUEUE_EVENT_TYPE: &str = "Microsoft.Azure.Functions.QueueTrigger";

/// The claim that a run's place `index` is done.
fn done_claim(run: &str, index: u32) -> String {
    format!("sweep-run|{run}|done|{index}")
}

/// The claim of a run's digest: exactly one invocation wins it.
fn digest_claim(run: &str) -> String {
    format!("sweep-run|{run}|digest")
}

impl Engine {
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
                let queue = self.sweep_queue()?.ok_or_else(|| {
                    Failure::Queue(crate::queue::QueueError {
                        transient: false,
                        message: format!(
                            "{} is not set, so the rest of the subscription cannot be enqueued",
                            crate::queue::QUEUE_VARIABLE
                        ),
                    })
                })?;
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
        self.finish_sweep(actor, outcome, &digest, now).await
    }

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
        let todo = self
            .workspaces_to_sweep(
                outcome,
                Some(scope),
                message.after.as_deref(),
                listing_deadline,
            )
            .await?;
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
