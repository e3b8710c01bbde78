//! The engine: one entry point per kind of work (an event, an on-demand check), each running the
//! same pipeline — intake → resolve → observe → evaluate — to an [`Outcome`].
//!
//! Error policy (as in kube-rs): a transient failure (throttling, 5xx, timeouts past the
//! deadline) fails the invocation so that Event Grid redelivers; a permanent one is recorded as
//! a `guard.visibility` finding and acknowledged.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::act::{Actor, Evaluated};
use crate::azure::Azure;
use crate::azure::AzureError;
use crate::azure::credential::{NO_CREDENTIAL, SignInStatus};
use crate::ids::{ArmResourceId, KeyUrl};
use crate::intake::{Classified, RawEvent, Rejection, ResourceKind, Target, Trigger, classify};
use crate::observe::{DEFAULT_CACHE_TTL, Observer, read_failure, transient_failures};
use crate::outcome::{Disposition, EventRef, Exempted, Outcome};
use crate::resolve;
use crate::rules::{self, Context};
use crate::settings::Settings;
use crate::snapshot::Snapshot;
use crate::state::{EventStart, FindingKey, FindingRecord, Versioned};

/// Event Grid waits 30 s for an answer; leave room for the host around our work.
pub const EVENT_BUDGET: Duration = Duration::from_secs(25);

/// The `event.type` of scan outcomes.
pub const SCAN_EVENT_TYPE: &str = "cmk-guard.Scan";

/// How many workspaces a scan reads at once (the request rate limit applies on top).
pub const SCAN_CONCURRENCY: usize = 32;

/// Every ML workspace, in a stable order so paging and resuming are deterministic.
use resolve::ALL_WORKSPACES as LIST_WORKSPACES;
use resolve::Found;

/// Whether [`Engine::reconcile`] acts, on what, and who writes the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// A read-only check.
    No,
    /// An on-demand check that acts (`Evaluate` with `apply`), and appends its audit record.
    /// Never cmk-guard's own write coming back, so the loop guard leaves it alone.
    Check,
    /// An event: act; the caller writes the audit record with the event's claim (one store
    /// write). The loop guard compares the event's caller with cmk-guard's own id.
    Event,
}

/// The `event.type` of outcomes of on-demand checks.
pub const EVALUATE_EVENT_TYPE: &str = "cmk-guard.Evaluate";

/// The invocation must fail so that it is delivered again; the outcome says what was seen.
#[derive(Debug)]
pub struct Transient {
    pub outcome: Outcome,
    pub reason: String,
}

/// Shared, immutable state of the running handler.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    observer: Observer,
    /// State, alerts and remediation; `None` for read-only use (the `evaluate` CLI).
    actor: Option<Actor>,
    /// Whether signing in found no credential: failures then say so instead of listing reads.
    sign_in: SignInStatus,
}

impl Engine {
    /// Builds the engine from validated settings and the Azure clients.
    pub fn new(settings: Settings, azure: Azure) -> Self {
        let sign_in = azure.sign_in.clone();
        let observer = Observer::new(azure.arm, azure.keys, DEFAULT_CACHE_TTL);
        Self {
            settings,
            observer,
            actor: None,
            sign_in,
        }
    }

    /// Builds the engine that acts: opens the state store, configures the alert channels and
    /// learns cmk-guard's own object id (for the loop guard). Fails with a message naming what
    /// is wrong.
    pub async fn acting(settings: Settings, azure: Azure) -> Result<Self, String> {
        let store = crate::state::open(&settings.state, &azure.transport, &azure.credential)
            .await
            .map_err(|e| format!("CMKGUARD_STATE: {e}"))?;
        let notify_settings =
            crate::notify::NotifySettings::from_env().map_err(|e| e.to_string())?;
        let notifier = crate::notify::Notifier::new(
            notify_settings,
            azure.http.clone(),
            &settings.transport,
            Some(azure.credential.clone()),
        )
        .map_err(|e| e.to_string())?;
        let actor = Actor {
            store,
            notifier,
            remediator: crate::remediate::Remediator::new(&azure),
            instance: uuid::Uuid::new_v4().to_string(),
            identity: azure.clone(),
            arm_endpoint: settings.arm_endpoint.to_string(),
            own_object_id: tokio::sync::OnceCell::new(),
            outbox_checked: std::sync::Mutex::new(None),
        };
        let sign_in = azure.sign_in.clone();
        let observer = Observer::new(azure.arm, azure.keys, DEFAULT_CACHE_TTL);
        Ok(Self {
            settings,
            observer,
            actor: Some(actor),
            sign_in,
        })
    }

    /// True when the last attempt to sign in to Azure found no credential at all: the CLI then
    /// reports a configuration error instead of the reads that could not be made.
    pub fn no_credential(&self) -> bool {
        self.sign_in.no_credential()
    }

    /// Why an invocation fails: [`NO_CREDENTIAL`] when there is no credential (the reads'
    /// failures all say the same), else `reason`.
    fn failure_reason(&self, reason: String) -> String {
        if self.no_credential() {
            NO_CREDENTIAL.to_owned()
        } else {
            reason
        }
    }

    /// The configuration in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The observer (for its cache statistics).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Handles one event (the trigger binding's value) from start to finish.
    pub async fn on_event(&self, value: Value, deadline: Instant) -> Result<Outcome, Transient> {
        let event = match RawEvent::from_binding(value) {
            Ok(event) => event,
            Err(rejection) => return Ok(rejected(EventRef::default(), rejection)),
        };
        let classified = classify(&event, &self.settings.intake);
        let event_ref = EventRef::from_event(Some(event.id), Some(event.event_type), event.subject);
        match classified {
            Err(rejection) => Ok(rejected(event_ref, rejection)),
            Ok(Classified::Ignored(reason)) => {
                Ok(Outcome::new(event_ref, Disposition::Ignored, Some(reason)))
            }
            // Boxed: the relevant path is a large future, and moving it with every ignored
            // event's future was a measurable share of answering one.
            Ok(Classified::Relevant(trigger)) => {
                Box::pin(self.once(event_ref, &trigger, deadline)).await
            }
        }
    }

    /// Handles a relevant event at most once across instances: a finished event id answers
    /// `duplicate`; an event another instance is working on right now fails (503) so that it is
    /// delivered again later, when it is either finished or abandoned (a crashed instance's
    /// lease runs out).
    async fn once(
        &self,
        event: EventRef,
        trigger: &Trigger,
        deadline: Instant,
    ) -> Result<Outcome, Transient> {
        let Some(actor) = &self.actor else {
            return self
                .reconcile(event, trigger, deadline, Acting::Event)
                .await;
        };
        let store = &actor.store;
        let id = trigger.event_id.as_str();
        // The id as reasons may show it; the store gets it as it came.
        let shown_id = crate::text::field(id);
        let transient = |outcome: Outcome, error: crate::state::StateError| Transient {
            reason: error.to_string(),
            outcome,
        };
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
                    Some(format!("event {shown_id} was already handled")),
                ));
            }
            Ok(EventStart::Busy) => {
                return Err(Transient {
                    reason: format!("event {shown_id} is being handled by another instance"),
                    outcome: skeleton(),
                });
            }
            Err(error) => return Err(transient(skeleton(), error)),
        }
        let result = self
            .reconcile(event, trigger, deadline, Acting::Event)
            .await;
        let audit = result.as_ref().ok().map(crate::act::audit_record);
        let ended = store
            .end_event(
                id,
                &owner,
                result.is_ok(),
                time::OffsetDateTime::now_utc(),
                audit.as_ref(),
            )
            .await;
        match (result, ended) {
            (Ok(outcome), Err(error)) => Err(transient(outcome, error)),
            (result, _) => result,
        }
    }

    /// Re-reads everything the trigger affects and checks it. The trigger is only a hint.
    /// When `acting`, and the engine acts, the plan is carried out (alerts, state,
    /// remediation); otherwise it is a read-only check.
    pub async fn reconcile(
        &self,
        event: EventRef,
        trigger: &Trigger,
        deadline: Instant,
        acting: Acting,
    ) -> Result<Outcome, Transient> {
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        outcome.resource = Some(trigger.target.to_string());
        if let Some(time) = trigger.time {
            self.observer.forget_reads_before(time);
        }
        let allowed = self.settings.intake.subscriptions.as_deref();
        let workspaces = match resolve::workspaces(&self.observer, trigger, allowed, deadline).await
        {
            Ok(workspaces) => workspaces,
            Err(error) => {
                // Reported either way: an answer without it would read as "nothing affected".
                let searched = format!("/subscriptions/{}", trigger.subscription);
                let failure = read_failure(
                    "list of the workspaces that use it (Resource Graph)",
                    &searched,
                    &error,
                );
                outcome
                    .findings
                    .push(rules::unreadable(&trigger.target.to_string(), &failure));
                if error.is_transient() {
                    return Err(Transient {
                        reason: self
                            .failure_reason(format!("resolving the workspaces failed: {error}")),
                        outcome,
                    });
                }
                return Ok(outcome);
            }
        };
        outcome.workspaces = workspaces.iter().map(|f| f.id.to_string()).collect();
        let snapshots: Vec<Snapshot> = join_all(workspaces.iter().map(|found| {
            self.observer
                .snapshot_hinted(&found.id, found.hint.as_ref(), deadline)
        }))
        .await;
        let now = time::OffsetDateTime::now_utc();
        let transient: Vec<String> = snapshots
            .iter()
            .flat_map(transient_failures)
            .map(|f| format!("{} {}: {}", f.what, f.resource, f.message))
            .collect();
        if !transient.is_empty() {
            // Nothing is acted on, but the outcome shows what was seen and, as
            // `guard.visibility` findings, what was not: never an empty, compliant-looking list.
            for snapshot in &snapshots {
                add_findings(&mut outcome, &self.evaluate(snapshot, Some(trigger), now));
            }
            return Err(Transient {
                reason: self.failure_reason(format!(
                    "Azure reads did not succeed in time: {}",
                    transient.join("; ")
                )),
                outcome,
            });
        }
        let evaluated: Vec<Evaluated> = snapshots
            .iter()
            .map(|snapshot| {
                let evaluation = self.evaluate(snapshot, Some(trigger), now);
                add_findings(&mut outcome, &evaluation);
                Evaluated {
                    evaluation,
                    snapshot,
                }
            })
            .collect();
        if let Some(actor) = self.actor.as_ref().filter(|_| acting != Acting::No) {
            let situation = crate::act::Situation {
                origin: match acting {
                    Acting::Event => crate::act::Origin::Event {
                        caller: trigger.caller_object_id.as_deref(),
                    },
                    Acting::Check | Acting::No => crate::act::Origin::Check,
                },
                policy: &self.settings.policy,
                mode: self.settings.mode,
                now,
                deadline,
                audit: acting == Acting::Check,
            };
            let acted = actor.act(&mut outcome, &evaluated, &situation).await;
            let wrote = outcome.actions.iter().any(|a| {
                a.kind == crate::outcome::ActionKind::Remediate
                    && a.result == crate::outcome::ActionResult::Applied
            });
            if wrote {
                self.observer.forget_cached_reads();
            }
            if let Err(error) = acted {
                return Err(Transient {
                    reason: error.to_string(),
                    outcome,
                });
            }
        }
        Ok(outcome)
    }

    /// Runs the rules on one snapshot.
    fn evaluate(
        &self,
        snapshot: &Snapshot,
        trigger: Option<&Trigger>,
        now: time::OffsetDateTime,
    ) -> rules::Evaluation {
        rules::evaluate(&Context {
            snapshot,
            now,
            policy: &self.settings.policy,
            trigger,
        })
    }

    /// The timer's full re-check: every workspace in scope, in id order, resuming after the
    /// cursor a previous sweep left when its time ran out; evaluated with the current time
    /// (keys expire without any event), acted on like an event, with one digest at the end.
    pub async fn sweep(&self, event: EventRef) -> Result<Outcome, Transient> {
        use futures_util::StreamExt;
        let started = Instant::now();
        let budget_end = started + self.settings.sweep_budget;
        let mut outcome = Outcome::new(event, Disposition::Evaluated, None);
        let Some(actor) = &self.actor else {
            return Err(Transient {
                reason: "the sweep needs the state store".into(),
                outcome,
            });
        };
        let store = &actor.store;
        let transient = |outcome: Outcome, reason: String| Transient { reason, outcome };
        let progress = match store.sweep_cursor().await {
            Ok(cursor) => cursor.map(|text| SweepProgress::from_cursor(&text)),
            Err(error) => return Err(transient(outcome, error.to_string())),
        };
        let cursor = progress.as_ref().map(|p| p.after.clone());
        let mut digest = progress.and_then(|p| p.digest);
        let allowed = self.settings.intake.subscriptions.as_deref();
        // Listing is not cut short by a small budget: without the list there is nothing to resume.
        let listing_deadline = budget_end.max(started + EVENT_BUDGET);
        let listed = match resolve::query_workspaces(
            &self.observer,
            LIST_WORKSPACES,
            allowed,
            listing_deadline,
        )
        .await
        {
            Ok(ids) => ids,
            Err(error) => {
                add_listing_failure(&mut outcome, allowed, &error);
                let reason = self.failure_reason(format!("listing the workspaces failed: {error}"));
                return Err(transient(outcome, reason));
            }
        };
        let open = match store.open_findings().await {
            Ok(open) => open,
            Err(error) => return Err(transient(outcome, error.to_string())),
        };
        let unlisted = unlisted_with_open_findings(&listed, &open, allowed);
        let mut todo: Vec<Found> = listed
            .into_iter()
            .chain(unlisted)
            .filter(|found| {
                cursor
                    .as_deref()
                    .is_none_or(|c| found.id.as_str().to_ascii_lowercase().as_str() > c)
            })
            .collect();
        todo.sort_by_key(|found| found.id.as_str().to_ascii_lowercase());
        let now = time::OffsetDateTime::now_utc();
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
            // Each chunk gets the usual per-invocation read budget; the sweep's own budget only
            // decides whether another chunk is started.
            let chunk_deadline = Instant::now() + EVENT_BUDGET;
            let snapshots: Vec<Snapshot> = futures_util::stream::iter(chunk.iter())
                .map(|found| {
                    self.observer
                        .snapshot_hinted(&found.id, found.hint.as_ref(), chunk_deadline)
                })
                .buffered(SCAN_CONCURRENCY)
                .collect()
                .await;
            let first_finding = outcome.findings.len();
            let evaluated: Vec<Evaluated> = snapshots
                .iter()
                .map(|snapshot| {
                    let evaluation = self.evaluate(snapshot, None, now);
                    add_findings(&mut outcome, &evaluation);
                    Evaluated {
                        evaluation,
                        snapshot,
                    }
                })
                .collect();
            let situation = crate::act::Situation {
                origin: crate::act::Origin::Check,
                policy: &self.settings.policy,
                mode: self.settings.mode,
                now,
                deadline: chunk_deadline,
                audit: true,
            };
            if let Err(error) = actor.act(&mut outcome, &evaluated, &situation).await {
                return Err(transient(outcome, error.to_string()));
            }
            digest = Some(crate::act::merge_digest(
                digest.take(),
                &outcome.findings[first_finding..],
            ));
            outcome
                .workspaces
                .extend(chunk.iter().map(|found| found.id.to_string()));
            last_done = chunk
                .last()
                .map(|found| found.id.as_str().to_ascii_lowercase());
        }
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
        if let Err(error) = store.set_sweep_cursor(saved.as_deref()).await {
            return Err(transient(outcome, error.to_string()));
        }
        if stopped_early {
            outcome.reason = Some(format!(
                "the sweep's time budget ran out after {} of {} workspaces; the next sweep resumes after {}",
                outcome.workspaces.len(),
                todo.len(),
                next_cursor.as_deref().unwrap_or("the start")
            ));
        } else {
            let digest = digest.unwrap_or_else(|| crate::act::merge_digest(None, &[]));
            if let Err(error) = actor
                .send_digest(
                    &mut outcome,
                    &digest,
                    &self.settings.policy,
                    self.settings.mode,
                    now,
                )
                .await
            {
                return Err(transient(outcome, error.to_string()));
            }
            let _ = store.prune(now).await;
        }
        Ok(outcome)
    }

    /// Checks every ML workspace of `subscriptions` (all readable ones when `None`): listed with
    /// Resource Graph, each re-read through ARM (azure-notes Trap T19), at most
    /// [`SCAN_CONCURRENCY`] at a time and within the shared Azure request rate. What could not be
    /// read in time, the list of workspaces included, becomes a `guard.visibility` finding
    /// rather than a failed scan: the outcome always says what was and was not seen.
    /// `progress` hears (done, total).
    pub async fn scan(
        &self,
        id: &str,
        subscriptions: Option<&[crate::ids::SubscriptionId]>,
        deadline: Instant,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Outcome {
        use futures_util::StreamExt;
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
            LIST_WORKSPACES,
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
        let mut done = 0;
        while let Some(snapshot) = snapshots.next().await {
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

    /// Handles an on-demand check (`POST /api/evaluate`, `cmk-guard evaluate --resource`).
    /// `Err(Rejection)` is a bad request: the caller gets the reason and a 400.
    pub async fn evaluate_request(
        &self,
        body: &[u8],
        request_id: &str,
        deadline: Instant,
    ) -> Result<Result<Outcome, Transient>, Rejection> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct EvaluateRequest {
            resource: String,
            #[serde(default)]
            apply: bool,
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(format!("body: not valid JSON: {e}")))?;
        let request: EvaluateRequest = crate::intake::deserialize_at("body", value)?;
        if request.apply && self.settings.mode != crate::settings::Mode::Remediate {
            return Err(Rejection::new(format!(
                "apply: cmk-guard runs in `{}` mode; apply needs CMKGUARD_MODE=remediate",
                self.settings.mode
            )));
        }
        if request.apply && self.actor.is_none() {
            return Err(Rejection::new(
                "apply: this command is read-only; use the Evaluate function",
            ));
        }
        let target = self.parse_evaluate_target(&request.resource)?;
        let trigger = Trigger {
            event_id: request_id.to_owned(),
            event_type: EVALUATE_EVENT_TYPE.to_owned(),
            change: crate::intake::ChangeKind::Write,
            subscription: match &target {
                Target::Arm { id, .. } | Target::Key { vault: id, .. } => id.subscription().clone(),
            },
            target,
            operation: None,
            caller_object_id: None,
            caller_app_id: None,
            correlation_id: None,
            time: None,
        };
        let event = EventRef::from_event(
            Some(request_id.to_owned()),
            Some(EVALUATE_EVENT_TYPE.to_owned()),
            Some(request.resource),
        );
        Ok(self
            .reconcile(
                event,
                &trigger,
                deadline,
                if request.apply {
                    Acting::Check
                } else {
                    Acting::No
                },
            )
            .await)
    }

    fn parse_evaluate_target(&self, resource: &str) -> Result<Target, Rejection> {
        if resource.starts_with("https://") {
            let key =
                KeyUrl::parse(resource).map_err(|e| Rejection::new(format!("resource: {e}")))?;
            if !key.is_under(&self.settings.intake.keyvault_dns_suffix) {
                return Err(Rejection::new(format!(
                    "resource: key host {} is not under the Key Vault DNS suffix {}",
                    key.host(),
                    self.settings.intake.keyvault_dns_suffix
                )));
            }
            return Err(Rejection::new(format!(
                "resource: a key URL names no subscription; pass the key's ARM id (…/providers/Microsoft.KeyVault/vaults/{}/keys/{}) instead",
                key.vault_name(),
                key.name()
            )));
        }
        let id =
            ArmResourceId::parse(resource).map_err(|e| Rejection::new(format!("resource: {e}")))?;
        if let Some(allowed) = &self.settings.intake.subscriptions
            && !allowed.contains(id.subscription())
        {
            return Err(Rejection::new(format!(
                "resource: subscription {} is not in CMKGUARD_SUBSCRIPTIONS",
                id.subscription()
            )));
        }
        let kind = if id.is_type("Microsoft.MachineLearningServices/workspaces") {
            ResourceKind::Workspace
        } else if id.is_type("Microsoft.KeyVault/vaults") {
            ResourceKind::Vault
        } else if id.is_type("Microsoft.KeyVault/vaults/keys") {
            ResourceKind::VaultKey
        } else {
            return Err(Rejection::new(format!(
                "resource: {} is a {}; expected an ML workspace, a key vault or a key",
                id,
                id.resource_type()
            )));
        };
        Ok(Target::Arm { id, kind })
    }
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

/// How long an instance holds an event it is working on; past it, a redelivery takes over.
const EVENT_LEASE: time::Duration = time::Duration::seconds(60);

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

fn rejected(event: EventRef, rejection: Rejection) -> Outcome {
    Outcome::new(event, Disposition::Rejected, Some(rejection.to_string()))
}

/// One `guard.visibility` finding per subscription whose workspaces could not be listed
/// (`/subscriptions` when the scope is every readable subscription).
fn add_listing_failure(
    outcome: &mut Outcome,
    subscriptions: Option<&[crate::ids::SubscriptionId]>,
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

/// The workspaces with open findings in `allowed` subscriptions that the listing does not
/// name. The sweep reads them through ARM too: a workspace that was deleted is no longer listed,
/// and only the 404 of its own read closes its findings (the listing is only discovery,
/// azure-notes Trap T19).
fn unlisted_with_open_findings(
    listed: &[Found],
    open: &[(FindingKey, Versioned<FindingRecord>)],
    allowed: Option<&[crate::ids::SubscriptionId]>,
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
    use crate::settings::Settings;

    const WS: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";

    fn engine(vars: &[(&str, &str)]) -> Engine {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let settings = Settings::from_lookup(&lookup).unwrap();
        let azure = Azure::new(&settings, |_| None).unwrap();
        Engine::new(settings, azure)
    }

    #[tokio::test]
    async fn bad_evaluate_requests_say_why_before_any_request() {
        let engine = engine(&[(
            "CMKGUARD_SUBSCRIPTIONS",
            "00000000-0000-0000-0000-000000000001",
        )]);
        for (body, expected) in [
            ("{", "body: not valid JSON"),
            ("{}", "missing field `resource`"),
            (r#"{"resource":5}"#, "body.resource: invalid type"),
            (r#"{"resource":"ws1"}"#, "is not an ARM resource id"),
            (
                &format!(r#"{{"resource":"{WS}","extra":1}}"#),
                "unknown field `extra`",
            ),
            (
                &format!(r#"{{"resource":"{WS}"}}"#),
                "not in CMKGUARD_SUBSCRIPTIONS",
            ),
            (
                r#"{"resource":"https://kv1.vault.azure.net/keys/k"}"#,
                "names no subscription",
            ),
            (
                r#"{"resource":"https://kv1.evil.example/keys/k"}"#,
                "not under the Key Vault DNS suffix",
            ),
            (
                r#"{"resource":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"}"#,
                "expected an ML workspace",
            ),
        ] {
            let deadline = Instant::now() + Duration::from_secs(1);
            let err = engine
                .evaluate_request(body.as_bytes(), "r1", deadline)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

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
        let names = |allowed: Option<&[crate::ids::SubscriptionId]>| -> Vec<String> {
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
