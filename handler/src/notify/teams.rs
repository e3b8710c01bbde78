//! The Teams message: an Adaptive Card 1.5 wrapped as a Workflows webhook message
//! (`{"type":"message","attachments":[…]}`, azure-notes §C1), full width, with a
//! `fallbackText` that notifications show. Workflows renders Adaptive Cards only, and a posted
//! card fails above ~28 KB after the flow's own wrapping, so the whole payload is kept under
//! [`PAYLOAD_BUDGET`] by listing fewer findings and saying how many were left out.
//!
//! Names from Azure are plain text: `TextBlock` and `FactSet` text goes through
//! [`card_text`] (look-alikes instead of the characters Markdown acts on, never a backslash),
//! and what must stay copyable exactly — the `az` commands and the names and full ids of the
//! workspace and resource — are `TextRun`s, which Adaptive Cards never read as Markdown.

use serde_json::{Value, json};

use super::escape::{bounded_line, card_text, single_line};
use super::model::{Alert, Change, Digest, Notification, headline, severity_label, worst_first};
use crate::outcome::Severity;

/// The largest payload sent, in bytes of JSON.
pub const PAYLOAD_BUDGET: usize = 20 * 1024;
/// Longest value of one fact, in characters; one long observed value must not crowd out the
/// other findings.
const FIELD_CHARS: usize = 400;
/// Longest action text: a remediation's detail ends with what it verified, which a reader of
/// a resolved card needs, so it gets more room than other values.
const ACTION_CHARS: usize = 1_500;

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
    let title = headline(notifications);
    let ordered = worst_first(notifications);
    let fallback = fallback(&title, ordered.first().copied());
    if let [single] = ordered.as_slice() {
        let body = vec![header(&title), section(single, false)];
        return wrap(body, buttons(single), &fallback);
    }
    fill(
        vec![header(&title)],
        ordered.into_iter().map(|n| section(n, true)),
        notifications.len(),
        &fallback,
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
    let title = digest.headline();
    let prefix = vec![
        header(&title),
        json!({"type": "Container", "style": colour, "items": [{"type": "FactSet", "facts": facts}]}),
    ];
    fill(
        prefix,
        digest.worst.iter().map(|n| section(n, true)),
        digest.worst.len() + digest.omitted,
        &fallback(&title, digest.worst.first()),
    )
}

/// What a notification (toast, activity feed) shows: the title and the worst finding.
fn fallback(title: &str, worst: Option<&Notification>) -> String {
    let text = match worst {
        Some(n) => format!("{title}. {}", n.headline()),
        None => title.to_owned(),
    };
    bounded_line(&text, 200)
}

/// Appends sections while the payload stays within budget, then a "+N more" line for the
/// rest (`total` counts findings that have no section at all, such as a digest's omitted).
fn fill(
    prefix: Vec<Value>,
    sections: impl Iterator<Item = Value>,
    total: usize,
    fallback: &str,
) -> Value {
    let mut body = prefix;
    let mut shown = 0;
    for section in sections {
        body.push(section);
        let remaining = total.saturating_sub(shown + 1);
        let mut candidate = body.clone();
        if remaining > 0 {
            candidate.push(more(remaining));
        }
        if size(&wrap(candidate, Vec::new(), fallback)) > PAYLOAD_BUDGET {
            body.pop();
            break;
        }
        shown += 1;
    }
    if total > shown {
        body.push(more(total - shown));
    }
    wrap(body, Vec::new(), fallback)
}

fn size(payload: &Value) -> usize {
    serde_json::to_vec(payload).map_or(usize::MAX, |bytes| bytes.len())
}

fn wrap(body: Vec<Value>, actions: Vec<Value>, fallback: &str) -> Value {
    json!({
        "type": "message",
        "summary": card_text(fallback),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.5",
                "fallbackText": card_text(fallback),
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

/// The portal (on the rule's blade) and documentation buttons of a finding.
fn buttons(n: &Notification) -> Vec<Value> {
    let mut actions = Vec::new();
    if let Some(url) = n.portal_blade_url() {
        actions.push(
            json!({"type": "Action.OpenUrl", "title": "Open in the Azure portal", "url": url}),
        );
    }
    // A resolved finding needs no fix: no "how to fix" button.
    if n.change != Change::Resolved
        && let Some(url) = n.doc_url()
    {
        actions.push(
            json!({"type": "Action.OpenUrl", "title": "How to fix (Microsoft Learn)", "url": url}),
        );
    }
    actions
}

/// A name or id from Azure, unaltered: `TextRun` text is plain text in Adaptive Cards.
fn verbatim_fact(label: &str, value: &str) -> Value {
    json!({"type": "RichTextBlock", "spacing": "None", "inlines": [
        {"type": "TextRun", "text": format!("{label}: "), "weight": "Bolder"},
        {"type": "TextRun", "text": single_line(value)},
    ]})
}

fn text(text: &str) -> Value {
    json!({"type": "TextBlock", "text": card_text(text), "wrap": true, "spacing": "Small"})
}

fn section(n: &Notification, with_buttons: bool) -> Value {
    let colour = colour(n.severity, n.change);
    let mut items = vec![json!({
        "type": "TextBlock",
        "text": card_text(&n.headline()),
        "weight": "Bolder",
        "color": colour,
        "wrap": true,
    })];
    if n.change != Change::Resolved
        && let Some(why) = n.why()
    {
        items.push(text(&format!("Why it matters: {why}")));
    }
    items.push(text(&format!("What cmk-guard does: {}", n.does())));
    if let Some(command) = n.fix_command() {
        items.push(json!({"type": "RichTextBlock", "inlines": [
            {"type": "TextRun", "text": "How to fix: ", "weight": "Bolder"},
            {"type": "TextRun", "text": single_line(&command), "fontType": "Monospace"},
        ]}));
    }
    // Runs of text facts are a FactSet; a name or id is a RichTextBlock line of TextRuns,
    // which Teams never reads as Markdown, so it is shown (and copied) exactly.
    let mut text_facts = Vec::new();
    for fact in n.facts() {
        if fact.verbatim {
            if !text_facts.is_empty() {
                items.push(json!({"type": "FactSet", "facts": std::mem::take(&mut text_facts)}));
            }
            items.push(verbatim_fact(fact.label, &fact.value));
        } else {
            let limit = if fact.label == "Action" {
                ACTION_CHARS
            } else {
                FIELD_CHARS
            };
            text_facts.push(json!({
                "title": fact.label,
                "value": card_text(&bounded_line(&fact.value, limit)),
            }));
        }
    }
    if !text_facts.is_empty() {
        items.push(json!({"type": "FactSet", "facts": text_facts}));
    }
    if with_buttons {
        let actions = buttons(n);
        if !actions.is_empty() {
            items.push(json!({"type": "ActionSet", "actions": actions}));
        }
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
        assert_eq!(card["version"], "1.5");
        assert_eq!(card["msteams"]["width"], "Full");
        assert_eq!(
            card["body"][0]["text"],
            "ws1: 1 CMK problem, worst Critical"
        );
        assert!(
            card["fallbackText"].as_str().unwrap().starts_with(
                "ws1: 1 CMK problem, worst Critical. Critical · new: purge protection"
            )
        );
        assert_eq!(card["body"][1]["style"], "attention");
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(
            card["actions"][0]["url"],
            format!("{}/properties", n.portal_url.unwrap())
        );
        assert!(
            card["actions"][1]["url"]
                .as_str()
                .unwrap()
                .starts_with("https://learn.microsoft.com/")
        );
        let text = payload.to_string();
        assert!(text.contains(
            "az keyvault update --name kv1 --resource-group ml --enable-purge-protection true"
        ));
    }

    #[test]
    fn hostile_names_show_no_markdown_and_no_backslash() {
        let hostile = format!("{VAULT}_x*(y)[z]");
        let n = Notification::from_finding(&finding(Severity::High, &hostile), Change::New, None);
        let payload = payload(Alert::Changes(std::slice::from_ref(&n)));
        let text = payload.to_string();
        for escaped in ["\\\\(", "\\\\)", "\\\\*", "\\\\_", "\\\\[", "\\\\]"] {
            assert!(!text.contains(escaped), "{escaped} in {text}");
        }
        assert!(!text.contains("[z]("), "{text}");
    }

    /// The `TextRun` that follows the bold label `label` in the card, wherever it is.
    fn verbatim<'a>(card: &'a Value, label: &str) -> Option<&'a str> {
        match card {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("RichTextBlock")
                    && map["inlines"][0]["text"] == format!("{label}: ")
                {
                    return map["inlines"][1]["text"].as_str();
                }
                map.values().find_map(|v| verbatim(v, label))
            }
            Value::Array(items) => items.iter().find_map(|v| verbatim(v, label)),
            _ => None,
        }
    }

    #[test]
    fn a_copied_id_is_the_real_id() {
        let workspace = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg_ml/providers/Microsoft.MachineLearningServices/workspaces/mlw_cmk";
        let vault = format!("{VAULT}_x*(y)");
        let mut f = finding(Severity::High, &vault);
        f.workspace = workspace.into();
        let n = Notification::from_finding(&f, Change::New, None);
        let payload = payload(Alert::Changes(std::slice::from_ref(&n)));
        let card = card(&payload);
        assert_eq!(verbatim(card, "Workspace id"), Some(workspace));
        assert_eq!(verbatim(card, "Workspace"), Some("mlw_cmk"));
        assert_eq!(verbatim(card, "Resource id"), Some(vault.as_str()));
        assert_eq!(verbatim(card, "Resource"), Some("kv1_x*(y)"));
    }

    #[test]
    fn a_resolved_finding_says_what_holds_now_and_offers_no_fix() {
        let mut f = finding(Severity::High, VAULT);
        f.state = crate::outcome::FindingState::Resolved;
        f.observed = "verified: purge protection is on".into();
        f.expected = String::new();
        let n = Notification::from_finding(&f, Change::Resolved, None);
        let payload = payload(Alert::Changes(std::slice::from_ref(&n)));
        let text = payload.to_string();
        assert!(text.contains(r#"{"title":"Now","value":"verified: purge protection is on"}"#));
        assert!(!text.contains("enablePurgeProtection is false"), "{text}");
        assert!(!text.contains(r#""title":"Expected""#), "{text}");
        assert!(!text.contains("How to fix"), "{text}");
        assert_eq!(
            verbatim(card(&payload), "Resource id (when found)"),
            Some(VAULT)
        );
    }

    #[test]
    fn findings_are_ordered_worst_first() {
        let notifications = vec![
            Notification::from_finding(&finding(Severity::High, VAULT), Change::New, None),
            Notification::from_finding(&finding(Severity::Critical, VAULT), Change::New, None),
        ];
        let payload = payload(Alert::Changes(&notifications));
        let body = card(&payload)["body"].as_array().unwrap();
        assert_eq!(body[0]["text"], "ws1: 2 CMK problems, worst Critical");
        assert_eq!(body[1]["style"], "attention");
        assert_eq!(body[2]["style"], "warning");
    }

    #[test]
    fn a_long_action_keeps_what_it_verified() {
        let mut f = finding(Severity::High, VAULT);
        f.state = crate::outcome::FindingState::Resolved;
        let detail = format!(
            "PATCHed {VAULT} with enablePurgeProtection=true (before: {}); verified: purge protection is on",
            "x".repeat(600)
        );
        let n = Notification::from_finding(&f, Change::New, None).with_action(
            &crate::outcome::Action {
                kind: crate::outcome::ActionKind::Remediate,
                rule: "vault.purge-protection".into(),
                target: VAULT.into(),
                result: crate::outcome::ActionResult::Applied,
                detail,
            },
        );
        let payload = payload(Alert::Changes(std::slice::from_ref(&n)));
        assert!(
            payload
                .to_string()
                .contains("verified: purge protection is on")
        );
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
