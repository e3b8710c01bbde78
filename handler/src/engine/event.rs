//! An Event Grid event, from the binding's value to an Outcome, at most once across
//! instances.

use serde_json::Value;
use tokio::time::Instant;

use super::{Engine, Failure, Look, Unfinished};
use crate::intake::{Classified, RawEvent, ReadEvent, Rejection, Trigger, classify, one_caller};
use crate::outcome::{Disposition, EventRef, Outcome};
use crate::state::EventStart;

/// How long an instance holds an event it is working on; past it, a redelivery takes over.
const EVENT_LEASE: time::Duration = time::Duration::seconds(60);

impl Engine {
    /// Handles one event (the trigger binding's value) from start to finish.
    pub async fn on_event(&self, value: Value, deadline: Instant) -> Result<Outcome, Unfinished> {
        let event = match RawEvent::from_binding(value) {
            Ok(event) => event,
            Err(rejection) => return Ok(rejected(EventRef::default(), rejection)),
        };
        let mut classified = classify(&event, &self.settings.intake);
        if classified.as_ref().is_err_and(Rejection::awaits_discovery) {
            // The management groups' subscriptions were never listed: list them now, and if
            // that fails too, have the event delivered again rather than refuse it.
            self.discover_subscriptions(deadline).await;
            classified = classify(&event, &self.settings.intake);
        }
        let event_ref = EventRef::from_event(Some(event.id), Some(event.event_type), event.subject);
        match classified {
            Err(rejection) if rejection.awaits_discovery() => {
                let outcome = Outcome::new(event_ref, Disposition::Evaluated, None);
                self.settle(outcome, Failure::ScopeNotYetKnown)
            }
            Err(rejection) => Ok(rejected(event_ref, rejection)),
            Ok(classified) => self.on_classified(event_ref, classified, deadline).await,
        }
    }

    /// Handles an event intake's typed read classified straight from the request body
    /// ([`crate::intake::read_event`]): the same answers as [`Engine::on_event`] gives.
    pub async fn on_read_event(
        &self,
        event: ReadEvent,
        deadline: Instant,
    ) -> Result<Outcome, Unfinished> {
        let event_ref = EventRef::from_event(Some(event.id), Some(event.event_type), event.subject);
        self.on_classified(event_ref, event.classified, deadline)
            .await
    }

    async fn on_classified(
        &self,
        event_ref: EventRef,
        classified: Classified,
        deadline: Instant,
    ) -> Result<Outcome, Unfinished> {
        match classified {
            Classified::Ignored(reason) => {
                Ok(Outcome::new(event_ref, Disposition::Ignored, Some(reason)))
            }
            // Boxed: the relevant path is a large future, and moving it with every ignored
            // event's future was a measurable share of answering one.
            Classified::Relevant(trigger) => {
                let triggers = std::slice::from_ref(&*trigger);
                Box::pin(self.once(event_ref, &trigger.event_id, triggers, deadline)).await
            }
        }
    }

    /// Handles a relevant event (or an audit-log batch, `id` naming it) at most once across
    /// instances: a finished id answers `duplicate`; one another instance is working on right
    /// now fails (503) so that it is delivered again later, when it is either finished or
    /// abandoned (a crashed instance's lease runs out).
    pub(super) async fn once(
        &self,
        event: EventRef,
        id: &str,
        triggers: &[Trigger],
        deadline: Instant,
    ) -> Result<Outcome, Unfinished> {
        // The loop guard compares the caller with cmk-guard's own id: one caller for all of it.
        let caller = one_caller(triggers.iter().map(|t| t.caller_object_id.as_deref()));
        let look = Look::Event { caller };
        let Some(actor) = self.actor() else {
            return self.reconcile_all(event, triggers, deadline, look).await;
        };
        let store = &actor.store;
        let skeleton = || Outcome::new(event.clone(), Disposition::Evaluated, None);
        // One owner per invocation: concurrent deliveries to the same instance must not
        // "renew" each other's lease.
        let owner = actor.owner();
        let now = time::OffsetDateTime::now_utc();
        match store.begin_event(id, &owner, now, EVENT_LEASE).await {
            Ok(EventStart::Leased) => {}
            Ok(EventStart::Handled) => {
                return Ok(Outcome::new(
                    event.clone(),
                    Disposition::Duplicate,
                    // The id as reasons may show it; the store gets it as it came.
                    Some(format!(
                        "event {} was already handled",
                        crate::text::field(id)
                    )),
                ));
            }
            Ok(EventStart::Busy) => {
                let event = crate::text::field(id).into_owned();
                return self.settle(skeleton(), Failure::Busy { event });
            }
            Err(error) => return self.settle(skeleton(), Failure::State(error)),
        }
        let result = self.reconcile_all(event, triggers, deadline, look).await;
        self.save_managed_groups().await;
        let caller = crate::history::Caller::of(triggers);
        let audit = result
            .as_ref()
            .ok()
            .map(|outcome| crate::act::audit_record(outcome, caller.as_ref()).to_json())
            .transpose();
        let now = time::OffsetDateTime::now_utc();
        let ended = match audit {
            Ok(audit) => {
                store
                    .end_event(id, &owner, result.is_ok(), now, audit.as_deref())
                    .await
            }
            // Unreachable (see `to_json`); the event is released unclaimed, to come again.
            Err(error) => store
                .end_event(id, &owner, false, now, None)
                .await
                .and(Err(error)),
        };
        match (result, ended) {
            (Ok(outcome), Err(error)) => self.settle(outcome, Failure::State(error)),
            (result, _) => result,
        }
    }
}

fn rejected(event: EventRef, rejection: Rejection) -> Outcome {
    Outcome::new(event, Disposition::Rejected, Some(rejection.to_string()))
}
