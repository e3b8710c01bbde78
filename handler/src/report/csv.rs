//! One CSV row per finding, for spreadsheets (RFC 4180: a header row, CRLF between records, a
//! field quoted when it holds a comma, a quote or a line break, quotes doubled).
//!
//! Every cell is text from Azure, so every cell is defended against formula injection: a cell
//! that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with an
//! apostrophe, which spreadsheets take as "this is text" (OWASP's advice for CSV injection).
//! Controls are escaped and cells bounded as everywhere else ([`crate::text`]).

use std::collections::HashSet;

use time::format_description::well_known::Rfc3339;

use super::Context;
use crate::notify::advice;
use crate::outcome::{Finding, Outcome};
use crate::state::FindingKey;
use crate::text::{Limit, clean};

/// The header row.
pub const HEADER: [&str; 10] = [
    "workspace",
    "resource",
    "rule",
    "severity",
    "state",
    "observed",
    "expected",
    "first_seen",
    "doc",
    "exemption",
];

/// Longest cell.
const CELL: Limit = Limit::chars(2000);

/// The CSV of `outcomes`: every finding (open, resolved and exempted — state `exempted`, with
/// the exemption's reason), worst first. `first_seen` is when the finding (its current
/// episode) opened, from the audit trail when the context has one, else empty.
pub fn csv(outcomes: &[Outcome], context: &Context<'_>) -> String {
    let mut rows: Vec<(&Finding, Option<&str>)> = Vec::new();
    let mut seen = HashSet::new();
    let findings = outcomes
        .iter()
        .flat_map(|o| o.findings.iter().map(|f| (f, None)));
    let exempted = outcomes.iter().flat_map(|o| {
        o.exempted
            .iter()
            .map(|e| (&e.finding, Some(e.exemption_reason.as_str())))
    });
    for (finding, exemption) in findings.chain(exempted) {
        // The same finding reached through two events of one `evaluate` is one row.
        if seen.insert(super::sarif::fingerprint(finding)) {
            rows.push((finding, exemption));
        }
    }
    rows.sort_by(|(a, _), (b, _)| {
        b.severity
            .cmp(&a.severity)
            .then(a.workspace.cmp(&b.workspace))
            .then(a.rule.cmp(&b.rule))
            .then(a.resource.cmp(&b.resource))
    });
    let mut out = String::new();
    record(&mut out, HEADER.iter().copied());
    for (finding, exemption) in rows {
        let first_seen = first_seen(finding, context).unwrap_or_default();
        let state = if exemption.is_some() {
            "exempted"
        } else {
            finding.state.as_str()
        };
        record(
            &mut out,
            [
                finding.workspace.as_str(),
                finding.resource.as_str(),
                finding.rule.as_str(),
                finding.severity.as_str(),
                state,
                finding.observed.as_str(),
                finding.expected.as_str(),
                first_seen.as_str(),
                advice::doc(finding.rule, &finding.observed),
                exemption.unwrap_or_default(),
            ],
        );
    }
    out
}

/// When the finding's current episode began (its last *opened* step, as the HTML report
/// says), from the audit trail.
fn first_seen(finding: &Finding, context: &Context<'_>) -> Option<String> {
    let at = context.history?.first_seen(&FindingKey::of(finding))?;
    at.format(&Rfc3339).ok()
}

/// Appends one record and its CRLF.
fn record<'a>(out: &mut String, cells: impl IntoIterator<Item = &'a str>) {
    for (index, text) in cells.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&cell(text));
    }
    out.push_str("\r\n");
}

/// One field: cleaned, bounded, defended against formula injection, quoted when needed.
pub fn cell(text: &str) -> String {
    let clean = clean(text, CELL);
    let mut value = String::with_capacity(clean.len() + 3);
    if clean.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        value.push('\'');
    }
    value.push_str(&clean);
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::RuleId;
    use crate::history::{Entry, History, Step};
    use crate::outcome::{Disposition, EventRef, Exempted, FindingState, Severity};

    const WS: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";

    fn finding(rule: RuleId, severity: Severity) -> Finding {
        Finding {
            rule,
            resource: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
                .into(),
            workspace: WS.into(),
            severity,
            state: FindingState::Open,
            observed: "off".into(),
            expected: "on".into(),
        }
    }

    fn context(history: Option<&History>) -> Context<'_> {
        Context {
            generated: time::OffsetDateTime::UNIX_EPOCH,
            history,
        }
    }

    #[test]
    fn cells_are_quoted_and_defended() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        for dangerous in ["=HYPERLINK(\"x\")", "+1", "-1+2", "@SUM(A1)"] {
            assert!(
                cell(dangerous).trim_start_matches('"').starts_with('\''),
                "{dangerous}"
            );
        }
        assert_eq!(cell("=1+2"), "'=1+2");
        assert_eq!(
            cell("\tx"),
            "\\tx",
            "a tab is escaped, so it starts no cell"
        );
        assert_eq!(cell("a\nb"), "a\\nb", "no line break from outside text");
        assert!(cell(&"x".repeat(10_000)).chars().count() <= 2000);
    }

    #[test]
    fn one_row_per_finding_worst_first_with_the_first_seen_date() {
        let mut outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        outcome.findings = vec![
            finding(RuleId::KeyRotationPolicy, Severity::Low),
            finding(RuleId::VaultPurgeProtection, Severity::High),
        ];
        outcome.exempted.push(Exempted {
            finding: finding(RuleId::KeyExpirySet, Severity::Medium),
            exemption_reason: "=cmd|' /C calc'!A0".into(),
            exemption_expires: None,
        });
        let opened = finding(RuleId::VaultPurgeProtection, Severity::High);
        let history = History {
            entries: vec![Entry {
                at: time::macros::datetime!(2026-11-01 08:30 UTC),
                workspace: WS.to_uppercase(),
                rule: opened.rule.as_str().into(),
                resource: opened.resource.clone(),
                step: Step::Opened,
                caller: None,
                caller_name: None,
                detail: String::new(),
            }],
        };
        let text = csv(std::slice::from_ref(&outcome), &context(Some(&history)));
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "workspace,resource,rule,severity,state,observed,expected,first_seen,doc,exemption"
        );
        assert_eq!(lines.len(), 5, "header, three rows, the empty rest: {text}");
        assert!(
            lines[1].contains(",vault.purge-protection,high,open,off,on,2026-11-01T08:30:00Z,https://learn.microsoft.com/"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(",key.expiry-set,medium,exempted,"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(",'=cmd|' /C calc'!A0"), "{}", lines[2]);
        assert!(
            lines[3].contains(",key.rotation-policy,low,open,off,on,,"),
            "{}",
            lines[3]
        );
        let without_history = csv(&[outcome], &context(None));
        assert!(without_history.contains(",high,open,off,on,,https://"));
    }

    #[test]
    fn no_findings_is_the_header_alone() {
        let outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        assert_eq!(
            csv(&[outcome], &context(None)),
            format!("{}\r\n", HEADER.join(","))
        );
    }
}
