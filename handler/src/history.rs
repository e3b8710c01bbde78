//! The audit trail of each finding, read back from the state store: when it opened, was alerted,
//! remediated, verified and resolved, and who made the change that caused it.
//!
//! The store keeps one audit record per invocation ([`crate::act::audit_record`]): the caller
//! of the event, the findings of the workspaces read, the actions taken and the alerts sent.
//! The trail replays them oldest first, following each finding's state: a finding that was not
//! open becomes *opened*; a remediation becomes *remediated* (and *verified* when its re-read
//! confirmed it); a finding marked resolved, or one a later read of its workspace no longer
//! raises, becomes *resolved*. Records from before a field existed still parse; what they do
//! not say is left out.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalogue::{Kind, RuleId};
use crate::intake::{Trigger, one_caller};
use crate::outcome::FindingState;
use crate::state::{AuditEntry, FindingKey, StateStore};
use crate::text::{FIELD, REASON, clean};

/// Who made the change an event reports, as the audit record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The caller's Entra object id.
    #[serde(default)]
    pub object_id: Option<String>,
    /// The caller's sign-in or display name, when the event carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Caller {
    /// The one caller of `triggers`; `None` when they name nobody or several people (an
    /// audit-log batch may), so the trail never blames the wrong one.
    pub fn of(triggers: &[Trigger]) -> Option<Self> {
        let object_id = one_caller(triggers.iter().map(|t| t.caller_object_id.as_deref()))?;
        Some(Self {
            object_id: Some(clean(object_id, FIELD).into_owned()),
            name: triggers
                .iter()
                .find_map(|t| t.caller_name.as_deref())
                .map(|name| clean(name, FIELD).into_owned()),
        })
    }
}

/// One step in a finding's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The finding was raised (again, after it was resolved).
    Opened,
    /// An alert about it went out.
    Alerted,
    /// cmk-guard applied its remediation.
    Remediated,
    /// The re-read after the remediation confirmed it.
    Verified,
    /// The remediation was tried and failed.
    RemediationFailed,
    /// `alert` mode: what the remediation would do (once per time the finding is open).
    RemediationPlanned,
    /// The remediation was not tried (budget spent, another instance at it).
    RemediationSkipped,
    /// The finding is no longer a problem.
    Resolved,
}

impl Step {
    /// The step's name, as the JSON writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Opened => "opened",
            Step::Alerted => "alerted",
            Step::Remediated => "remediated",
            Step::Verified => "verified",
            Step::RemediationFailed => "remediation-failed",
            Step::RemediationPlanned => "remediation-planned",
            Step::RemediationSkipped => "remediation-skipped",
            Step::Resolved => "resolved",
        }
    }
}

/// One entry of the trail. Field names are stable (docs/state.md *History*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub workspace: String,
    pub rule: String,
    pub resource: String,
    pub step: Step,
    /// The object id of who made the change that caused it, when the event said.
    pub caller: Option<String>,
    /// That caller's sign-in or display name, when the audit record has one.
    pub caller_name: Option<String>,
    pub detail: String,
}

/// The trail of every finding read, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// The trail of `workspace` (every workspace when `None`).
    pub async fn load(
        store: &dyn StateStore,
        workspace: Option<&str>,
    ) -> crate::state::Result<Self> {
        let records = store.audit_since(OffsetDateTime::UNIX_EPOCH).await?;
        Ok(Self::replay(&records, workspace))
    }

    /// The trail the audit records tell, oldest first, of `workspace` (every one when `None`).
    pub fn replay(records: &[AuditEntry], workspace: Option<&str>) -> Self {
        let mut replay = Replay::default();
        for entry in records {
            // Records of other workspaces are skipped before they are parsed.
            if workspace.is_some_and(|w| !names_workspace(&entry.record, w)) {
                continue;
            }
            let Ok(record) = Record::deserialize(&entry.record) else {
                continue;
            };
            replay.record(entry.at, &record, workspace);
        }
        Self {
            entries: replay.entries,
        }
    }

    /// The entries of one finding, oldest first.
    pub fn of_finding<'a>(&'a self, key: &'a FindingKey) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| {
            e.rule == key.rule
                && e.workspace.eq_ignore_ascii_case(&key.workspace)
                && e.resource.eq_ignore_ascii_case(&key.resource)
        })
    }

    /// When the finding's current episode began: its last *opened* step.
    pub fn first_seen(&self, key: &FindingKey) -> Option<OffsetDateTime> {
        self.of_finding(key)
            .filter(|e| e.step == Step::Opened)
            .map(|e| e.at)
            .last()
    }
}

/// Whether an audit record lists `workspace` among those it read, or has a finding of it.
fn names_workspace(record: &serde_json::Value, workspace: &str) -> bool {
    let is = |w: &serde_json::Value| {
        w.as_str()
            .is_some_and(|w| w.eq_ignore_ascii_case(workspace))
    };
    record["workspaces"]
        .as_array()
        .is_some_and(|list| list.iter().any(is))
        || record["findings"]
            .as_array()
            .is_some_and(|list| list.iter().any(|f| is(&f["workspace"])))
}

/// An audit record as the trail reads it; every field may be missing in older records.
#[derive(Debug, Default, Deserialize)]
struct Record {
    #[serde(default)]
    caller: Option<Caller>,
    #[serde(default)]
    workspaces: Vec<String>,
    #[serde(default)]
    findings: Vec<RecordFinding>,
    #[serde(default)]
    actions: Vec<RecordAction>,
    #[serde(default)]
    alerted: Vec<RecordAlert>,
}

#[derive(Debug, Deserialize)]
struct RecordFinding {
    /// Absent before the trail: then the record's only workspace.
    #[serde(default)]
    workspace: Option<String>,
    rule: String,
    resource: String,
    state: FindingState,
    #[serde(default)]
    observed: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RecordAction {
    kind: String,
    rule: String,
    target: String,
    result: String,
    detail: String,
}

#[derive(Debug, Deserialize)]
struct RecordAlert {
    workspace: String,
    rule: String,
    resource: String,
    channel: String,
}

/// The replay's memory: which findings are open, and which already had a planned remediation
/// noted in this episode (`alert` mode plans again on every look).
#[derive(Default)]
struct Replay {
    open: HashSet<FindingKey>,
    planned: HashSet<FindingKey>,
    entries: Vec<Entry>,
}

impl Replay {
    fn record(&mut self, at: OffsetDateTime, record: &Record, only: Option<&str>) {
        let caller = record.caller.clone().unwrap_or_default();
        let push = |entries: &mut Vec<Entry>, key: &FindingKey, step: Step, detail: &str| {
            entries.push(Entry {
                at,
                workspace: clean(&key.workspace, REASON).into_owned(),
                rule: clean(&key.rule, FIELD).into_owned(),
                resource: clean(&key.resource, REASON).into_owned(),
                step,
                caller: caller
                    .object_id
                    .as_deref()
                    .map(|c| clean(c, FIELD).into_owned()),
                caller_name: caller.name.as_deref().map(|c| clean(c, FIELD).into_owned()),
                detail: clean(detail, REASON).into_owned(),
            });
        };
        let only_workspace = (record.workspaces.len() == 1).then(|| &record.workspaces[0]);
        let mut seen: HashSet<FindingKey> = HashSet::new();
        // An older record of several workspaces does not say whose its findings are: what it
        // does not list cannot be taken as resolved.
        let mut unattributed = false;
        for finding in &record.findings {
            let Some(workspace) = finding.workspace.as_ref().or(only_workspace) else {
                unattributed = true;
                continue;
            };
            if only.is_some_and(|w| !workspace.eq_ignore_ascii_case(w)) {
                continue;
            }
            let key = FindingKey {
                workspace: workspace.clone(),
                rule: finding.rule.clone(),
                resource: finding.resource.clone(),
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let remediations: Vec<&RecordAction> = record
                .actions
                .iter()
                .filter(|a| {
                    a.kind == "remediate"
                        && a.rule == finding.rule
                        && a.target.eq_ignore_ascii_case(&finding.resource)
                })
                .collect();
            let failing = finding.state == FindingState::Open
                || remediations.iter().any(|a| a.result == "applied");
            if failing && !self.open.contains(&key) {
                let observed = finding.observed.as_deref().unwrap_or("the rule fails");
                push(&mut self.entries, &key, Step::Opened, observed);
                self.open.insert(key.clone());
                self.planned.remove(&key);
            }
            for action in remediations {
                match action.result.as_str() {
                    "applied" => {
                        let (done, verified) = match action.detail.split_once("; verified: ") {
                            Some((done, verified)) => (done, Some(verified)),
                            None => (action.detail.as_str(), None),
                        };
                        push(&mut self.entries, &key, Step::Remediated, done);
                        if let Some(verified) = verified {
                            push(&mut self.entries, &key, Step::Verified, verified);
                        }
                    }
                    "failed" => {
                        push(
                            &mut self.entries,
                            &key,
                            Step::RemediationFailed,
                            &action.detail,
                        );
                    }
                    "planned" if self.planned.insert(key.clone()) => {
                        push(
                            &mut self.entries,
                            &key,
                            Step::RemediationPlanned,
                            &action.detail,
                        );
                    }
                    "skipped" => {
                        push(
                            &mut self.entries,
                            &key,
                            Step::RemediationSkipped,
                            &action.detail,
                        );
                    }
                    _ => {}
                }
            }
            if finding.state == FindingState::Resolved && self.open.remove(&key) {
                push(&mut self.entries, &key, Step::Resolved, "resolved");
                self.planned.remove(&key);
            }
            self.alerts(record, &key, &push);
        }
        // A finding of a workspace read again that the read no longer raises is resolved (only
        // rules over the standing state: an event's finding is not undone by a later read).
        let mut gone: Vec<FindingKey> = self
            .open
            .iter()
            .filter(|key| !unattributed && !seen.contains(*key))
            .filter(|key| {
                record
                    .workspaces
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(&key.workspace))
            })
            .filter(|key| RuleId::parse(&key.rule).is_some_and(|r| r.entry().kind == Kind::State))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            self.open.remove(&key);
            self.planned.remove(&key);
            push(
                &mut self.entries,
                &key,
                Step::Resolved,
                "the rule passes on a new read",
            );
            self.alerts(record, &key, &push);
        }
    }

    /// The alerts `record` sent about `key`, one entry per channel.
    fn alerts(
        &mut self,
        record: &Record,
        key: &FindingKey,
        push: &impl Fn(&mut Vec<Entry>, &FindingKey, Step, &str),
    ) {
        let mut channels: HashSet<&str> = HashSet::new();
        for alert in record.alerted.iter().filter(|a| {
            a.rule == key.rule
                && a.workspace.eq_ignore_ascii_case(&key.workspace)
                && a.resource.eq_ignore_ascii_case(&key.resource)
        }) {
            if channels.insert(alert.channel.as_str()) {
                push(
                    &mut self.entries,
                    key,
                    Step::Alerted,
                    &format!("sent to {}", alert.channel),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
    const OTHER: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/other";
    const KV: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
    const RULE: &str = "vault.purge-protection";

    fn at(minute: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute)
    }

    fn entry(minute: i64, record: serde_json::Value) -> AuditEntry {
        AuditEntry {
            at: at(minute),
            record,
        }
    }

    fn steps(history: &History) -> Vec<(i64, &str, Option<&str>)> {
        history
            .entries
            .iter()
            .map(|e| {
                (
                    (e.at - at(0)).whole_minutes(),
                    e.step.as_str(),
                    e.caller.as_deref(),
                )
            })
            .collect()
    }

    fn finding(workspace: &str, state: &str) -> serde_json::Value {
        json!({"workspace": workspace, "rule": RULE, "resource": KV, "severity": "critical", "state": state, "observed": "purge protection is off"})
    }

    #[test]
    fn a_remediated_finding_opens_is_remediated_verified_alerted_and_resolved_with_its_caller() {
        let records = [
            entry(
                1,
                json!({"caller": {"object_id": "u-1", "name": "ada@contoso.example"}, "workspaces": [WS],
                "findings": [finding(WS, "resolved")],
                "actions": [
                    {"kind": "remediate", "rule": RULE, "target": KV, "result": "applied", "detail": "enabled purge protection; verified: purge protection is on"},
                    {"kind": "notify", "rule": RULE, "target": "teams", "result": "sent", "detail": "posted"}],
                "alerted": [{"workspace": WS, "rule": RULE, "resource": KV, "channel": "teams"}]}),
            ),
            // Read again, still fine: nothing new.
            entry(
                2,
                json!({"workspaces": [WS], "findings": [], "actions": []}),
            ),
        ];
        let history = History::replay(&records, Some(&WS.to_uppercase()));
        assert_eq!(
            steps(&history),
            [
                (1, "opened", Some("u-1")),
                (1, "remediated", Some("u-1")),
                (1, "verified", Some("u-1")),
                (1, "resolved", Some("u-1")),
                (1, "alerted", Some("u-1")),
            ]
        );
        assert_eq!(history.entries[0].detail, "purge protection is off");
        assert_eq!(history.entries[1].detail, "enabled purge protection");
        assert_eq!(history.entries[2].detail, "purge protection is on");
        assert_eq!(history.entries[4].detail, "sent to teams");
        assert_eq!(
            history.entries[0].caller_name.as_deref(),
            Some("ada@contoso.example")
        );
    }

    #[test]
    fn a_record_that_does_not_list_the_workspace_still_counts_for_its_findings() {
        // A sweep chunk's record written before its workspaces were listed (older versions).
        let records = [
            entry(
                1,
                json!({"workspaces": [], "findings": [finding(WS, "open"), finding(OTHER, "open")]}),
            ),
            entry(
                2,
                json!({"workspaces": [WS], "findings": [finding(WS, "resolved")]}),
            ),
        ];
        let history = History::replay(&records, Some(WS));
        assert_eq!(
            steps(&history),
            [(1, "opened", None), (2, "resolved", None)]
        );
        assert!(history.entries.iter().all(|e| e.workspace == WS));
    }

    #[test]
    fn a_finding_stays_open_until_a_read_no_longer_raises_it() {
        let open = |minute, caller: Option<&str>| {
            entry(
                minute,
                json!({"caller": caller.map(|c| json!({"object_id": c})), "workspaces": [WS], "findings": [finding(WS, "open")],
                "actions": [{"kind": "remediate", "rule": RULE, "target": KV, "result": "planned", "detail": "would enable"}]}),
            )
        };
        let records = [
            open(1, Some("u-1")),
            open(2, None),
            // Another workspace's read says nothing about this one.
            entry(3, json!({"workspaces": [OTHER], "findings": []})),
            entry(
                4,
                json!({"caller": {"object_id": "u-2"}, "workspaces": [WS], "findings": []}),
            ),
            open(5, Some("u-3")),
        ];
        let history = History::replay(&records, Some(WS));
        assert_eq!(
            steps(&history),
            [
                (1, "opened", Some("u-1")),
                (1, "remediation-planned", Some("u-1")),
                (4, "resolved", Some("u-2")),
                (5, "opened", Some("u-3")),
                (5, "remediation-planned", Some("u-3")),
            ]
        );
        let key = FindingKey {
            workspace: WS.into(),
            rule: RULE.into(),
            resource: KV.into(),
        };
        assert_eq!(history.first_seen(&key), Some(at(5)));
        assert_eq!(history.of_finding(&key).count(), 5);
    }

    #[test]
    fn records_are_filtered_by_workspace_and_old_or_unreadable_ones_are_tolerated() {
        let records = [
            // Before the trail: no workspace per finding, no caller, no observed text.
            entry(
                1,
                json!({"event": {}, "disposition": "evaluated", "workspaces": [WS],
                "findings": [{"rule": RULE, "resource": KV, "severity": "critical", "state": "open"}], "actions": []}),
            ),
            // Two workspaces and findings without one: whose they are is unknown.
            entry(
                2,
                json!({"workspaces": [WS, OTHER], "findings": [{"rule": "key.enabled", "resource": KV, "state": "open"}]}),
            ),
            entry(
                3,
                json!({"workspaces": [OTHER], "findings": [finding(OTHER, "open")]}),
            ),
            entry(4, json!({"workspaces": "not a list"})),
            entry(5, json!("not an object")),
        ];
        let history = History::replay(&records, Some(WS));
        assert_eq!(steps(&history), [(1, "opened", None)]);
        assert_eq!(history.entries[0].detail, "the rule fails");
        let all = History::replay(&records, None);
        assert_eq!(all.entries.len(), 2);
        assert!(all.entries[1].workspace.ends_with("/other"));
    }

    #[test]
    fn what_the_store_held_is_cleaned_and_bounded() {
        let hostile = format!("a\u{1b}[31mb{}", "x".repeat(3000));
        let records = [entry(
            1,
            json!({"caller": {"object_id": "u\n1", "name": hostile}, "workspaces": [WS],
            "findings": [{"workspace": WS, "rule": RULE, "resource": KV, "state": "open", "observed": hostile}]}),
        )];
        let history = History::replay(&records, None);
        let entry = &history.entries[0];
        assert_eq!(entry.caller.as_deref(), Some("u\\n1"));
        assert!(!entry.detail.contains('\u{1b}'));
        assert!(entry.detail.chars().count() <= 1000);
    }

    #[test]
    fn an_event_finding_is_not_resolved_by_a_later_read() {
        let tamper = json!({"workspace": WS, "rule": "managed-resources.tamper", "resource": KV, "state": "open"});
        let records = [
            entry(1, json!({"workspaces": [WS], "findings": [tamper]})),
            entry(2, json!({"workspaces": [WS], "findings": []})),
        ];
        assert_eq!(
            steps(&History::replay(&records, Some(WS))),
            [(1, "opened", None)]
        );
    }

    #[test]
    fn the_caller_is_named_only_when_every_trigger_agrees() {
        use crate::ids::ArmResourceId;
        use crate::intake::{ChangeKind, ResourceKind, Target};
        let trigger = |caller: Option<&str>| {
            let mut trigger = Trigger::new(
                "e".into(),
                "t",
                ChangeKind::Write,
                Target::Arm {
                    id: ArmResourceId::parse(KV).unwrap(),
                    kind: ResourceKind::Vault,
                },
            );
            trigger.caller_object_id = caller.map(str::to_owned);
            trigger.caller_name = Some("ada\u{1b}[2J".to_owned());
            trigger
        };
        assert_eq!(
            Caller::of(&[trigger(Some("u-1")), trigger(Some("U-1"))]),
            Some(Caller {
                object_id: Some("u-1".into()),
                name: Some("ada\\u{1b}[2J".into()),
            })
        );
        assert_eq!(
            Caller::of(&[trigger(Some("u-1")), trigger(Some("u-2"))]),
            None
        );
        assert_eq!(Caller::of(&[trigger(Some("u-1")), trigger(None)]), None);
    }
}
