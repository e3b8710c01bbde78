//! The engine: one entry point per kind of work, each running the same pipeline — intake →
//! resolve → observe → evaluate → plan → act — to an [`Outcome`]:
//!
//! - [`event`]: an Event Grid event, at most once across instances;
//! - [`check`]: an on-demand check (`POST /api/evaluate`, `cmk-guard evaluate`);
//! - [`sweep`]: the timer's full re-check, resumable, with one digest;
//! - [`scan`]: the read-only `cmk-guard scan` of whole subscriptions;
//! - [`audit`]: a batch of Key Vault audit-log records, at most once across instances.
//!
//! Whatever falls short goes through the one error policy in [`error`]: redeliver, or
//! acknowledge with a `guard.visibility` finding. Nothing here decides that inline.

mod audit;
mod check;
mod discover;
pub mod error;
mod event;
mod fanout;
mod scan;
mod sweep;

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::act::{Actor, Evaluated, Origin, Situation};
use crate::azure::Azure;
use crate::azure::credential::SignInStatus;
use crate::intake::Trigger;
use crate::observe::{DEFAULT_CACHE_TTL, Observer, read_failure, transient_failures};
use crate::outcome::{ActionKind, ActionResult, Disposition, EventRef, Exempted, Outcome};
use crate::rules::{self, Context};
use crate::settings::Settings;
use crate::snapshot::Snapshot;
use crate::state::StateError;

pub use discover::{DiscoveryFailure, discover};
pub use error::{Failure, Unfinished};
pub use scan::{SCAN_CONCURRENCY, ScanObserver, ScanProgress};

/// Event Grid waits 30 s for an answer; leave room for the host around our work.
pub const EVENT_BUDGET: Duration = Duration::from_secs(25);

/// What the engine may do besides reading.
#[derive(Debug)]
pub enum Role {
    /// Read and report only: the `evaluate` and `scan` commands.
    ReadOnly,
    /// Act on what it finds: finding state, alerts and remediation, through the actor.
    Acting(Box<Actor>),
}

/// Why the engine looks at a trigger, which decides whether an acting engine acts on it and
/// who writes the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look<'a> {
    /// A read-only on-demand check.
    Check,
    /// An on-demand check that acts (`Evaluate` with `apply`) and appends its own audit
    /// record. cmk-guard starts it, so it is never its own write coming back.
    Apply,
    /// An event: acts; the audit record goes with the event's claim (one store write). The
    /// loop guard compares the event's caller with cmk-guard's own id.
    Event { caller: Option<&'a str> },
}

/// Why the engine could not start acting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("CMKGUARD_STATE")]
    State(#[source] StateError),
    #[error(transparent)]
    Notify(#[from] crate::settings::ConfigError),
}

/// Shared, immutable state of the running handler.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    observer: Observer,
    role: Role,
    /// Whether signing in found no credential: failures then say so instead of listing reads.
    sign_in: SignInStatus,
}

impl Engine {
    /// The read-only engine, from validated settings and the Azure clients.
    pub fn new(settings: Settings, azure: Azure) -> Self {
        Self::with_role(settings, azure, Role::ReadOnly)
    }

    /// The engine that acts: opens the state store, configures the alert channels and
    /// prepares the loop guard.
    pub async fn acting(settings: Settings, azure: Azure) -> Result<Self, StartError> {
        let store = crate::state::open(&settings.state, &azure.transport, &azure.credential)
            .await
            .map_err(StartError::State)?;
        let notifier = crate::notify::Notifier::new(
            &settings.notify,
            azure.http.clone(),
            &settings.transport,
            Some(azure.credential.clone()),
        )?;
        let actor = Actor::new(store, notifier, &azure, &settings);
        Ok(Self::with_role(
            settings,
            azure,
            Role::Acting(Box::new(actor)),
        ))
    }

    fn with_role(settings: Settings, azure: Azure, role: Role) -> Self {
        let sign_in = azure.sign_in.clone();
        let observer = Observer::new(azure.arm, azure.keys, DEFAULT_CACHE_TTL);
        Self {
            settings,
            observer,
            role,
            sign_in,
        }
    }

    /// True when the last attempt to sign in to Azure found no credential at all: the CLI then
    /// reports a configuration error instead of the reads that could not be made.
    pub fn no_credential(&self) -> bool {
        self.sign_in.no_credential()
    }

    /// The configuration in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The observer (for its cache statistics).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The actor, when the engine acts.
    fn actor(&self) -> Option<&Actor> {
        match &self.role {
            Role::ReadOnly => None,
            Role::Acting(actor) => Some(actor),
        }
    }

    /// Applies the error policy to a failure ([`error::settle`]).
    fn settle(&self, outcome: Outcome, failure: Failure) -> Result<Outcome, Unfinished> {
        error::settle(outcome, failure, self.no_credential())
    }

    /// Re-reads everything the trigger affects and checks it. The trigger is only a hint.
    /// An acting engine carries the plan out (alerts, state, remediation) unless the look is
    /// a read-only check.
    pub async fn reconcile(
        &self,
        event: EventRef,
        trigger: &Trigger,
        deadline: Instant,
        look: Look<'_>,
    ) -> Result<Outcome, Unfinished> {
        self.reconcile_all(event, std::slice::from_ref(trigger), deadline, look)
            .await
    }

    /// [`Engine::reconcile`] for several triggers at once (an audit-log batch names several
    /// vaults): each workspace they affect is read and evaluated once, with the first trigger
    /// that named it.
    pub async fn reconcile_all(
        &self,
        event: EventRef,
        triggers: &[Trigger],
        deadline: Instant,
        look: Look<'_>,
    ) -> Result<Outcome, Unfinished> {
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        if let [trigger] = triggers {
            outcome.resource = Some(trigger.target.to_string());
        }
        for time in triggers.iter().filter_map(|t| t.time) {
            self.observer.forget_reads_before(time);
        }
        let allowed = self.settings.intake.subscriptions.snapshot();
        let allowed = allowed.as_deref();
        let resolved =
            join_all(triggers.iter().map(|trigger| {
                crate::resolve::workspaces(&self.observer, trigger, allowed, deadline)
            }))
            .await;
        let mut workspaces: Vec<(crate::resolve::Found, &Trigger)> = Vec::new();
        for (trigger, result) in triggers.iter().zip(resolved) {
            match result {
                Ok(found) => {
                    for found in found {
                        if !workspaces.iter().any(|(seen, _)| {
                            seen.id.as_str().eq_ignore_ascii_case(found.id.as_str())
                        }) {
                            workspaces.push((found, trigger));
                        }
                    }
                }
                Err(error) => {
                    // Reported either way: an answer without it would read as "nothing affected".
                    let searched = format!("/subscriptions/{}", trigger.subscription);
                    let what = "list of the workspaces that use it (Resource Graph)";
                    let failure = read_failure(what, &searched, &error);
                    let target = trigger.target.to_string();
                    outcome.findings.push(rules::unreadable(&target, &failure));
                    return self.settle(outcome, Failure::Resolve(error));
                }
            }
        }
        outcome.workspaces = workspaces.iter().map(|(f, _)| f.id.to_string()).collect();
        let snapshots = join_all(workspaces.iter().map(|(found, _)| {
            self.observer
                .snapshot_shared(&found.id, found.hint.as_ref(), deadline)
        }))
        .await;
        let now = time::OffsetDateTime::now_utc();
        let evaluated: Vec<Evaluated> = snapshots
            .iter()
            .zip(&workspaces)
            .map(|(snapshot, (_, trigger))| {
                let evaluation = self.evaluate(snapshot, Some(trigger), now);
                add_findings(&mut outcome, &evaluation);
                Evaluated {
                    evaluation,
                    snapshot,
                }
            })
            .collect();
        let transient: Vec<String> = snapshots
            .iter()
            .flat_map(|snapshot| transient_failures(snapshot))
            .map(|f| format!("{} {}: {}", f.what, f.resource, f.message))
            .collect();
        if !transient.is_empty() {
            // Nothing is acted on, but the outcome shows what was seen and, as
            // `guard.visibility` findings, what was not.
            return self.settle(outcome, Failure::Reads(transient));
        }
        let Some(actor) = self.actor().filter(|_| look != Look::Check) else {
            return Ok(outcome);
        };
        let situation = Situation {
            origin: match look {
                Look::Event { caller } => Origin::Event { caller },
                Look::Check | Look::Apply => Origin::Check,
            },
            policy: &self.settings.policy,
            mode: self.settings.mode,
            now,
            deadline,
            audit: look == Look::Apply,
        };
        let acted = actor.act(&mut outcome, &evaluated, &situation).await;
        if outcome
            .actions
            .iter()
            .any(|a| a.kind == ActionKind::Remediate && a.result == ActionResult::Applied)
        {
            self.observer.forget_cached_reads();
        }
        match acted {
            Ok(()) => Ok(outcome),
            Err(error) => self.settle(outcome, Failure::State(error)),
        }
    }

    /// Runs the rules on one snapshot.
    fn evaluate(
        &self,
        snapshot: &Snapshot,
        trigger: Option<&Trigger>,
        now: time::OffsetDateTime,
    ) -> rules::Evaluation {
        self.learn_managed_group(snapshot);
        rules::evaluate(&Context {
            snapshot,
            now,
            policy: &self.settings.policy,
            trigger,
        })
    }
}

/// Adds an evaluation's findings and exemptions to the outcome.
fn add_findings(outcome: &mut Outcome, evaluation: &rules::Evaluation) {
    outcome.findings.extend(evaluation.findings.iter().cloned());
    outcome
        .exempted
        .extend(evaluation.exempted.iter().map(|e| Exempted {
            finding: e.finding.clone(),
            exemption_reason: e.reason.clone(),
            exemption_expires: e.expires.map(|d| d.to_string()),
        }));
}
