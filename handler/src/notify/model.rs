//! What an alert says, independent of the channel: one [`Notification`] per finding whose
//! state changed (or that is due a reminder), and a [`Digest`] for the sweep.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The advice table, also read by the reports (SARIF rule help, CSV and HTML doc links).
pub(crate) mod advice;
mod facts;

pub use facts::DependentCounts;

use crate::catalogue::RuleId;
use crate::ids::ArmResourceId;
use crate::outcome::{Action, ActionResult, Finding, FindingState, Severity};
pub use advice::Handling;
use advice::{advice, doc, fix_command};

/// How many findings a digest lists; the counts still cover all of them.
pub const DIGEST_WORST: usize = 50;

/// Why the alert is sent now. Alerts go out on a change of state only, plus reminders for
/// findings that stay open, so every alert tells the reader what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// The finding was not open before.
    New,
    /// The finding was open with a lower severity.
    Escalated { from: Severity },
    /// The finding is no longer a problem.
    Resolved,
    /// Still open after the reminder interval.
    Reminder,
}

impl Change {
    /// A short word for titles and subjects.
    pub fn label(&self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Escalated { .. } => "escalated",
            Change::Resolved => "resolved",
            Change::Reminder => "reminder",
        }
    }
}

/// What was done about a finding, or in `alert` mode what remediation would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionNote {
    pub result: ActionResult,
    pub detail: String,
}

/// One alert about one finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub workspace: String,
    pub resource: String,
    pub rule: String,
    pub severity: Severity,
    pub change: Change,
    pub observed: String,
    pub expected: String,
    pub action: Option<ActionNote>,
    /// The Azure portal page of the resource (or of the workspace when the resource is a key
    /// URL), when an ARM id is known.
    pub portal_url: Option<String>,
    /// What cmk-guard does about the finding under the policy ([`Notification::handled`]);
    /// absent in messages stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling: Option<Handling>,
    /// How many workspaces and other resources use the key or vault the finding is about
    /// (`who-uses`); absent when not a key or vault, or when Resource Graph did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependents: Option<DependentCounts>,
}

impl Notification {
    /// The alert for `finding`. `tenant` (a directory id or domain) makes the portal link open
    /// in the right directory for people who belong to several.
    pub fn from_finding(finding: &Finding, change: Change, tenant: Option<&str>) -> Self {
        let change = match (finding.state, change) {
            (FindingState::Resolved, _) => Change::Resolved,
            (FindingState::Open, change) => change,
        };
        let portal_url = portal_url(&finding.resource, tenant)
            .or_else(|| portal_url(&finding.workspace, tenant));
        Self {
            workspace: finding.workspace.clone(),
            resource: finding.resource.clone(),
            rule: finding.rule.to_string(),
            severity: finding.severity,
            change,
            observed: finding.observed.clone(),
            expected: finding.expected.clone(),
            action: None,
            portal_url,
            handling: None,
            dependents: None,
        }
    }

    /// Records what cmk-guard does about the finding: `allowed` when the policy allows its
    /// remediation (`Policy::allows_remediation`), `remediating` in `remediate` mode.
    pub fn handled(mut self, allowed: bool, remediating: bool) -> Self {
        self.handling = Some(Handling::of(allowed, remediating));
        self
    }

    /// What cmk-guard does, as one sentence that every message about the finding repeats:
    /// from the policy when known, else from the action taken or planned, else from the
    /// catalogue.
    pub fn does(&self) -> &'static str {
        if self.change == Change::Resolved {
            return "Nothing left to do.";
        }
        let handling = self.handling.or_else(|| {
            self.action.as_ref().and_then(|note| match note.result {
                ActionResult::Planned => Some(Handling::WouldFix),
                ActionResult::Applied | ActionResult::Skipped | ActionResult::Failed => {
                    Some(Handling::Fixes)
                }
                ActionResult::Sent | ActionResult::Suppressed => None,
            })
        });
        match (handling, self.rule_id()) {
            (Some(handling), _) => handling.sentence(),
            (None, Some(rule)) if !rule.is_remediable() => Handling::NeedsPerson.sentence(),
            (None, _) => "cmk-guard fixes this only when the policy allows its remediation.",
        }
    }

    /// The rule, when the id is one of the catalogue's.
    pub fn rule_id(&self) -> Option<RuleId> {
        RuleId::parse(&self.rule)
    }

    /// The problem in plain words ("purge protection is off on the key vault").
    pub fn problem(&self) -> &str {
        self.rule_id()
            .map_or(self.rule.as_str(), |rule| advice(rule).problem)
    }

    /// Why the finding matters, one sentence.
    pub fn why(&self) -> Option<&'static str> {
        self.rule_id().map(|rule| advice(rule).why)
    }

    /// The `az` command that fixes it, with the real names, where one exists.
    pub fn fix_command(&self) -> Option<String> {
        if self.change == Change::Resolved {
            return None;
        }
        fix_command(
            self.rule_id()?,
            &self.resource,
            &self.observed,
            &self.workspace,
        )
    }

    /// The Microsoft documentation section about the fix.
    pub fn doc_url(&self) -> Option<&'static str> {
        self.rule_id().map(|rule| doc(rule, &self.observed))
    }

    /// The portal link, opened on the rule's blade when the link is the resource's own.
    pub fn portal_blade_url(&self) -> Option<String> {
        let url = self.portal_url.as_ref()?;
        let blade = self.rule_id().and_then(|rule| advice(rule).blade);
        match blade {
            // Blades are the vault's: a key URL links to the workspace, which has none.
            Some(blade)
                if ArmResourceId::parse(&self.resource)
                    .is_ok_and(|id| id.is_type("Microsoft.KeyVault/vaults")) =>
            {
                Some(format!("{url}/{blade}"))
            }
            _ => Some(url.clone()),
        }
    }

    /// `Critical · new: purge protection is off on the key vault (kv1)`.
    pub fn headline(&self) -> String {
        let change = match self.change {
            Change::Escalated { from } => format!("escalated from {}", severity_label(from)),
            Change::Resolved => {
                return format!("Resolved: {} ({})", self.problem(), self.resource_name());
            }
            other => other.label().to_owned(),
        };
        format!(
            "{} · {change}: {} ({})",
            self.severity_label(),
            self.problem(),
            self.resource_name()
        )
    }

    /// Adds the remediation taken (or planned, in `alert` mode) for this finding.
    pub fn with_action(mut self, action: &Action) -> Self {
        self.action = Some(ActionNote {
            result: action.result,
            detail: action.detail.clone(),
        });
        self
    }

    /// The action as a sentence a reader can act on.
    pub fn action_text(&self) -> String {
        let Some(note) = &self.action else {
            return if self.change == Change::Resolved {
                "none needed".to_owned()
            } else {
                "no automatic remediation; fix it by hand".to_owned()
            };
        };
        let prefix = match note.result {
            ActionResult::Applied => "remediated",
            ActionResult::Planned => "would remediate (not applied in this mode)",
            ActionResult::Skipped => "remediation skipped",
            ActionResult::Failed => "remediation failed",
            ActionResult::Sent | ActionResult::Suppressed => "noted",
        };
        if note.detail.trim().is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}: {}", note.detail)
        }
    }

    /// `Critical`, `High`, … for titles.
    pub fn severity_label(&self) -> &'static str {
        severity_label(self.severity)
    }

    /// The last segment of the resource (vault, key or workspace name), for short titles.
    pub fn resource_name(&self) -> &str {
        short_name(&self.resource)
    }

    /// The workspace's name, for short titles.
    pub fn workspace_name(&self) -> &str {
        short_name(&self.workspace)
    }
}

/// The findings in the order a person reads them: open before resolved, worst first, then by
/// rule, workspace and resource.
pub fn worst_first(notifications: &[Notification]) -> Vec<&Notification> {
    let mut ordered: Vec<&Notification> = notifications.iter().collect();
    ordered.sort_by(|a, b| {
        (a.change == Change::Resolved)
            .cmp(&(b.change == Change::Resolved))
            .then_with(|| b.severity.cmp(&a.severity))
            .then_with(|| rule_order(a).cmp(&rule_order(b)))
            .then_with(|| a.workspace.cmp(&b.workspace))
            .then_with(|| a.resource.cmp(&b.resource))
    });
    ordered
}

/// The catalogue's order of rules (unknown ids last, by name).
fn rule_order(n: &Notification) -> (usize, &str) {
    let index = n
        .rule_id()
        .and_then(|rule| RuleId::ALL.iter().position(|r| *r == rule))
        .unwrap_or(RuleId::ALL.len());
    (index, n.rule.as_str())
}

/// `3 CMK problems` / `1 CMK problem`.
pub fn problems(count: usize) -> String {
    if count == 1 {
        "1 CMK problem".to_owned()
    } else {
        format!("{count} CMK problems")
    }
}

/// The title and subject of a message about `notifications`: the workspace by name (or how
/// many workspaces), how many problems, the worst severity; a resolved-only message says so.
/// E.g. `mlw-cmk-prod: 3 CMK problems, worst Critical`.
pub fn headline(notifications: &[Notification]) -> String {
    let mut workspaces: Vec<&str> = notifications.iter().map(|n| n.workspace.as_str()).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let subject = match workspaces.as_slice() {
        [one] => short_name(one).to_owned(),
        many => format!("{} workspaces", many.len()),
    };
    let open: Vec<&Notification> = notifications
        .iter()
        .filter(|n| n.change != Change::Resolved)
        .collect();
    let resolved = notifications.len() - open.len();
    match open.iter().map(|n| n.severity).max() {
        None => format!("{subject}: {} resolved", problems(resolved)),
        Some(worst) if resolved == 0 => format!(
            "{subject}: {}, worst {}",
            problems(open.len()),
            severity_label(worst)
        ),
        Some(worst) => format!(
            "{subject}: {}, worst {}; {resolved} resolved",
            problems(open.len()),
            severity_label(worst)
        ),
    }
}

/// `Critical`, `High`, `Medium`, `Low`.
pub fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
    }
}

fn short_name(id: &str) -> &str {
    let trimmed = id.trim_end_matches('/');
    // Key URLs end in `/keys/{name}[/{version}]`; show the key name, not the version.
    if let Some((_, rest)) = trimmed.split_once("/keys/") {
        return rest.split('/').next().unwrap_or(rest);
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// `https://portal.azure.com/#@{tenant}/resource{armId}`, when `id` is an ARM id. Each path
/// segment is percent-encoded so a hostile name cannot leave the fragment.
fn portal_url(id: &str, tenant: Option<&str>) -> Option<String> {
    use crate::cloud::PUBLIC_PORTAL;
    let parsed = ArmResourceId::parse(id).ok()?;
    let path: String = parsed
        .as_str()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            format!(
                "/{}",
                percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT)
            )
        })
        .collect();
    let tenant = tenant.map(str::trim).filter(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    });
    Some(match tenant {
        Some(tenant) => format!("{PUBLIC_PORTAL}/#@{tenant}/resource{path}"),
        None => format!("{PUBLIC_PORTAL}/#resource{path}"),
    })
}

/// Everything but unreserved characters is encoded in a portal path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The sweep's summary: counts by severity over every open finding, and the worst ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Open findings per severity, worst first; severities without findings are left out.
    pub open: Vec<(Severity, usize)>,
    pub resolved: usize,
    /// Distinct workspaces with at least one open finding.
    pub workspaces: usize,
    /// The worst open findings (at most [`DIGEST_WORST`]), worst severity first.
    pub worst: Vec<Notification>,
    /// Open findings not listed in `worst`.
    pub omitted: usize,
}

impl Digest {
    /// Summarises the sweep's notifications (open ones and those resolved since the last
    /// sweep).
    pub fn from_notifications(notifications: Vec<Notification>) -> Self {
        let (resolved, mut open): (Vec<_>, Vec<_>) = notifications
            .into_iter()
            .partition(|n| n.change == Change::Resolved);
        open.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.workspace.cmp(&b.workspace))
                .then_with(|| a.rule.cmp(&b.rule))
        });
        let counts = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ]
        .into_iter()
        .map(|s| (s, open.iter().filter(|n| n.severity == s).count()))
        .filter(|(_, count)| *count > 0)
        .collect();
        let mut workspaces: Vec<&str> = open.iter().map(|n| n.workspace.as_str()).collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        let workspaces = workspaces.len();
        let omitted = open.len().saturating_sub(DIGEST_WORST);
        open.truncate(DIGEST_WORST);
        Self {
            open: counts,
            resolved: resolved.len(),
            workspaces,
            worst: open,
            omitted,
        }
    }

    /// All open findings, listed or not.
    pub fn open_total(&self) -> usize {
        self.open.iter().map(|(_, count)| count).sum()
    }

    /// The worst severity among open findings.
    pub fn worst_severity(&self) -> Option<Severity> {
        self.open.first().map(|(severity, _)| *severity)
    }

    /// Records what cmk-guard does about each listed finding, as [`Notification::handled`]:
    /// `allowed` answers for a rule, `remediating` is the mode.
    pub fn handled(mut self, allowed: impl Fn(&Notification) -> bool, remediating: bool) -> Self {
        self.worst = self
            .worst
            .into_iter()
            .map(|n| {
                let allows = allowed(&n);
                n.handled(allows, remediating)
            })
            .collect();
        self
    }

    /// The sweep's title: `mlw-cmk-prod: 3 CMK problems, worst Critical` for one workspace,
    /// `4 workspaces: …` for several, `no open CMK problems` when all is well.
    pub fn headline(&self) -> String {
        let Some(worst) = self.worst_severity() else {
            return match self.resolved {
                0 => "cmk-guard sweep: no open CMK problems".to_owned(),
                resolved => format!("cmk-guard sweep: no open CMK problems; {resolved} resolved"),
            };
        };
        let subject = match (self.workspaces, self.worst.first()) {
            (1, Some(first)) => first.workspace_name().to_owned(),
            (count, _) => format!("{count} workspaces"),
        };
        format!(
            "{subject}: {}, worst {}",
            problems(self.open_total()),
            severity_label(worst)
        )
    }
}

/// What an alert is about: the findings that changed in one invocation, or the sweep digest.
#[derive(Debug, Clone, Copy)]
pub enum Alert<'a> {
    Changes(&'a [Notification]),
    Digest(&'a Digest),
}

impl Alert<'_> {
    /// The alert with every relative time ("expires … in 5 days") computed from `now`, the one
    /// clock of the message about to be rendered: findings evaluated seconds apart could
    /// otherwise say "in 5 days" and "in 4 days" about one key.
    pub fn relative_to(self, now: OffsetDateTime) -> OwnedAlert {
        let at = |n: &Notification| Notification {
            observed: relative_to(&n.observed, now),
            ..n.clone()
        };
        match self {
            Alert::Changes(notifications) => {
                OwnedAlert::Changes(notifications.iter().map(at).collect())
            }
            Alert::Digest(digest) => OwnedAlert::Digest(Digest {
                worst: digest.worst.iter().map(at).collect(),
                ..digest.clone()
            }),
        }
    }
}

/// An [`Alert`] that owns its findings, such as one with its times made relative to a clock.
#[derive(Debug, Clone)]
pub enum OwnedAlert {
    Changes(Vec<Notification>),
    Digest(Digest),
}

impl OwnedAlert {
    pub fn as_alert(&self) -> Alert<'_> {
        match self {
            OwnedAlert::Changes(notifications) => Alert::Changes(notifications),
            OwnedAlert::Digest(digest) => Alert::Digest(digest),
        }
    }
}

/// Rewrites each "expires at {RFC 3339}, in N days" (the rules' wording, `key.expiry`) with N
/// counted from `now`, and "expired at {RFC 3339}" once that time has passed.
fn relative_to(text: &str, now: OffsetDateTime) -> String {
    const MARK: &str = "expires at ";
    const SECONDS_PER_DAY: i64 = 86_400;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MARK) {
        let after = &rest[start + MARK.len()..];
        let parsed = after.split_once(", in ").and_then(|(at, tail)| {
            let expires = OffsetDateTime::parse(at, &Rfc3339).ok()?;
            let digits = tail.find(|c: char| !c.is_ascii_digit())?;
            let unit = tail[digits..]
                .strip_prefix(" days")
                .or_else(|| tail[digits..].strip_prefix(" day"))?;
            (digits > 0).then_some((at, expires, unit))
        });
        let Some((at, expires, unit_rest)) = parsed else {
            out.push_str(&rest[..start + MARK.len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..start]);
        let remaining = (expires - now).whole_seconds();
        if remaining <= 0 {
            out.push_str(&format!("expired at {at}"));
        } else {
            let days = remaining / SECONDS_PER_DAY;
            let when = match days {
                0 => "in less than a day".to_owned(),
                1 => "in 1 day".to_owned(),
                days => format!("in {days} days"),
            };
            out.push_str(&format!("{MARK}{at}, {when}"));
        }
        rest = unit_rest;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::ActionKind;

    pub(crate) const WORKSPACE: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ml/providers/Microsoft.MachineLearningServices/workspaces/ws1";
    pub(crate) const VAULT: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ml/providers/Microsoft.KeyVault/vaults/kv1";

    pub(crate) fn finding(severity: Severity, resource: &str) -> Finding {
        Finding {
            rule: crate::catalogue::RuleId::VaultPurgeProtection,
            resource: resource.into(),
            workspace: WORKSPACE.into(),
            severity,
            state: FindingState::Open,
            observed: "enablePurgeProtection is false".into(),
            expected: "enablePurgeProtection is true".into(),
        }
    }

    #[test]
    fn links_to_the_resource_in_the_tenant() {
        let n = Notification::from_finding(
            &finding(Severity::High, VAULT),
            Change::New,
            Some("contoso.onmicrosoft.com"),
        );
        assert_eq!(
            n.portal_url.as_deref(),
            Some(
                "https://portal.azure.com/#@contoso.onmicrosoft.com/resource/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/ml/providers/Microsoft.KeyVault/vaults/kv1"
            )
        );
        assert_eq!(n.resource_name(), "kv1");
        assert_eq!(n.workspace_name(), "ws1");
    }

    #[test]
    fn key_urls_link_to_the_workspace_and_show_the_key_name() {
        let n = Notification::from_finding(
            &finding(
                Severity::Critical,
                "https://kv1.vault.azure.net/keys/cmk/0123abcd",
            ),
            Change::Reminder,
            None,
        );
        assert_eq!(
            n.portal_url.as_deref(),
            Some(format!("https://portal.azure.com/#resource{WORKSPACE}").as_str())
        );
        assert_eq!(n.resource_name(), "cmk");
    }

    #[test]
    fn hostile_names_cannot_leave_the_link() {
        // Not an ARM id at all (ids hold no quotes or angle brackets), so no link.
        let hostile = format!("{VAULT}\"><x>(evil)");
        assert_eq!(portal_url(&hostile, None), None);
        // What ids may hold is still encoded, and a hostile tenant is left out.
        let url = portal_url(&format!("{VAULT}(eu)"), Some("t\"><script>")).unwrap();
        assert_eq!(
            url,
            format!("https://portal.azure.com/#resource{VAULT}%28eu%29")
        );
    }

    #[test]
    fn resolved_findings_are_resolved_changes_and_actions_read_as_sentences() {
        let mut f = finding(Severity::High, VAULT);
        f.state = FindingState::Resolved;
        let n = Notification::from_finding(&f, Change::New, None);
        assert_eq!(n.change, Change::Resolved);
        assert_eq!(n.action_text(), "none needed");
        let planned =
            Notification::from_finding(&finding(Severity::High, VAULT), Change::New, None)
                .with_action(&Action {
                    kind: ActionKind::Remediate,
                    rule: "vault.purge-protection".into(),
                    target: VAULT.into(),
                    result: ActionResult::Planned,
                    detail: "PATCH enablePurgeProtection=true".into(),
                });
        assert_eq!(
            planned.action_text(),
            "would remediate (not applied in this mode): PATCH enablePurgeProtection=true"
        );
    }

    #[test]
    fn relative_times_come_from_the_messages_clock() {
        let now = OffsetDateTime::parse("2026-12-03T12:00:00Z", &Rfc3339).unwrap();
        let text = "the key cmk expires at 2026-12-08T11:00:00Z, in 5 days; pinned";
        assert_eq!(
            relative_to(text, now),
            "the key cmk expires at 2026-12-08T11:00:00Z, in 4 days; pinned"
        );
        assert_eq!(
            relative_to("expires at 2026-12-04T11:00:00Z, in 1 day", now),
            "expires at 2026-12-04T11:00:00Z, in less than a day"
        );
        assert_eq!(
            relative_to("the key expires at 2026-12-01T00:00:00Z, in 2 days", now),
            "the key expired at 2026-12-01T00:00:00Z"
        );
        assert_eq!(relative_to("expires at soon", now), "expires at soon");
        let mut f = finding(Severity::Medium, VAULT);
        f.observed = text.into();
        let notes = [Notification::from_finding(&f, Change::New, None)];
        let owned = Alert::Changes(&notes).relative_to(now);
        let Alert::Changes(rendered) = owned.as_alert() else {
            panic!("changes stay changes")
        };
        assert!(rendered[0].observed.contains("in 4 days"));
    }

    #[test]
    fn digest_counts_all_and_lists_the_worst() {
        let mut notifications = Vec::new();
        for i in 0..60 {
            let severity = if i % 3 == 0 {
                Severity::Critical
            } else {
                Severity::Medium
            };
            notifications.push(Notification::from_finding(
                &finding(severity, VAULT),
                Change::Reminder,
                None,
            ));
        }
        let mut resolved = finding(Severity::Low, VAULT);
        resolved.state = FindingState::Resolved;
        notifications.push(Notification::from_finding(&resolved, Change::New, None));
        let digest = Digest::from_notifications(notifications);
        assert_eq!(
            digest.open,
            vec![(Severity::Critical, 20), (Severity::Medium, 40)]
        );
        assert_eq!(digest.open_total(), 60);
        assert_eq!(digest.resolved, 1);
        assert_eq!(digest.workspaces, 1);
        assert_eq!(digest.worst.len(), DIGEST_WORST);
        assert_eq!(digest.omitted, 10);
        assert_eq!(digest.worst[0].severity, Severity::Critical);
        assert_eq!(digest.worst_severity(), Some(Severity::Critical));
    }
}
