//! The email: a subject, a plain-text part and an HTML part with the same content, so every
//! mail client shows something readable. Every value from Azure is HTML-escaped in the HTML
//! part and kept to one line in the text part and the subject.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::escape::{bounded_line, html, single_line};
use super::model::{Alert, Change, Digest, Notification, severity_label};
use super::teams::title;
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
}

/// What one email shows, whichever the alert.
struct Layout<'a> {
    subject: String,
    heading: String,
    /// Label/value rows above the findings (a digest's counts).
    summary: Vec<(String, String)>,
    listed: &'a [Notification],
    /// Findings in the alert, listed or not.
    total: usize,
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
        text: text_part(&layout.heading, &layout.summary, shown, more),
        html: html_part(&subject, &layout.heading, &layout.summary, shown, more),
        subject,
    }
}

fn changes_layout(notifications: &[Notification]) -> Layout<'_> {
    let subject = match notifications {
        [single] => title(single),
        _ => format!(
            "{} finding change(s), worst {}",
            notifications.len(),
            notifications
                .iter()
                .map(|n| n.severity)
                .max()
                .map_or("none", severity_label)
        ),
    };
    Layout {
        heading: subject.clone(),
        subject,
        summary: Vec::new(),
        listed: notifications,
        total: notifications.len(),
    }
}

fn digest_layout(digest: &Digest) -> Layout<'_> {
    let counts = digest
        .open
        .iter()
        .map(|(s, n)| format!("{n} {}", severity_label(*s).to_lowercase()))
        .collect::<Vec<_>>()
        .join(", ");
    let heading = format!(
        "Sweep: {} open finding(s) in {} workspace(s)",
        digest.open_total(),
        digest.workspaces
    );
    let subject = if counts.is_empty() {
        heading.clone()
    } else {
        format!("{heading} ({counts})")
    };
    Layout {
        subject,
        heading,
        summary: digest_summary(digest),
        listed: &digest.worst,
        total: digest.worst.len() + digest.omitted,
    }
}

fn digest_summary(digest: &Digest) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = digest
        .open
        .iter()
        .map(|(s, n)| (severity_label(*s).to_owned(), n.to_string()))
        .collect();
    rows.push(("Resolved".to_owned(), digest.resolved.to_string()));
    rows
}

fn fields(n: &Notification) -> [(&'static str, String); 6] {
    [
        ("Workspace", n.workspace.clone()),
        ("Resource", n.resource.clone()),
        ("Rule", n.rule.clone()),
        ("Observed", n.observed.clone()),
        ("Expected", n.expected.clone()),
        ("Action", n.action_text()),
    ]
}

fn field(value: &str) -> String {
    bounded_line(value, FIELD_CHARS)
}

fn text_part(
    heading: &str,
    summary: &[(String, String)],
    shown: &[Notification],
    more: usize,
) -> String {
    let mut out = format!("{}\n", single_line(heading));
    for (name, value) in summary {
        let _ = writeln!(out, "{name}: {value}");
    }
    for n in shown {
        let _ = writeln!(out, "\n{}", field(&title(n)));
        for (name, value) in fields(n) {
            let _ = writeln!(out, "  {name}: {}", field(&value));
        }
        if let Some(url) = &n.portal_url {
            let _ = writeln!(out, "  Portal: {url}");
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
    shown: &[Notification],
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
            html(&field(&title(n)))
        );
        for (name, value) in fields(n) {
            let _ = writeln!(
                out,
                "<tr><th align=\"left\" valign=\"top\" style=\"padding:2px 8px\">{name}</th>\
                 <td style=\"padding:2px 8px;font-family:Consolas,monospace\">{}</td></tr>",
                html(&field(&value))
            );
        }
        if let Some(url) = &n.portal_url {
            let _ = writeln!(
                out,
                "<tr><td colspan=\"2\" style=\"padding:4px 8px\"><a href=\"{}\">Open in the Azure portal</a></td></tr>",
                html(url)
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
        assert!(
            email
                .subject
                .starts_with("[cmk-guard] Critical · new: vault.purge-protection on "),
            "{}",
            email.subject
        );
        assert!(
            email
                .text
                .contains("  Observed: line one Bcc: victim@example.com\n")
        );
        assert!(
            email
                .text
                .contains("  Portal: https://portal.azure.com/#resource/")
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
                "[cmk-guard] {} finding change(s), worst High",
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
            "[cmk-guard] Sweep: 2 open finding(s) in 1 workspace(s) (1 critical, 1 high)"
        );
        assert!(email.text.contains("Critical: 1\nHigh: 1\nResolved: 0\n"));
    }
}
