//! Act: carry out the plan for one workspace — remediate where allowed, record finding state
//! with compare-and-set (of instances racing on the same transition exactly one wins, and only
//! the winner alerts), send alerts through the outbox (enqueued before sending, so a crash or a
//! failed send loses nothing), and write an audit record. In `observe` mode nothing leaves:
//! no alert, no digest, no retry of the outbox.

mod audit;
mod outbox;

pub use audit::audit_record;
pub use outbox::merge_digest;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tokio::time::Instant;

use crate::catalogue::RuleId;
use crate::notify::{self, Change, Notifier};
use crate::outcome::{Action, ActionKind, ActionResult, Finding, FindingState, Outcome, Severity};
use crate::plan::{self, Cause, Inputs, Prior, Remedy, Step};
use crate::policy::Policy;
use crate::remediate::{self, Consent, Remediator};
use crate::rules::Evaluation;
use crate::settings::Mode;
use crate::snapshot::Snapshot;
use crate::state::{
    CompareAndSet, FindingKey, FindingRecord, RemediationAttempt, StateError, StateStore, Version,
};

/// How long a remediation claim holds other instances off (covers the write and its check).
const REMEDIATION_LEASE: Duration = Duration::minutes(2);

/// Everything act needs, built once at start.
#[derive(Debug)]
pub struct Actor {
    pub store: Arc<dyn StateStore>,
    pub notifier: Notifier,
    pub remediator: Remediator,
    /// This process, as the owner of leases.
    pub instance: String,
    /// Invocations of this process so far: numbers each invocation's lease owner.
    pub invocations: std::sync::atomic::AtomicU64,
    /// Where cmk-guard learns its own object id (the loop guard): its ARM token, fetched when
    /// an event first names a caller, so that start-up stays fast.
    pub identity: crate::azure::Azure,
    pub arm_endpoint: String,
    /// Kept once learnt; a failure is not kept, so a passing token outage does not blind the
    /// loop guard for the life of the process.
    pub own_object_id: tokio::sync::OnceCell<String>,
    /// When this instance last looked for due outbox items.
    pub outbox_checked: std::sync::Mutex<Option<OffsetDateTime>>,
    /// Where finding changes go in Azure Monitor (`CMKGUARD_LOGS_*`), if anywhere.
    pub findings_log: Option<crate::monitor::FindingsLog>,
    /// What depends on the keys and vaults alerts are about (`who-uses`).
    pub dependents: crate::who_uses::Dependents,
}

/// Why cmk-guard is looking: the loop guard needs to know whether the look may be its own
/// write coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// An event, with the caller's object id when the event names one.
    Event { caller: Option<&'a str> },
    /// The sweep or an on-demand check: cmk-guard starts these itself, so they are never its
    /// own write coming back.
    Check,
}

/// What the invocation is about, besides the evaluations.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Why cmk-guard is looking (the loop guard compares an event's caller with its own id).
    pub origin: Origin<'a>,
    pub policy: &'a Policy,
    pub mode: Mode,
    pub now: OffsetDateTime,
    pub deadline: Instant,
    /// Whether act appends the audit record itself; `false` when the caller writes it with
    /// the event's claim, in the same store write.
    pub audit: bool,
}

/// One workspace's evaluation with the snapshot it came from.
pub struct Evaluated<'a> {
    pub evaluation: Evaluation,
    pub snapshot: &'a Snapshot,
}

impl Actor {
    /// The actor of this process: its own object id is learnt from the settings' ARM endpoint;
    /// remediations wire vaults to the settings' targets; finding changes go to Azure Monitor
    /// when the settings name a data collection rule.
    pub fn new(
        store: Arc<dyn StateStore>,
        notifier: Notifier,
        azure: &crate::azure::Azure,
        settings: &crate::settings::Settings,
    ) -> Self {
        Self {
            store,
            notifier,
            remediator: Remediator::new(azure),
            instance: uuid::Uuid::new_v4().to_string(),
            invocations: std::sync::atomic::AtomicU64::new(0),
            identity: azure.clone(),
            arm_endpoint: settings.arm_endpoint.to_string(),
            own_object_id: tokio::sync::OnceCell::new(),
            outbox_checked: std::sync::Mutex::new(None),
            dependents: crate::who_uses::Dependents::new(azure, &settings.intake),
            findings_log: settings.findings_log.as_ref().map(|logs| {
                crate::monitor::FindingsLog::new(
                    logs,
                    azure.credential.clone(),
                    settings.cloud.monitor_suffix(),
                    azure.http.clone(),
                )
            }),
        }
        .with_wiring(settings.wiring.clone())
    }

    /// The actor whose remediations wire vaults to `targets` (`vault.events-wired`).
    pub fn with_wiring(mut self, targets: crate::snapshot::WiringTargets) -> Self {
        self.remediator = self.remediator.with_wiring(targets);
        self
    }

    /// A lease owner unique to one invocation of this instance: leases held by one invocation
    /// must stop concurrent invocations of the same instance too. The instance is a random id;
    /// a counter tells its invocations apart (a random id per invocation cost a `getrandom` call
    /// on every relevant event).
    pub fn owner(&self) -> String {
        let n = self
            .invocations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}/{n}", self.instance)
    }

    /// Plans and acts on every evaluated workspace; adds actions to the outcome and updates its
    /// findings (a verified remediation resolves them). Store failures are returned: the
    /// invocation then fails and is delivered again.
    pub async fn act(
        &self,
        outcome: &mut Outcome,
        evaluated: &[Evaluated<'_>],
        situation: &Situation<'_>,
    ) -> Result<(), StateError> {
        let Situation {
            origin,
            policy,
            mode,
            now,
            deadline,
            audit,
        } = *situation;
        let cause = self.cause(origin).await;
        let mut alerts: Vec<(notify::Notification, String)> = Vec::new();
        let mut changes: Vec<crate::monitor::FindingRow> = Vec::new();
        for item in evaluated {
            let stored = self
                .store
                .workspace_findings(&item.evaluation.workspace)
                .await?;
            let priors: Vec<Prior> = stored.iter().map(prior).collect();
            let mut attempts = BTreeMap::new();
            for finding in item
                .evaluation
                .findings
                .iter()
                .filter(|f| policy.allows_remediation(f.rule))
            {
                let count = self
                    .store
                    .count_attempts(&finding.resource, now - Duration::hours(1))
                    .await?;
                attempts.insert(finding.resource.to_ascii_lowercase(), count);
            }
            let own_remediations = self
                .own_remediations(&item.evaluation.findings, cause, now)
                .await?;
            let inputs = Inputs {
                policy,
                mode,
                now,
                cause,
                own_remediations: &own_remediations,
                recent_attempts: &attempts,
            };
            for step in plan::plan(&item.evaluation, &priors, &inputs) {
                let key = FindingKey::of(&step.finding);
                let prior = stored.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                if step.remediation == Remedy::OwnWrite {
                    outcome.actions.push(own_write_action(&step.finding));
                    continue;
                }
                // A deleted workspace has no findings of its own: the outcome says what closed.
                if item.evaluation.workspace_deleted && step.change == Some(Change::Resolved) {
                    outcome.findings.push(step.finding.clone());
                }
                let (step, action) = self
                    .remediation(step, item.snapshot, &inputs, deadline)
                    .await?;
                if let Some(action) = &action {
                    outcome.actions.push(action.clone());
                }
                if step.remediation == Remedy::OverBudget {
                    outcome.findings.push(budget_finding(&step.finding));
                }
                if step.finding.state == FindingState::Resolved {
                    mark_resolved(outcome, &step.finding);
                }
                let Some(change) = step.change else {
                    continue;
                };
                let Some(version) = self.transition(&key, &step, prior, now).await? else {
                    continue;
                };
                // Only the instance that stored the change reports it.
                changes.push(crate::monitor::FindingRow::new(
                    &step.finding,
                    change,
                    action.as_ref(),
                    now,
                ));
                if step.alert {
                    let mut note = notify::Notification::from_finding(&step.finding, change, None)
                        .handled(
                            policy.allows_remediation(step.finding.rule),
                            mode == Mode::Remediate,
                        );
                    if let Some(action) = &action {
                        note = note.with_action(action);
                    }
                    let transition = format!(
                        "{}|{}|{}|{}",
                        key.workspace,
                        key.rule,
                        key.resource,
                        version.as_str()
                    );
                    alerts.push((note, transition));
                }
            }
        }
        if !alerts.is_empty() {
            self.send_alerts(outcome, &alerts, policy, now).await?;
        }
        if let Some(log) = self.findings_log.as_ref().filter(|_| !changes.is_empty()) {
            log.send(&changes).await;
        }
        // Items queued before the mode changed stay queued until it allows sending again.
        if mode != Mode::Observe {
            self.flush_outbox(outcome, now).await?;
        }
        if audit {
            let record = audit_record(outcome, None).to_json()?;
            self.store.append_audit(now, &record).await?;
        }
        Ok(())
    }

    /// Who caused the look, for the loop guard. cmk-guard's own object id is learnt only when
    /// an event names a caller; when it cannot be learnt the event may be its own.
    async fn cause(&self, origin: Origin<'_>) -> Cause {
        let caller = match origin {
            Origin::Check => return Cause::Other,
            Origin::Event { caller: None } => return Cause::Unknown,
            Origin::Event {
                caller: Some(caller),
            } => caller,
        };
        match self.own_id().await {
            Ok(own) => cause_of(caller, Some(own)),
            Err(error) => {
                tracing::warn!(message = "Own object id unknown; events are guarded as if they may be cmk-guard's own.", %error);
                cause_of(caller, None)
            }
        }
    }

    /// cmk-guard's own object id, learnt from its token once.
    pub async fn own_id(&self) -> Result<&String, crate::azure::OwnObjectIdError> {
        self.own_object_id
            .get_or_try_init(|| self.identity.own_object_id(&self.arm_endpoint))
            .await
    }

    /// The (rule, lower-case resource) pairs of `findings` that cmk-guard itself remediated
    /// within [`plan::OWN_WRITE_WINDOW`]; asked only when the event may be its own.
    async fn own_remediations(
        &self,
        findings: &[Finding],
        cause: Cause,
        now: OffsetDateTime,
    ) -> Result<BTreeSet<(RuleId, String)>, StateError> {
        let mut own = BTreeSet::new();
        if cause == Cause::Other {
            return Ok(own);
        }
        let mut asked = BTreeSet::new();
        for finding in findings.iter().filter(|f| f.rule.is_remediable()) {
            let pair = (finding.rule, finding.resource.to_ascii_lowercase());
            if !asked.insert(pair.clone()) {
                continue;
            }
            let count = self
                .store
                .count_rule_attempts(
                    &finding.resource,
                    finding.rule.as_str(),
                    now - plan::OWN_WRITE_WINDOW,
                )
                .await?;
            if count > 0 {
                own.insert(pair);
            }
        }
        Ok(own)
    }

    /// Carries out the step's remediation: describes it (`alert` mode), skips it (budget
    /// spent), or applies it under a claim so that one instance writes. Returns the step as it
    /// stands afterwards (resolved when the remediation was applied and verified) and the
    /// action for the Outcome.
    #[tracing::instrument(name = "remediation", level = "info", skip_all, fields(rule = %step.finding.rule))]
    async fn remediation(
        &self,
        step: Step,
        snapshot: &Snapshot,
        inputs: &Inputs<'_>,
        deadline: Instant,
    ) -> Result<(Step, Option<Action>), StateError> {
        let finding = &step.finding;
        let action = |result: ActionResult, detail: String| Action {
            kind: ActionKind::Remediate,
            rule: finding.rule.to_string(),
            target: finding.resource.clone(),
            result,
            detail,
        };
        let action = match step.remediation {
            Remedy::None | Remedy::OwnWrite => None,
            Remedy::Describe => {
                remediate::describe(finding, snapshot, inputs.policy).map(|detail| {
                    action(
                        ActionResult::Planned,
                        format!("{detail} (alert mode: nothing was changed)"),
                    )
                })
            }
            Remedy::OverBudget => Some(action(
                ActionResult::Skipped,
                format!(
                    "remediation budget spent ({} attempts in the last hour): the resource keeps drifting back; find out who changes it",
                    plan::REMEDIATION_BUDGET_PER_HOUR
                ),
            )),
            Remedy::Apply => Some(self.apply(finding, snapshot, inputs, deadline).await?),
        };
        // An applied remediation's detail ends with what it verified ("…; verified: purge
        // protection is on"): the resolved finding shows that, not the state before the fix.
        let verified = action
            .as_ref()
            .filter(|a| a.result == ActionResult::Applied)
            .map(|a| {
                a.detail
                    .rsplit_once("verified: ")
                    .map_or_else(|| a.detail.clone(), |(_, now)| format!("verified: {now}"))
            });
        Ok((
            match verified {
                Some(verified) => step.remediated(&verified),
                None => step,
            },
            action,
        ))
    }

    /// Applies one remediation under a claim (one instance writes), recording the attempt
    /// against the budget.
    async fn apply(
        &self,
        finding: &Finding,
        snapshot: &Snapshot,
        inputs: &Inputs<'_>,
        deadline: Instant,
    ) -> Result<Action, StateError> {
        let owner = self.owner();
        let store = &self.store;
        if !store
            .claim_remediation(
                &finding.resource,
                finding.rule.as_str(),
                &owner,
                inputs.now,
                REMEDIATION_LEASE,
            )
            .await?
        {
            return Ok(Action {
                kind: ActionKind::Remediate,
                rule: finding.rule.to_string(),
                target: finding.resource.clone(),
                result: ActionResult::Skipped,
                detail: "another cmk-guard instance is remediating this resource".to_owned(),
            });
        }
        let consent = Consent::from_policy(inputs.policy, finding.rule);
        let attempt = self
            .remediator
            .apply_to(
                finding,
                &snapshot.workspace_id,
                &consent,
                inputs.now,
                deadline,
            )
            .await;
        let recorded = store
            .record_attempt(&RemediationAttempt {
                resource: finding.resource.clone(),
                rule: finding.rule.to_string(),
                at: inputs.now,
                result: attempt.action.result,
            })
            .await;
        store
            .release_remediation(&finding.resource, finding.rule.as_str(), &owner)
            .await?;
        recorded?;
        Ok(attempt.action)
    }

    /// Writes the finding's new state with compare-and-set. `None` when nothing changed or
    /// another instance made this transition first (then only it alerts).
    async fn transition(
        &self,
        key: &FindingKey,
        step: &Step,
        prior: Option<&crate::state::Versioned<FindingRecord>>,
        now: OffsetDateTime,
    ) -> Result<Option<Version>, StateError> {
        if step.change.is_none() {
            return Ok(None);
        }
        let resolved = step.finding.state == FindingState::Resolved;
        let record = FindingRecord {
            state: if resolved {
                FindingState::Resolved
            } else {
                FindingState::Open
            },
            severity: step.finding.severity,
            first_seen: prior
                .filter(|p| p.value.state == FindingState::Open)
                .map_or(now, |p| p.value.first_seen),
            last_seen: now,
            last_notified: if step.alert {
                Some(now)
            } else {
                prior.and_then(|p| p.value.last_notified)
            },
            observed: step.finding.observed.clone(),
        };
        match self
            .store
            .put_finding(key, &record, prior.map(|p| &p.version))
            .await?
        {
            CompareAndSet::Won(version) => Ok(Some(version)),
            CompareAndSet::Lost => Ok(None),
        }
    }
}

/// What the planner needs of a stored finding.
fn prior((key, record): &(FindingKey, crate::state::Versioned<FindingRecord>)) -> Prior {
    Prior {
        key: key.clone(),
        open: record.value.state == FindingState::Open,
        severity: record.value.severity,
        last_notified: record.value.last_notified,
    }
}

/// The loop guard's verdict on an event's caller, given cmk-guard's own object id if known.
fn cause_of(caller: &str, own: Option<&str>) -> Cause {
    match own {
        Some(own) if caller.eq_ignore_ascii_case(own) => Cause::Own,
        Some(_) => Cause::Other,
        None => Cause::Unknown,
    }
}

/// What the Outcome says about a finding the loop guard left alone, so the audit shows why a
/// failing rule got no alert.
fn own_write_action(finding: &Finding) -> Action {
    Action {
        kind: ActionKind::Remediate,
        rule: finding.rule.to_string(),
        target: finding.resource.clone(),
        result: ActionResult::Suppressed,
        detail: "cmk-guard remediated this within the hour and the event may be its own write: no second remediation or alert; the next event or sweep that is not its own checks it again".to_owned(),
    }
}

/// Marks the Outcome's copy of `finding` resolved (a remediation was applied and verified).
fn mark_resolved(outcome: &mut Outcome, finding: &Finding) {
    let key = FindingKey::of(finding);
    for f in outcome.findings.iter_mut().filter(|f| key.names(f)) {
        f.state = FindingState::Resolved;
    }
}

fn budget_finding(finding: &Finding) -> Finding {
    Finding {
        rule: RuleId::GuardRemediationBudget,
        resource: finding.resource.clone(),
        workspace: finding.workspace.clone(),
        severity: Severity::High,
        state: FindingState::Open,
        observed: format!(
            "{} was remediated {} times in the last hour and drifted back each time",
            finding.rule,
            plan::REMEDIATION_BUDGET_PER_HOUR
        ),
        expected: "a remediation holds; nobody reverts it".to_owned(),
    }
}

#[cfg(test)]
mod tests;
