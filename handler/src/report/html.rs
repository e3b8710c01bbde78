//! A self-contained, printable HTML compliance report, for auditors: a summary by severity, by
//! rule and by workspace, then each finding with what was observed and expected, when it was
//! first seen and what was done about it (from the audit trail, when the CLI read a state
//! store), and how to fix it — the same words, `az` command and Microsoft doc link the alerts
//! give ([`crate::notify::Notification`]).
//!
//! One file: the CSS is inline, there is no script and nothing is fetched, so it opens offline
//! and can be archived as it is. Every piece of text from Azure, the store or the policy is
//! HTML-escaped ([`crate::notify::escape::html`]); the only links are the advice table's fixed
//! Microsoft doc URLs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Context, short_name};
use crate::history::Entry;
use crate::notify::escape::html as escape;
use crate::notify::{Change, Notification};
use crate::outcome::{Disposition, Finding, FindingState, Outcome, Severity};
use crate::state::FindingKey;

/// Inline, with print rules: each finding stays on one page where it fits, the findings start
/// on a new page, links print their address.
const STYLE: &str = r#"
:root { color-scheme: light; --critical: #a4262c; --high: #d83b01; --medium: #986f0b; --low: #605e5c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 "Segoe UI", system-ui, -apple-system, sans-serif; color: #201f1e; margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; border-bottom: 2px solid #edebe9; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 16px; margin: 0 0 8px; }
h4 { font-size: 14px; margin: 12px 0 4px; }
.meta { color: #605e5c; margin: 0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid #edebe9; overflow-wrap: anywhere; }
th { background: #f3f2f1; font-weight: 600; }
td.n, th.n { text-align: right; width: 6em; }
table.history td:nth-child(-n+3), table.history th { white-space: nowrap; overflow-wrap: normal; }
.summary { display: grid; grid-template-columns: 1fr 2fr; gap: 0 24px; }
.summary > div:last-child { grid-column: 1 / -1; }
.badge { display: inline-block; white-space: nowrap; min-width: 5.5em; text-align: center; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; text-transform: uppercase; }
.critical { background: var(--critical); } .high { background: var(--high); } .medium { background: var(--medium); } .low { background: var(--low); }
.state { color: #605e5c; font-weight: 400; font-size: 13px; }
article { border: 1px solid #e1dfdd; border-left: 6px solid var(--low); border-radius: 4px; padding: 12px 16px; margin: 12px 0; }
article.sev-critical { border-left-color: var(--critical); } article.sev-high { border-left-color: var(--high); } article.sev-medium { border-left-color: var(--medium); }
article.resolved { opacity: .8; }
dl { display: grid; grid-template-columns: 9em 1fr; gap: 2px 12px; margin: 0; }
dt { color: #605e5c; } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f3f2f1; padding: 8px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; font: 12px/1.4 Consolas, "Cascadia Mono", monospace; }
.none { color: #605e5c; font-style: italic; }
footer { margin-top: 32px; color: #605e5c; font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  #findings { break-before: page; }
  article, tr, .summary > div { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  a[href]::after { content: " (" attr(href) ")"; font-size: 9pt; color: #605e5c; }
  .badge { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
@page { margin: 16mm; }
"#;

/// The HTML report of `outcomes`.
pub fn html(outcomes: &[Outcome], context: &Context<'_>) -> String {
    let findings = ordered(outcomes);
    let open: Vec<&Finding> = findings
        .iter()
        .copied()
        .filter(|f| f.state == FindingState::Open)
        .collect();
    let workspaces: usize = outcomes.iter().map(|o| o.workspaces.len()).sum();
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<title>cmk-guard compliance report</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<header>\n<h1>cmk-guard compliance report</h1>\n");
    let _ = writeln!(
        out,
        "<p class=\"meta\">Generated {} · {} open finding(s) in {workspaces} workspace(s) read</p>",
        time_text(context.generated),
        open.len(),
    );
    let incomplete: Vec<String> = outcomes
        .iter()
        .filter(|o| o.disposition != Disposition::Evaluated)
        .map(Outcome::log_line)
        .collect();
    let unseen = open
        .iter()
        .filter(|f| f.rule == crate::rules::VISIBILITY)
        .count();
    if unseen > 0 {
        let _ = writeln!(
            out,
            "<p><strong>Incomplete:</strong> {unseen} thing(s) could not be read; the {} finding(s) below say what and what to grant. What could not be read may hide other findings.</p>",
            crate::rules::VISIBILITY
        );
    }
    out.push_str("</header>\n");
    summary(&mut out, &open, outcomes);
    out.push_str("<section id=\"findings\">\n<h2>Findings</h2>\n");
    if findings.is_empty() {
        out.push_str("<p class=\"none\">No findings: every workspace read meets the rules.</p>\n");
    }
    for finding in &findings {
        article(&mut out, finding, context);
    }
    out.push_str("</section>\n");
    exempted(&mut out, outcomes);
    if !incomplete.is_empty() {
        out.push_str("<section id=\"events\">\n<h2>Events not evaluated</h2>\n<ul>\n");
        for line in incomplete {
            let _ = writeln!(out, "<li>{}</li>", escape(&line));
        }
        out.push_str("</ul>\n</section>\n");
    }
    let _ = writeln!(
        out,
        "<footer>cmk-guard {} · rules and their sources: docs/rules.md · {}</footer>",
        env!("CARGO_PKG_VERSION"),
        if context.history.is_some() {
            "first seen and remediation history from the state store's audit trail"
        } else {
            "no state store was read (set CMKGUARD_STATE for first seen and remediation history)"
        }
    );
    out.push_str("</body>\n</html>\n");
    out
}

/// Every finding of `outcomes`, open before resolved, worst first, then by workspace, rule and
/// resource.
fn ordered(outcomes: &[Outcome]) -> Vec<&Finding> {
    let mut findings: Vec<&Finding> = outcomes.iter().flat_map(|o| &o.findings).collect();
    findings.sort_by(|a, b| {
        (a.state != FindingState::Open)
            .cmp(&(b.state != FindingState::Open))
            .then(b.severity.cmp(&a.severity))
            .then_with(|| a.workspace.cmp(&b.workspace))
            .then(a.rule.cmp(&b.rule))
            .then_with(|| a.resource.cmp(&b.resource))
    });
    findings
}

const SEVERITIES: [Severity; 4] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
];

/// The open findings counted by severity, by rule and by workspace (every workspace read, the
/// compliant ones with zeros).
fn summary(out: &mut String, open: &[&Finding], outcomes: &[Outcome]) {
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"summary\">\n");
    out.push_str("<div>\n<h3>By severity</h3>\n<table>\n<tr><th>Severity</th><th class=\"n\">Open</th></tr>\n");
    for severity in SEVERITIES {
        let count = open.iter().filter(|f| f.severity == severity).count();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{count}</td></tr>",
            badge(severity)
        );
    }
    out.push_str("</table>\n</div>\n");

    let mut by_rule: BTreeMap<&str, (String, Severity, usize)> = BTreeMap::new();
    for finding in open {
        let entry = by_rule.entry(finding.rule.as_str()).or_insert_with(|| {
            let note = Notification::from_finding(finding, Change::New, None);
            (note.problem().to_owned(), finding.severity, 0)
        });
        entry.1 = entry.1.max(finding.severity);
        entry.2 += 1;
    }
    out.push_str("<div>\n<h3>By rule</h3>\n<table>\n<tr><th>Rule</th><th>Problem</th><th>Worst</th><th class=\"n\">Open</th></tr>\n");
    if by_rule.is_empty() {
        out.push_str("<tr><td colspan=\"4\" class=\"none\">none</td></tr>\n");
    }
    for (rule, (problem, worst, count)) in &by_rule {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{count}</td></tr>",
            escape(rule),
            escape(problem),
            badge(*worst)
        );
    }
    out.push_str("</table>\n</div>\n");

    let mut by_workspace: BTreeMap<String, (&str, [usize; 4])> = outcomes
        .iter()
        .flat_map(|o| &o.workspaces)
        .map(|w| (w.to_ascii_lowercase(), (w.as_str(), [0; 4])))
        .collect();
    for finding in open {
        let entry = by_workspace
            .entry(finding.workspace.to_ascii_lowercase())
            .or_insert((finding.workspace.as_str(), [0; 4]));
        if let Some(index) = SEVERITIES.iter().position(|s| *s == finding.severity) {
            entry.1[index] += 1;
        }
    }
    out.push_str("<div>\n<h3>By workspace</h3>\n<table>\n<tr><th>Workspace</th>");
    for severity in SEVERITIES {
        let _ = write!(out, "<th class=\"n\">{}</th>", severity_label(severity));
    }
    out.push_str("</tr>\n");
    if by_workspace.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"none\">none</td></tr>\n");
    }
    for (workspace, counts) in by_workspace.values() {
        let _ = write!(
            out,
            "<tr><td title=\"{}\">{}</td>",
            escape(workspace),
            escape(short_name(workspace))
        );
        for count in counts {
            let _ = write!(out, "<td class=\"n\">{count}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n</div>\n</div>\n</section>\n");
}

/// One finding: what, where, since when, what was done, how to fix.
fn article(out: &mut String, finding: &Finding, context: &Context<'_>) {
    let note = Notification::from_finding(finding, Change::New, None);
    let open = finding.state == FindingState::Open;
    let _ = writeln!(
        out,
        "<article class=\"finding sev-{}{}\">",
        finding.severity.as_str(),
        if open { "" } else { " resolved" }
    );
    let _ = writeln!(
        out,
        "<h3>{} {} <span class=\"state\">· <code>{}</code> · {}</span></h3>",
        badge(finding.severity),
        escape(note.problem()),
        escape(finding.rule.as_str()),
        finding.state.as_str()
    );
    let key = FindingKey::of(finding);
    let first_seen = match context.history {
        Some(history) => history
            .first_seen(&key)
            .map_or_else(|| "not in the audit trail".to_owned(), time_text),
        None => "unknown (no state store read)".to_owned(),
    };
    out.push_str("<dl>\n");
    for (term, value) in [
        ("Workspace", finding.workspace.as_str()),
        ("Resource", finding.resource.as_str()),
        ("Observed", finding.observed.as_str()),
        ("Expected", finding.expected.as_str()),
        ("First seen", first_seen.as_str()),
        ("cmk-guard", note.does()),
    ] {
        let _ = writeln!(out, "<dt>{term}</dt><dd>{}</dd>", escape(value));
    }
    out.push_str("</dl>\n");
    if open {
        out.push_str("<h4>How to fix</h4>\n");
        if let Some(why) = note.why() {
            let _ = writeln!(out, "<p>{}</p>", escape(why));
        }
        match note.fix_command() {
            Some(command) => {
                let _ = writeln!(out, "<pre><code>{}</code></pre>", escape(&command));
            }
            None => out.push_str(
                "<p class=\"none\">No single command fixes this; follow the documentation.</p>\n",
            ),
        }
        if let Some(doc) = note.doc_url() {
            let _ = writeln!(
                out,
                "<p>Documentation: <a href=\"{0}\">{0}</a></p>",
                escape(doc)
            );
        }
    }
    out.push_str("<h4>Remediation history</h4>\n");
    match context.history {
        None => out.push_str("<p class=\"none\">No state store was read.</p>\n"),
        Some(history) => {
            let entries: Vec<&Entry> = history.of_finding(&key).collect();
            if entries.is_empty() {
                out.push_str("<p class=\"none\">Nothing recorded yet.</p>\n");
            } else {
                out.push_str(
                    "<table class=\"history\">\n<tr><th>Time</th><th>Step</th><th>Caller</th><th>Detail</th></tr>\n",
                );
                for entry in entries {
                    let caller = match (&entry.caller_name, &entry.caller) {
                        (Some(name), Some(id)) => format!("{name} ({id})"),
                        (Some(name), None) => name.clone(),
                        (None, Some(id)) => id.clone(),
                        (None, None) => "—".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        time_text(entry.at),
                        entry.step.as_str(),
                        escape(&caller),
                        escape(&entry.detail)
                    );
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</article>\n");
}

/// Failing checks a policy exemption covers: listed, not counted.
fn exempted(out: &mut String, outcomes: &[Outcome]) {
    let exempted: Vec<_> = outcomes.iter().flat_map(|o| &o.exempted).collect();
    if exempted.is_empty() {
        return;
    }
    out.push_str("<section id=\"exempted\">\n<h2>Exempted</h2>\n<table>\n<tr><th>Rule</th><th>Resource</th><th>Reason</th><th>Expires</th></tr>\n");
    for item in exempted {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(item.finding.rule.as_str()),
            escape(&item.finding.resource),
            escape(&item.exemption_reason),
            escape(item.exemption_expires.as_deref().unwrap_or("never"))
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn badge(severity: Severity) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        severity.as_str(),
        severity.as_str()
    )
}

fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
    }
}

/// RFC 3339 in UTC to the second: a report is read by people.
fn time_text(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RuleId;
    use crate::history::{History, Step};
    use crate::outcome::EventRef;

    const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws-1";
    const KV: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-1";

    fn finding(rule: RuleId, severity: Severity, resource: &str) -> Finding {
        Finding {
            rule,
            resource: resource.into(),
            workspace: WS.into(),
            severity,
            state: FindingState::Open,
            observed: "purge protection is off".into(),
            expected: "purge protection is on".into(),
        }
    }

    fn outcome(findings: Vec<Finding>) -> Outcome {
        let mut outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        outcome.workspaces = vec![WS.into()];
        outcome.findings = findings;
        outcome
    }

    fn context(history: Option<&History>) -> Context<'_> {
        Context {
            generated: OffsetDateTime::UNIX_EPOCH,
            history,
        }
    }

    #[test]
    fn each_finding_has_its_advice_command_doc_and_the_summary_counts_it() {
        let mut compliant = outcome(vec![]);
        compliant.workspaces = vec![format!("{WS}-compliant")];
        let report = html(
            &[
                outcome(vec![
                    finding(RuleId::KeyExpirySet, Severity::Medium, KV),
                    finding(RuleId::VaultPurgeProtection, Severity::Critical, KV),
                ]),
                compliant,
            ],
            &context(None),
        );
        assert!(report.starts_with("<!DOCTYPE html>"));
        assert!(report.contains(
            "az keyvault update --name kv-1 --resource-group rg --enable-purge-protection true"
        ));
        assert!(report.contains("https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview#purge-protection"));
        assert!(report.contains("2 open finding(s) in 2 workspace(s)"));
        assert!(report.contains(">ws-1-compliant</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td>"));
        // Worst first.
        let critical = report
            .find("<article class=\"finding sev-critical\">")
            .unwrap();
        let medium = report
            .find("<article class=\"finding sev-medium\">")
            .unwrap();
        assert!(critical < medium);
        assert!(report.contains("unknown (no state store read)"));
        for forbidden in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!report.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let hostile = "kv\"><script>alert(1)</script>'&";
        let mut bad = finding(
            RuleId::VaultPurgeProtection,
            Severity::High,
            &format!("{KV}{hostile}"),
        );
        bad.observed = hostile.into();
        bad.workspace = format!("{WS}{hostile}");
        let history = History {
            entries: vec![Entry {
                at: OffsetDateTime::UNIX_EPOCH,
                workspace: bad.workspace.clone(),
                rule: bad.rule.as_str().into(),
                resource: bad.resource.clone(),
                step: Step::Opened,
                caller: Some(hostile.into()),
                caller_name: Some(hostile.into()),
                detail: hostile.into(),
            }],
        };
        let report = html(&[outcome(vec![bad])], &context(Some(&history)));
        assert!(!report.contains("<script>"), "{report}");
        assert!(!report.contains("\"><"), "{report}");
        assert!(report.contains("&lt;script&gt;alert(1)&lt;/script&gt;&#39;&amp;"));
        assert!(report.contains("<td>opened</td>"));
        assert!(report.contains("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn the_history_gives_first_seen_and_the_steps() {
        let found = finding(RuleId::VaultPurgeProtection, Severity::Critical, KV);
        let at = |minutes| OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minutes);
        let entry = |minutes, step| Entry {
            at: at(minutes),
            workspace: WS.into(),
            rule: found.rule.as_str().into(),
            resource: KV.into(),
            step,
            caller: Some("u-1".into()),
            caller_name: None,
            detail: "detail".into(),
        };
        let history = History {
            entries: vec![
                entry(1, Step::Opened),
                entry(2, Step::Resolved),
                entry(3, Step::Opened),
            ],
        };
        let report = html(&[outcome(vec![found])], &context(Some(&history)));
        assert!(report.contains("<dt>First seen</dt><dd>1970-01-01T00:03:00Z</dd>"));
        assert_eq!(report.matches("<td>u-1</td>").count(), 3);
        let empty = html(&[outcome(vec![])], &context(None));
        assert!(empty.contains("No findings"));
        assert!(empty.contains("0 open finding(s)"));
    }
}
