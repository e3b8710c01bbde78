//! A batch of Key Vault audit-log records (`OnKeyVaultAudit`), from the binding's value to an
//! Outcome: the vaults whose chain may have changed, or whose keys a service failed to use,
//! re-checked once per affected workspace, the batch claimed at most once across instances.

use serde_json::Value;
use tokio::time::Instant;

use super::{Engine, Failure, Unfinished};
use crate::catalogue::RuleId;
use crate::ids::KeyUrl;
use crate::intake::{AUDIT_EVENT_TYPE, AuditBatch, KeyUse, Trigger, VaultActivity, same_key};
use crate::outcome::{Disposition, EventRef, Outcome};

impl Engine {
    /// Handles one `OnKeyVaultAudit` invocation. `batch` names the batch the same way on every
    /// redelivery (partition and sequence numbers); without it the batch is not claimed.
    pub async fn on_audit(
        &self,
        value: Value,
        batch: Option<String>,
        fallback_id: &str,
        deadline: Instant,
    ) -> Result<Outcome, Unfinished> {
        let id = batch.clone().unwrap_or_else(|| fallback_id.to_owned());
        let event = EventRef::from_event(
            Some(id.clone()),
            Some(AUDIT_EVENT_TYPE.to_owned()),
            Some("OnKeyVaultAudit".to_owned()),
        );
        // Only while a management group was never listed may the batch have to be read again
        // (its records waiting for the group): then, and only then, it is kept to read twice.
        let again = self
            .settings
            .intake
            .subscriptions
            .awaits_discovery()
            .then(|| value.clone());
        let mut records = match AuditBatch::parse(value, &self.settings.intake) {
            Ok(records) => records,
            Err(rejection) => {
                return Ok(Outcome::new(
                    event,
                    Disposition::Rejected,
                    Some(rejection.to_string()),
                ));
            }
        };
        if records.awaiting_discovery > 0
            && let Some(value) = again
        {
            // As for events: list the groups' subscriptions now, and if that fails too, have
            // the batch delivered again rather than refuse its records.
            self.discover_subscriptions(deadline).await;
            records = AuditBatch::parse(value, &self.settings.intake).unwrap_or(records);
            // Only a batch with nothing in scope waits: one never-listed group must not hold
            // up the records of the others (those waiting are named in the reason; the sweep
            // reports the group).
            if records.awaiting_discovery > 0 && records.vaults.is_empty() {
                let skeleton = Outcome::new(event, Disposition::Evaluated, Some(records.summary()));
                return self.settle(skeleton, Failure::ScopeNotYetKnown);
            }
        }
        self.drop_own_failures(&mut records).await;
        let summary = records.summary();
        let relevant = match self.relevant(&mut records).await {
            Ok(relevant) => relevant,
            Err(error) => {
                let skeleton = Outcome::new(event, Disposition::Evaluated, Some(summary));
                return self.settle(skeleton, Failure::State(error));
            }
        };
        if relevant.is_empty() {
            // Refused records are answered, not failed: Event Hubs would deliver them again
            // and again and hold up their partition. The reason names them.
            let disposition = if records.rejected_count > 0 && records.vaults.is_empty() {
                Disposition::Rejected
            } else {
                Disposition::Ignored
            };
            return Ok(Outcome::new(event, disposition, Some(summary)));
        }
        let mut triggers: Vec<Trigger> = relevant.iter().map(|a| a.trigger(&id)).collect();
        for (trigger, activity) in triggers.iter_mut().zip(&relevant) {
            if trigger.caller_object_id.is_none() {
                trigger.caller_object_id = self.someone_else(activity).await;
            }
        }
        let result = match batch {
            Some(batch) => Box::pin(self.once(event, &batch, &triggers, deadline)).await,
            None => {
                let look = super::Look::Event { caller: None };
                Box::pin(self.reconcile_all(event, &triggers, deadline, look)).await
            }
        };
        result.map(|mut outcome| {
            outcome.reason.get_or_insert(summary);
            outcome
        })
    }

    /// For the loop guard, when a vault's changes name several callers: one that is not
    /// cmk-guard, so that a change someone made beside cmk-guard's own fix is theirs and is
    /// acted on (with one caller for all, [`VaultActivity::only_caller`] says it already).
    /// `None` when no change names a caller, or cmk-guard's own id is unknown.
    async fn someone_else(&self, activity: &VaultActivity) -> Option<String> {
        let callers: Vec<&str> = activity
            .changes
            .iter()
            .filter_map(|c| c.caller.object_id.as_deref())
            .collect();
        if callers.is_empty() {
            return None;
        }
        let own = self.actor()?.own_id().await.ok()?;
        callers
            .into_iter()
            .find(|c| !c.eq_ignore_ascii_case(own))
            .map(str::to_owned)
    }

    /// Leaves out cmk-guard's own failed calls (its data-plane read of a key's modulus refused
    /// because it has Reader only): they are no outage, and re-checking on them would read the
    /// key again and log another failure, round and round. Only a batch with failures asks for
    /// the own id (from the token, once); without it nothing is left out.
    async fn drop_own_failures(&self, records: &mut AuditBatch) {
        let Some(actor) = self
            .actor()
            .filter(|_| records.vaults.iter().any(|a| a.has_failures()))
        else {
            return;
        };
        let Ok(own) = actor.own_id().await else {
            return;
        };
        records.drop_uses_by(own);
    }

    /// The vaults worth re-checking: every change and every failed use. A successful
    /// wrap/unwrap counts only for a caller whose failure it can end: one that failed earlier in
    /// the batch, or one an open `key.use-failures` finding of that key names (one store read,
    /// no Azure read) — another caller's success says nothing about it.
    async fn relevant<'a>(
        &self,
        records: &'a mut AuditBatch,
    ) -> Result<Vec<&'a VaultActivity>, crate::state::StateError> {
        let successes = records
            .vaults
            .iter()
            .any(|a| a.uses.iter().any(KeyUse::succeeded));
        if successes {
            let open = match self.actor() {
                Some(actor) => actor.store.open_findings().await?,
                None => Vec::new(),
            };
            let failing: Vec<(KeyUrl, &str)> = open
                .iter()
                .filter(|(key, _)| key.rule == RuleId::KeyUseFailures.as_str())
                .filter_map(|(key, record)| {
                    Some((
                        KeyUrl::parse(&key.resource).ok()?,
                        record.value.observed.as_str(),
                    ))
                })
                .collect();
            for activity in &mut records.vaults {
                let failed: Vec<String> = activity
                    .uses
                    .iter()
                    .filter(|u| u.failed())
                    .map(|u| u.caller.key())
                    .collect();
                activity.uses.retain(|u| {
                    !u.succeeded()
                        || failed.contains(&u.caller.key())
                        || failing.iter().any(|(key, observed)| {
                            same_key(key, &u.key) && u.caller.named_in(observed)
                        })
                });
            }
        }
        Ok(records
            .vaults
            .iter()
            .filter(|a| !a.changes.is_empty() || a.uses.iter().any(|u| u.failed() || u.succeeded()))
            .collect())
    }
}
