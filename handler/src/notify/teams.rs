//! The Teams message: an Adaptive Card 1.4 wrapped as a Workflows webhook message
//! (`{"type":"message","attachments":[…]}`, azure-notes §C1). Workflows renders
//! Adaptive Cards only, and a posted card fails above ~28 KB after the flow's own wrapping,
//! so the whole payload is kept under [`PAYLOAD_BUDGET`] by listing fewer findings and saying
//! how many were left out.

use serde_json::{Value, json};

use super::escape::{bounded_line, card_text};
use super::model::{Alert, Change, Digest, Notification, severity_label};
use crate::outcome::Severity;

/// The largest payload sent, in bytes of JSON.
pub const PAYLOAD_BUDGET: usize = 20 * 1024;
/// Longest value of one fact, in characters; one long observed value must not crowd out the
/// other findings.
const FIELD_CHARS: usize = 400;

/// The Workflows webhook body for `alert`.
pub fn payload(alert: Alert<'_>) -> Value {
    match alert {
        Alert::Changes(notifications) => changes_card(notifications),
        Alert::Digest(digest) => digest_card(digest),
    }
}

/// The Adaptive Card colour (Container style and TextBlock colour) for a finding.
pub fn colour(severity: Severity, change: Change) -> &'static str {
    if change == Change::Resolved {
        return "good";
    }
    match severity {
        Severity::Critical => "attention",
        Severity::High => "warning",
        Severity::Medium => "accent",
        Severity::Low => "good",
    }
}

fn changes_card(notifications: &[Notification]) -> Value {
    if let [single] = notifications {
        let body = vec![header("cmk-guard alert"), section(single, false)];
        let actions = single.portal_url.iter().map(|url| open_url(url)).collect();
        return wrap(body, actions);
    }
    let worst = notifications.iter().map(|n| n.severity).max();
    let title = match worst {
        Some(worst) => format!(
            "cmk-guard: {} finding change(s), worst {}",
            notifications.len(),
            severity_label(worst)
        ),
        None => "cmk-guard: no finding changes".to_owned(),
    };
    fill(
        vec![header(&title)],
        notifications.iter().map(|n| section(n, true)),
        notifications.len(),
    )
}

fn digest_card(digest: &Digest) -> Value {
    let mut facts: Vec<Value> = digest
        .open
        .iter()
        .map(|(severity, count)| json!({"title": severity_label(*severity), "value": count.to_string()}))
        .collect();
    facts.push(json!({"title": "Resolved", "value": digest.resolved.to_string()}));
    let colour = digest
        .worst_severity()
        .map_or("good", |s| colour(s, Change::Reminder));
    let prefix = vec![
        header(&format!(
            "cmk-guard sweep: {} open finding(s) in {} workspace(s)",
            digest.open_total(),
            digest.workspaces
        )),
        json!({"type": "Container", "style": colour, "items": [{"type": "FactSet", "facts": facts}]}),
    ];
    fill(
        prefix,
        digest.worst.iter().map(|n| section(n, true)),
        digest.worst.len() + digest.omitted,
    )
}

/// Appends sections while the payload stays within budget, then a "+N more" line for the
/// rest (`total` counts findings that have no section at all, such as a digest's omitted).
fn fill(prefix: Vec<Value>, sections: impl Iterator<Item = Value>, total: usize) -> Value {
    let mut body = prefix;
    let mut shown = 0;
    for section in sections {
        body.push(section);
        let remaining = total.saturating_sub(shown + 1);
        let mut candidate = body.clone();
        if remaining > 0 {
            candidate.push(more(remaining));
        }
        if size(&wrap(candidate, Vec::new())) > PAYLOAD_BUDGET {
            body.pop();
            break;
        }
        shown += 1;
    }
    if total > shown {
        body.push(more(total - shown));
    }
    wrap(body, Vec::new())
}

fn size(payload: &Value) -> usize {
    serde_json::to_vec(payload).map_or(usize::MAX, |bytes| bytes.len())
}

fn wrap(body: Vec<Value>, actions: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
                "actions": actions,
            }
        }]
    })
}

fn header(text: &str) -> Value {
    json!({"type": "TextBlock", "text": card_text(text), "size": "Large", "weight": "Bolder", "wrap": true})
}

fn more(count: usize) -> Value {
    json!({
        "type": "TextBlock",
        "text": format!("+{count} more not shown"),
        "isSubtle": true,
        "wrap": true,
    })
}

fn open_url(url: &str) -> Value {
    json!({"type": "Action.OpenUrl", "title": "Open in the Azure portal", "url": url})
}

/// `High · new: vault.purge-protection on kv1`.
pub(crate) fn title(n: &Notification) -> String {
    let change = match n.change {
        Change::Escalated { from } => format!("escalated from {}", severity_label(from)),
        Change::Resolved => return format!("Resolved: {} on {}", n.rule, n.resource_name()),
        other => other.label().to_owned(),
    };
    format!(
        "{} · {change}: {} on {}",
        n.severity_label(),
        n.rule,
        n.resource_name()
    )
}

fn fact(title: &str, value: &str) -> Value {
    json!({"title": title, "value": card_text(&bounded_line(value, FIELD_CHARS))})
}

fn section(n: &Notification, with_link: bool) -> Value {
    let colour = colour(n.severity, n.change);
    let mut items = vec![
        json!({"type": "TextBlock", "text": card_text(&title(n)), "weight": "Bolder", "color": colour, "wrap": true}),
        json!({"type": "FactSet", "facts": [
            fact("Workspace", n.workspace_name()),
            fact("Resource", &n.resource),
            fact("Rule", &n.rule),
            fact("Observed", &n.observed),
            fact("Expected", &n.expected),
            fact("Action", &n.action_text()),
        ]}),
    ];
    if with_link && let Some(url) = &n.portal_url {
        items.push(json!({"type": "ActionSet", "actions": [open_url(url)]}));
    }
    json!({"type": "Container", "style": colour, "separator": true, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::model::tests::{VAULT, finding};

    fn card(payload: &Value) -> &Value {
        &payload["attachments"][0]["content"]
    }

    #[test]
    fn a_single_finding_is_one_card_with_a_portal_button() {
        let n = Notification::from_finding(&finding(Severity::Critical, VAULT), Change::New, None);
        let payload = payload(Alert::Changes(std::slice::from_ref(&n)));
        assert_eq!(payload["type"], "message");
        assert_eq!(
            payload["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = card(&payload);
        assert_eq!(card["version"], "1.4");
        assert_eq!(card["body"][1]["style"], "attention");
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(card["actions"][0]["url"], n.portal_url.unwrap().as_str());
    }

    #[test]
    fn colours_follow_severity_and_resolution() {
        assert_eq!(colour(Severity::Critical, Change::New), "attention");
        assert_eq!(colour(Severity::High, Change::Reminder), "warning");
        assert_eq!(colour(Severity::Medium, Change::New), "accent");
        assert_eq!(colour(Severity::Low, Change::New), "good");
        assert_eq!(colour(Severity::Critical, Change::Resolved), "good");
    }

    #[test]
    fn many_findings_are_trimmed_to_the_budget() {
        let mut f = finding(Severity::High, VAULT);
        f.observed = "x".repeat(2_000);
        let notifications: Vec<_> = (0..200)
            .map(|_| Notification::from_finding(&f, Change::New, None))
            .collect();
        let payload = payload(Alert::Changes(&notifications));
        assert!(serde_json::to_vec(&payload).unwrap().len() <= PAYLOAD_BUDGET);
        let body = card(&payload)["body"].as_array().unwrap();
        let shown = body.len() - 2;
        assert!(shown > 5, "only {shown} shown");
        assert_eq!(
            body.last().unwrap()["text"],
            format!("+{} more not shown", 200 - shown)
        );
    }

    #[test]
    fn a_digest_counts_and_lists() {
        let notifications = vec![
            Notification::from_finding(&finding(Severity::High, VAULT), Change::Reminder, None),
            Notification::from_finding(&finding(Severity::Medium, VAULT), Change::Reminder, None),
        ];
        let digest = Digest::from_notifications(notifications);
        let payload = payload(Alert::Digest(&digest));
        let body = card(&payload)["body"].as_array().unwrap();
        assert_eq!(body[1]["style"], "warning");
        assert_eq!(body[1]["items"][0]["facts"][0]["title"], "High");
        assert_eq!(body.len(), 4);
    }
}
