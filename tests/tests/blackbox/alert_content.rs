//! What the person on call reads, through the real binary: one workspace with several CMK
//! problems at once (a vault without purge protection, a key too small) gives one Teams card
//! whose first line names the workspace with the count and the worst severity, that lists the
//! findings worst first, says why each matters and what cmk-guard does, carries an `az`
//! command with the real names for each rule that has one, has a notification text, and shows
//! no Markdown escape backslash anywhere.

use cmk_guard_blackbox::Handler;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{
    RG, TEAMS_ONLY, VAULT, WORKSPACE, several_problems_tenant, workspace_write,
};
use serde_json::Value;

/// Every text a card renders (not URLs).
fn texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| *key != "url" && *key != "$schema")
            .for_each(|(_, v)| texts(v, out)),
        _ => {}
    }
}

/// Worst first: the container styles' severity rank.
fn rank(style: &str) -> u8 {
    match style {
        "attention" => 4,
        "warning" => 3,
        "accent" => 2,
        _ => 1,
    }
}

#[tokio::test]
async fn several_problems_make_one_card_a_person_can_act_on() {
    let scratch = Scratch::new("alert-content");
    let policy = scratch
        .write("policy.toml", TEAMS_ONLY)
        .display()
        .to_string();
    let state = scratch.sqlite_state("state.db");
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        several_problems_tenant(),
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
        ],
    )
    .await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);

    let cards = sink.received("teams");
    assert_eq!(cards.len(), 1, "one card");
    let card = &cards[0].body["attachments"][0]["content"];
    assert_eq!(card["version"], "1.5");
    assert_eq!(card["msteams"]["width"], "Full");
    let body = card["body"].as_array().unwrap();
    let title = body[0]["text"].as_str().unwrap();
    assert!(
        title.starts_with(&format!("{WORKSPACE}: ")) && title.contains(" CMK problems, worst "),
        "{title}"
    );
    let fallback = card["fallbackText"].as_str().unwrap();
    assert!(fallback.starts_with(title), "{fallback}");

    let sections: Vec<&Value> = body.iter().filter(|b| b["type"] == "Container").collect();
    assert!(sections.len() >= 2, "several findings: {card}");
    let ranks: Vec<u8> = sections
        .iter()
        .map(|s| rank(s["style"].as_str().unwrap()))
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] >= w[1]),
        "worst first: {ranks:?}"
    );
    for section in &sections {
        let text = section.to_string();
        assert!(text.contains("Why it matters: "), "{text}");
        assert!(text.contains("What cmk-guard does: "), "{text}");
    }
    let purge = sections
        .iter()
        .find(|s| s.to_string().contains("vault.purge-protection"))
        .expect("the purge-protection finding");
    assert!(
        purge.to_string().contains(&format!(
            "az keyvault update --name {VAULT} --resource-group {RG} --enable-purge-protection true"
        )),
        "{purge}"
    );

    let mut all = Vec::new();
    texts(card, &mut all);
    for text in &all {
        assert!(!text.contains('\\'), "an escape backslash in {text:?}");
    }
}
