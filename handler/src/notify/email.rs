//! The email: a subject, a plain-text part and an HTML part with the same content, so every
//! mail client shows something readable. Every value from Azure is HTML-escaped in the HTML
//! part and kept to one line in the text part and the subject.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::escape::{bounded_line, html, single_line};
use super::model::{Alert, Change, Digest, Notification, headline, severity_label, worst_first};
use crate::outcome::Severity;

/// How many findings one email lists; the rest are counted.
pub const MAX_LISTED: usize = 100;
/// Longest subject, in characters.
const SUBJECT_CHARS: usize = 180;
/// Longest value of one field, in characters.
const FIELD_CHARS: usize = 2_000;

/// A rendered email, ready for ACS or SMTP and storable in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A stable Message-ID (`<…@cmk-guard>`) per workspace (or for the sweep digest) that
    /// every message about it refers to (`In-Reply-To`, `References`), so a mail client groups
    /// one workspace's alerts; absent in messages stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// What one email shows, whichever the alert.
struct Layout<'a> {
    subject: String,
    /// Label/value rows above the findings (a digest's counts).
    summary: Vec<(String, String)>,
    listed: Vec<&'a Notification>,
    /// Findings in the alert, listed or not.
    total: usize,
    /// What the thread id is derived from.
    thread: String,
}

/// The email for `alert`.
pub fn content(alert: Alert<'_>) -> EmailContent {
    let layout = match alert {
        Alert::Changes(notifications) => changes_layout(notifications),
        Alert::Digest(digest) => digest_layout(digest),
    };
    let subject = bounded_line(&format!("[cmk-guard] {}", layout.subject), SUBJECT_CHARS);
    let shown = &layout.listed[..layout.listed.len().min(MAX_LISTED)];
    let more = layout.total.saturating_sub(shown.len());
    EmailContent {
        text: text_part(&layout.subject, &layout.summary, shown, more),
        html: html_part(&subject, &layout.subject, &layout.summary, shown, more),
        subject,
        thread: Some(thread_id(&layout.thread)),
    }
}

/// `<{uuid v5 of the key}@cmk-guard>`: the same for every message of one workspace.
fn thread_id(key: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        key.to_ascii_lowercase().as_bytes(),
    );
    format!("<{id}@cmk-guard>")
}

fn changes_layout(notifications: &[Notification]) -> Layout<'_> {
    let mut workspaces: Vec<&str> = notifications.iter().map(|n| n.workspace.as_str()).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    Layout {
        subject: headline(notifications),
        summary: Vec::new(),
        listed: worst_first(notifications),
        total: notifications.len(),
        thread: format!("workspace|{}", workspaces.join("|")),
    }
}

fn digest_layout(digest: &Digest) -> Layout<'_> {
    Layout {
        subject: digest.headline(),
        summary: digest_summary(digest),
        listed: digest.worst.iter().collect(),
        total: digest.worst.len() + digest.omitted,
        thread: "digest".to_owned(),
    }
}

fn digest_summary(digest: &Digest) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = digest
        .open
        .iter()
        .map(|(s, n)| (severity_label(*s).to_owned(), n.to_string()))
        .collect();
    rows.push(("Resolved".to_owned(), digest.resolved.to_string()));
    rows.push(("Workspaces".to_owned(), digest.workspaces.to_string()));
    rows
}

/// The explanation of a finding, in reading order: label and text.
fn explained(n: &Notification) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    if n.change != Change::Resolved
        && let Some(why) = n.why()
    {
        rows.push(("Why it matters", why.to_owned()));
    }
    rows.push(("What cmk-guard does", n.does().to_owned()));
    if let Some(command) = n.fix_command() {
        rows.push(("How to fix", command));
    }
    rows
}

/// The facts of a finding: names first, full ids last.
fn fields(n: &Notification) -> Vec<(&'static str, String)> {
    n.facts()
        .into_iter()
        .map(|fact| (fact.label, fact.value))
        .collect()
}

fn links(n: &Notification) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    if let Some(url) = n.portal_blade_url() {
        rows.push(("Open in the Azure portal", url));
    }
    // A resolved finding needs no fix: no "how to fix" link.
    if n.change != Change::Resolved
        && let Some(url) = n.doc_url()
    {
        rows.push(("How to fix (Microsoft Learn)", url.to_owned()));
    }
    rows
}

fn field(value: &str) -> String {
    bounded_line(value, FIELD_CHARS)
}

fn text_part(
    heading: &str,
    summary: &[(String, String)],
    shown: &[&Notification],
    more: usize,
) -> String {
    let mut out = format!("{}\n", single_line(heading));
    for (name, value) in summary {
        let _ = writeln!(out, "{name}: {value}");
    }
    for n in shown {
        let _ = writeln!(out, "\n{}", field(&n.headline()));
        for (name, value) in explained(n).into_iter().chain(fields(n)) {
            let _ = writeln!(out, "  {name}: {}", field(&value));
        }
        for (name, url) in links(n) {
            let _ = writeln!(out, "  {name}: {url}");
        }
    }
    if more > 0 {
        let _ = writeln!(out, "\n+{more} more not shown");
    }
    out.push_str("\n-- \ncmk-guard: customer-managed key compliance for Azure Machine Learning\n");
    out
}

/// Inline colours: mail clients ignore style sheets.
fn hex(severity: Severity, change: Change) -> &'static str {
    if change == Change::Resolved {
        return "#2e7d32";
    }
    match severity {
        Severity::Critical => "#b3261e",
        Severity::High => "#b35c00",
        Severity::Medium => "#0b5cad",
        Severity::Low => "#2e7d32",
    }
}

fn html_part(
    subject: &str,
    heading: &str,
    summary: &[(String, String)],
    shown: &[&Notification],
    more: usize,
) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family:'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#222\">\n\
         <h2 style=\"margin:0 0 12px\">{}</h2>\n",
        html(subject),
        html(heading)
    );
    if !summary.is_empty() {
        out.push_str("<table style=\"border-collapse:collapse;margin-bottom:12px\">\n");
        for (name, value) in summary {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">{}</th><td>{}</td></tr>",
                html(name),
                html(value)
            );
        }
        out.push_str("</table>\n");
    }
    for n in shown {
        let colour = hex(n.severity, n.change);
        let _ = writeln!(
            out,
            "<table style=\"border-collapse:collapse;border-left:6px solid {colour};margin:12px 0\">\n\
             <tr><td colspan=\"2\" style=\"padding:4px 8px;font-weight:bold;color:{colour}\">{}</td></tr>",
            html(&field(&n.headline()))
        );
        for (name, value) in explained(n) {
            let style = if name == "How to fix" {
                "padding:2px 8px;font-family:Consolas,monospace;background:#f4f4f4"
            } else {
                "padding:2px 8px"
            };
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" valign=\"top\" style=\"padding:2px 8px\">{name}</th>\
                 <td style=\"{style}\">{}</td></tr>",
                html(&field(&value))
            );
        }
        for (name, value) in fields(n) {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" valign=\"top\" style=\"padding:2px 8px\">{name}</th>\
                 <td style=\"padding:2px 8px;font-family:Consolas,monospace\">{}</td></tr>",
                html(&field(&value))
            );
        }
        let buttons: Vec<String> = links(n)
            .into_iter()
            .map(|(name, url)| format!("<a href=\"{}\">{name}</a>", html(&url)))
            .collect();
        if !buttons.is_empty() {
            let _ = writeln!(
                out,
                "<tr><td colspan=\"2\" style=\"padding:4px 8px\">{}</td></tr>",
                buttons.join(" · ")
            );
        }
        out.push_str("</table>\n");
    }
    if more > 0 {
        let _ = writeln!(out, "<p>+{more} more not shown</p>");
    }
    out.push_str(
        "<p style=\"color:#666;font-size:12px\">cmk-guard: customer-managed key compliance for Azure Machine Learning</p>\n</body></html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::model::tests::{VAULT, finding};

    const HOSTILE: &str = "kv<script>*_[x](http://evil)";

    #[test]
    fn escapes_hostile_names_in_every_part() {
        let mut f = finding(Severity::Critical, &format!("{VAULT}{HOSTILE}"));
        f.observed = "line one\r\nBcc: victim@example.com".into();
        let n = Notification::from_finding(&f, Change::New, None);
        let email = content(Alert::Changes(std::slice::from_ref(&n)));
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(email.html.contains("kv1kv&lt;script&gt;*_[x](http://evil)"));
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert_eq!(
            email.subject,
            "[cmk-guard] ws1: 1 CMK problem, worst Critical"
        );
        assert!(
            email
                .text
                .contains("  Why it matters: Anyone with purge rights")
        );
        assert!(
            email
                .text
                .contains("  Observed: line one Bcc: victim@example.com\n")
        );
        assert!(
            email
                .text
                .contains("  Open in the Azure portal: https://portal.azure.com/#resource/")
        );
    }

    #[test]
    fn explains_why_and_how_to_fix_with_the_names() {
        let n = Notification::from_finding(&finding(Severity::High, VAULT), Change::New, None);
        let email = content(Alert::Changes(std::slice::from_ref(&n)));
        assert!(email.text.contains(
            "  How to fix: az keyvault update --name kv1 --resource-group ml --enable-purge-protection true\n"
        ));
        assert!(
            email
                .text
                .contains("  What cmk-guard does: cmk-guard fixes this only when")
        );
        assert!(email.html.contains("az keyvault update --name kv1"));
        assert!(
            email
                .text
                .contains("/providers/Microsoft.KeyVault/vaults/kv1/properties\n")
        );
        let handled = n.handled(true, false);
        let email = content(Alert::Changes(std::slice::from_ref(&handled)));
        assert!(
            email
                .text
                .contains("  What cmk-guard does: cmk-guard would fix this in remediate mode")
        );
    }

    #[test]
    fn lists_at_most_the_limit_and_counts_the_rest() {
        let notifications: Vec<_> = (0..MAX_LISTED + 7)
            .map(|_| Notification::from_finding(&finding(Severity::High, VAULT), Change::New, None))
            .collect();
        let email = content(Alert::Changes(&notifications));
        assert_eq!(
            email.subject,
            format!(
                "[cmk-guard] ws1: {} CMK problems, worst High",
                MAX_LISTED + 7
            )
        );
        assert!(email.text.contains("+7 more not shown"));
        assert!(email.html.contains("<p>+7 more not shown</p>"));
    }

    #[test]
    fn a_digest_subject_has_the_counts() {
        let digest = Digest::from_notifications(vec![
            Notification::from_finding(&finding(Severity::Critical, VAULT), Change::Reminder, None),
            Notification::from_finding(&finding(Severity::High, VAULT), Change::Reminder, None),
        ]);
        let email = content(Alert::Digest(&digest));
        assert_eq!(
            email.subject,
            "[cmk-guard] ws1: 2 CMK problems, worst Critical"
        );
        assert!(
            email
                .text
                .contains("Critical: 1\nHigh: 1\nResolved: 0\nWorkspaces: 1\n")
        );
    }

    #[test]
    fn findings_come_worst_first_and_one_workspace_keeps_one_thread() {
        let mut resolved = finding(Severity::Critical, VAULT);
        resolved.state = crate::outcome::FindingState::Resolved;
        let notifications = vec![
            Notification::from_finding(&finding(Severity::Medium, VAULT), Change::New, None),
            Notification::from_finding(&resolved, Change::New, None),
            Notification::from_finding(&finding(Severity::Critical, VAULT), Change::New, None),
        ];
        let email = content(Alert::Changes(&notifications));
        assert_eq!(
            email.subject,
            "[cmk-guard] ws1: 2 CMK problems, worst Critical; 1 resolved"
        );
        let critical = email.text.find("Critical · new").unwrap();
        let medium = email.text.find("Medium · new").unwrap();
        let done = email.text.find("Resolved: ").unwrap();
        assert!(critical < medium && medium < done, "{}", email.text);
        let again = content(Alert::Changes(&notifications[..1]));
        assert_eq!(email.thread, again.thread);
        assert!(email.thread.as_deref().unwrap().ends_with("@cmk-guard>"));
        let only_resolved = content(Alert::Changes(&notifications[1..2]));
        assert_eq!(
            only_resolved.subject,
            "[cmk-guard] ws1: 1 CMK problem resolved"
        );
    }
}
