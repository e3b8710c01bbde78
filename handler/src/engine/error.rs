//! The one error policy (as in kube-rs). Every way an invocation can fall short of finishing
//! is a [`Failure`] carrying its cause, and [`error_policy`] alone decides, per kind, what
//! happens next:
//!
//! - [`Verdict::Redeliver`]: the invocation fails (HTTP 503) so that Event Grid delivers the
//!   event again, the timer's next tick resumes, or an HTTP caller retries. Nothing is lost.
//! - [`Verdict::Acknowledge`]: the invocation answers 200; its Outcome already holds the
//!   `guard.visibility` finding that says what could not be seen and what to grant, because
//!   asking again would get the same answer.
//!
//! A failure that was acknowledged is not an error for the caller; one that is redelivered
//! travels as [`Unfinished`] with the Outcome so far (never an empty, compliant-looking list).

use crate::azure::AzureError;
use crate::azure::credential::NO_CREDENTIAL;
use crate::outcome::Outcome;
use crate::state::StateError;

/// Why an invocation could not finish its work.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Another instance holds the event's lease right now.
    #[error("event {event} is being handled by another instance")]
    Busy {
        /// The event id, as reasons may show it.
        event: String,
    },
    /// The state store failed: claims, finding state, attempts, outbox or audit.
    #[error(transparent)]
    State(#[from] StateError),
    /// Resource Graph could not say which workspaces an event affects.
    #[error("resolving the workspaces failed")]
    Resolve(#[source] AzureError),
    /// Reads of workspaces' CMK chains did not succeed in time (each is a `guard.visibility`
    /// finding in the Outcome too).
    #[error("Azure reads did not succeed in time: {}", .0.join("; "))]
    Reads(Vec<String>),
    /// The sweep could not list the workspaces.
    #[error("listing the workspaces failed")]
    Listing(#[source] AzureError),
    /// The sweep's queue (`CMKGUARD_SWEEP_QUEUE`) could not be read or written.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// The sweep was asked of an engine without the state store (read-only use).
    #[error("the sweep needs the state store")]
    NoStore,
    /// An event names a subscription outside `CMKGUARD_SUBSCRIPTIONS` while the subscriptions
    /// under `CMKGUARD_MANAGEMENT_GROUPS` have never been listed: it may be in scope.
    #[error(
        "the subscriptions under CMKGUARD_MANAGEMENT_GROUPS are not known yet (listing them failed)"
    )]
    ScopeNotYetKnown,
    /// Azure could not be read because there is no credential at all: every read's failure
    /// says the same, so the reason says that once. The failure it stands for is kept.
    #[error("{NO_CREDENTIAL}")]
    NoCredential(Box<Failure>),
}

/// What happens to an invocation that fell short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fail it (503): it is delivered, ticked or asked again.
    Redeliver,
    /// Answer it (200): the Outcome's `guard.visibility` finding says what was not seen.
    Acknowledge,
}

/// The error policy: one arm per kind of failure.
pub fn error_policy(failure: &Failure) -> Verdict {
    match failure {
        // Redelivered later, the event is either finished (`duplicate`) or its lease ran out.
        Failure::Busy { .. } => Verdict::Redeliver,
        // Without the store, nothing can be recorded once: try again rather than lose it.
        Failure::State(_) => Verdict::Redeliver,
        // Throttling, 5xx and timeouts pass; 401/403/404 do not, and the finding says so.
        Failure::Resolve(error) if error.is_transient() => Verdict::Redeliver,
        Failure::Resolve(_) => Verdict::Acknowledge,
        // Only transient read failures are collected here; permanent ones are findings.
        Failure::Reads(_) => Verdict::Redeliver,
        // A sweep that could not list must not look finished: its next tick tries again.
        Failure::Listing(_) => Verdict::Redeliver,
        Failure::NoStore => Verdict::Redeliver,
        // Not enqueued is not swept: the timer's next tick, or the message's next delivery
        // (then the poison queue, which the next sweep reports), tries again.
        Failure::Queue(_) => Verdict::Redeliver,
        // Refusing it would drop an event that is most likely in scope: ask for it again, by
        // when the listing has worked.
        Failure::ScopeNotYetKnown => Verdict::Redeliver,
        Failure::NoCredential(failure) => error_policy(failure),
    }
}

/// An invocation that must fail so that it is delivered again: the Outcome says what was seen,
/// the failure why it is not finished.
#[derive(Debug)]
pub struct Unfinished {
    /// Boxed: an Outcome is large, and this travels in every invocation's `Result`.
    pub outcome: Box<Outcome>,
    pub failure: Failure,
}

impl Unfinished {
    /// The failure and its causes, as one line.
    pub fn reason(&self) -> String {
        crate::text::chain(&self.failure)
    }
}

/// Applies the error policy: the Outcome when the failure is acknowledged, else
/// [`Unfinished`]. `no_credential` says that signing in found no credential at all.
pub fn settle(
    outcome: Outcome,
    failure: Failure,
    no_credential: bool,
) -> Result<Outcome, Unfinished> {
    match error_policy(&failure) {
        Verdict::Acknowledge => Ok(outcome),
        Verdict::Redeliver => {
            let failure = match failure {
                Failure::Resolve(_)
                | Failure::Reads(_)
                | Failure::Listing(_)
                | Failure::ScopeNotYetKnown
                    if no_credential =>
                {
                    Failure::NoCredential(Box::new(failure))
                }
                failure => failure,
            };
            Err(Unfinished {
                outcome: Box::new(outcome),
                failure,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::ErrorKind;
    use crate::outcome::{Disposition, EventRef};

    fn azure(kind: ErrorKind, status: Option<u16>) -> AzureError {
        let mut error = AzureError::transport(
            "POST https://management.azure.com/providers/Microsoft.ResourceGraph/resources".into(),
            kind,
            "failed",
        );
        error.status = status.map(azure_core::http::StatusCode::from);
        error
    }

    fn outcome() -> Outcome {
        Outcome::new(EventRef::default(), Disposition::Evaluated, None)
    }

    #[test]
    fn a_busy_event_is_redelivered() {
        let busy = Failure::Busy { event: "e1".into() };
        assert_eq!(error_policy(&busy), Verdict::Redeliver);
        assert_eq!(
            busy.to_string(),
            "event e1 is being handled by another instance"
        );
    }

    #[test]
    fn a_state_store_failure_is_redelivered() {
        let failure = Failure::State(StateError::new(
            crate::state::StateErrorKind::Transient,
            "blob: HTTP 503",
        ));
        assert_eq!(error_policy(&failure), Verdict::Redeliver);
    }

    #[test]
    fn resolving_is_redelivered_when_transient_and_acknowledged_when_not() {
        let throttled = Failure::Resolve(azure(ErrorKind::Transient, Some(429)));
        assert_eq!(error_policy(&throttled), Verdict::Redeliver);
        let forbidden = Failure::Resolve(azure(ErrorKind::Permanent, Some(403)));
        assert_eq!(error_policy(&forbidden), Verdict::Acknowledge);
        let refused = Failure::Resolve(azure(ErrorKind::Refused, None));
        assert_eq!(error_policy(&refused), Verdict::Acknowledge);
    }

    #[test]
    fn failed_reads_listing_and_a_missing_store_are_redelivered() {
        assert_eq!(
            error_policy(&Failure::Reads(vec!["workspace ws1: HTTP 503".into()])),
            Verdict::Redeliver
        );
        let forbidden = Failure::Listing(azure(ErrorKind::Permanent, Some(403)));
        assert_eq!(error_policy(&forbidden), Verdict::Redeliver);
        assert_eq!(error_policy(&Failure::NoStore), Verdict::Redeliver);
    }

    #[test]
    fn an_event_from_a_subscription_not_yet_known_is_redelivered() {
        let unfinished = settle(outcome(), Failure::ScopeNotYetKnown, false).unwrap_err();
        assert_eq!(error_policy(&unfinished.failure), Verdict::Redeliver);
        assert!(unfinished.reason().contains("CMKGUARD_MANAGEMENT_GROUPS"));
    }

    #[test]
    fn no_credential_follows_the_failure_it_stands_for_and_says_only_that() {
        let inner = Failure::Resolve(azure(ErrorKind::Permanent, Some(401)));
        let failure = Failure::NoCredential(Box::new(inner));
        assert_eq!(error_policy(&failure), Verdict::Acknowledge);
        assert_eq!(crate::text::chain(&failure), NO_CREDENTIAL);
    }

    #[test]
    fn settling_keeps_the_outcome_and_names_the_cause_chain() {
        let acknowledged = settle(
            outcome(),
            Failure::Resolve(azure(ErrorKind::Permanent, Some(403))),
            false,
        );
        assert!(acknowledged.is_ok());
        let unfinished = settle(
            outcome(),
            Failure::Resolve(azure(ErrorKind::Transient, Some(503))),
            false,
        )
        .unwrap_err();
        assert!(
            unfinished
                .reason()
                .starts_with("resolving the workspaces failed: POST https://management.azure.com/"),
            "{}",
            unfinished.reason()
        );
        let no_credential = settle(outcome(), Failure::Reads(vec!["a".into()]), true).unwrap_err();
        assert_eq!(no_credential.reason(), NO_CREDENTIAL);
        let store = settle(outcome(), Failure::NoStore, true).unwrap_err();
        assert_eq!(store.reason(), "the sweep needs the state store");
    }
}
