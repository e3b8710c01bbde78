//! The fixed-width table of findings, for people at a terminal.

use crate::outcome::{Disposition, Finding, Outcome};
use crate::rules::VISIBILITY;

/// Longest cell text before it is cut with `…`.
const MAX_CELL: usize = 70;

/// A fixed-width table of the findings of `outcomes`, with a summary line. What could not be
/// read comes first, because it qualifies every other row (and a short table may be short only
/// because cmk-guard could not see); then the worst first. Below the summary, each unread
/// resource with the whole observation, whose advice (what to grant) a cell would cut.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut findings: Vec<_> = outcomes.iter().flat_map(|o| o.findings.iter()).collect();
    findings.sort_by(|a, b| {
        is_unseen(b)
            .cmp(&is_unseen(a))
            .then(b.severity.cmp(&a.severity))
            .then(a.workspace.cmp(&b.workspace))
            .then(a.rule.cmp(&b.rule))
    });
    for finding in &findings {
        rows.push([
            short_name(&finding.workspace).to_owned(),
            finding.rule.to_string(),
            finding.severity.as_str().to_owned(),
            cell(&finding.observed),
            cell(&finding.expected),
        ]);
    }
    let mut out = String::new();
    if !rows.is_empty() {
        out = columns(
            ["WORKSPACE", "RULE", "SEVERITY", "OBSERVED", "EXPECTED"],
            &rows,
        );
    }
    let workspaces: usize = outcomes.iter().map(|o| o.workspaces.len()).sum();
    let exempted: usize = outcomes.iter().map(|o| o.exempted.len()).sum();
    out.push_str(&format!(
        "{} finding(s) in {workspaces} workspace(s)",
        findings.len()
    ));
    if exempted > 0 {
        out.push_str(&format!(", {exempted} exempted"));
    }
    let unseen: Vec<&&Finding> = findings.iter().filter(|f| is_unseen(f)).collect();
    if !unseen.is_empty() {
        out.push_str("; incomplete, cmk-guard could not read:");
        for finding in unseen {
            let observed = single_line(&finding.observed);
            if observed.contains(&finding.resource) {
                out.push_str(&format!("\n  {observed}"));
            } else {
                out.push_str(&format!(
                    "\n  {}: {observed}",
                    single_line(&finding.resource)
                ));
            }
        }
    }
    for outcome in outcomes
        .iter()
        .filter(|o| o.disposition != Disposition::Evaluated)
    {
        out.push_str(&format!("\n{}", outcome.log_line()));
    }
    out.push('\n');
    out
}

/// `rows` under `header` in left-aligned columns two spaces apart, one line each.
pub(crate) fn columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The last segment of an ARM id or key URL: the name people know a resource by.
pub(crate) fn short_name(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// A `guard.visibility` finding: cmk-guard could not see something it must check.
fn is_unseen(finding: &Finding) -> bool {
    finding.rule == VISIBILITY
}

fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if crate::text::is_control(c) { ' ' } else { c })
        .collect()
}

fn cell(text: &str) -> String {
    let clean = single_line(text);
    if clean.chars().count() <= MAX_CELL {
        clean
    } else {
        format!("{}…", clean.chars().take(MAX_CELL - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{EventRef, Finding, FindingState, Severity};

    fn finding(rule: &str, severity: Severity) -> Finding {
        Finding {
            rule: crate::catalogue::RuleId::parse(rule).unwrap(),
            resource: "r".into(),
            workspace: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1".into(),
            severity,
            state: FindingState::Open,
            observed: "x".repeat(100),
            expected: "on".into(),
        }
    }

    #[test]
    fn worst_first_with_a_summary() {
        let mut outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        outcome.workspaces.push("ws1".into());
        outcome.findings = vec![
            finding("key.rotation-policy", Severity::Low),
            finding("vault.purge-protection", Severity::High),
        ];
        let text = table(&[outcome]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("WORKSPACE  RULE"));
        assert!(lines[1].starts_with("ws1        vault.purge-protection  high"));
        assert!(lines[2].contains("key.rotation-policy"));
        assert!(lines[1].contains('…'));
        assert_eq!(lines[3], "2 finding(s) in 1 workspace(s)");
    }

    #[test]
    fn what_could_not_be_read_comes_first_and_in_full() {
        let mut outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        outcome.workspaces.push("ws1".into());
        let mut unseen = finding(VISIBILITY, Severity::High);
        unseen.resource = "/subscriptions/s/x/kv".into();
        unseen.observed = format!(
            "could not read the vault: {}grant it Reader",
            "y".repeat(80)
        );
        outcome.findings = vec![finding("workspace.key-access", Severity::Critical), unseen];
        let text = table(&[outcome]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains(VISIBILITY), "{text}");
        assert!(lines[2].contains("workspace.key-access"), "{text}");
        assert_eq!(
            lines[3],
            "2 finding(s) in 1 workspace(s); incomplete, cmk-guard could not read:"
        );
        assert!(
            lines[4].starts_with("  /subscriptions/s/x/kv: could not read the vault: y")
                && lines[4].ends_with("grant it Reader"),
            "{text}"
        );
    }

    #[test]
    fn no_findings_is_one_line() {
        let outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        assert_eq!(table(&[outcome]), "0 finding(s) in 0 workspace(s)\n");
    }
}
