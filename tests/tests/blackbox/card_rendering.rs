//! Teams cards rendered for real: every card the real binary posts for workspaces with several
//! CMK problems is rendered by the official Adaptive Cards JavaScript renderer in headless
//! Chromium (`cmk_guard_blackbox::render`, `tests/render/`). Each renders without a parse error
//! or a validation warning, shows text whose first line starts with its workspace's name (as
//! cards show names: with the look-alikes of docs/alerts.md), and shows no
//! escape backslash before a character Markdown would interpret. A screenshot of each is saved
//! under `target/card-rendering/` for a person to look at (not committed). Alert mode gives the
//! new-finding cards; remediate mode the cards of fixes and their verification. A last test
//! checks the check: the page reports what the renderer rejects and shows a backslash.
//!
//! The tenant: one workspace whose vault lacks purge protection and whose key is RSA 2048, and
//! one whose names carry characters Teams' Markdown would interpret (`_`, `(`, `)`, `-`).

use azure_sim::Tenant;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{
    RG, SUB, TEAMS_ONLY, VAULT, WORKSPACE, several_problems, workspace_write_of,
};
use cmk_guard_blackbox::{Handler, render};
use serde_json::{Value, json};

/// The second workspace's names.
const RG2: &str = "rg_cmk-(test)";
const VAULT2: &str = "kv-cmk-test";
const WORKSPACE2: &str = "mlw_cmk-test_2";

/// The look-alikes a card shows for the characters Markdown would act on inside a name
/// (docs/alerts.md, *User-controlled text*): a name is found in a card as shown.
const LOOKALIKES: &[(char, char)] = &[
    ('\\', '\u{29F5}'),
    ('*', '\u{2217}'),
    ('_', '\u{02CD}'),
    ('[', '\u{FF3B}'),
    (']', '\u{FF3D}'),
    ('<', '\u{2039}'),
    ('>', '\u{203A}'),
    ('`', '\u{02CB}'),
    ('~', '\u{223C}'),
    ('#', '\u{FF03}'),
    ('|', '\u{2223}'),
    ('{', '\u{FF5B}'),
    ('}', '\u{FF5D}'),
    ('&', '\u{FF06}'),
];

/// `name` as a card shows it (no leading character of the table's second kind in these names).
fn shown(name: &str) -> String {
    name.chars()
        .map(|c| {
            LOOKALIKES
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| *to)
        })
        .collect()
}

/// What Markdown would interpret after a backslash.
const MARKDOWN: &[char] = &['(', ')', '*', '_', '[', ']', '#', '`', '>', '-', '+'];

fn tenant() -> Tenant {
    let builder = several_problems(Tenant::builder().subscription(SUB), RG, VAULT, WORKSPACE);
    several_problems(builder, RG2, VAULT2, WORKSPACE2)
        .build()
        .expect("tenant")
}

/// Where the screenshots go: `target/card-rendering/` (or under `CARGO_TARGET_DIR`).
fn screenshots() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cmk_guard_blackbox::repo_root().join("target"));
    let dir = target.join("card-rendering");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Remediate mode fixes purge protection (with the consent it needs) and the key access.
const REMEDIATE_POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// Every Teams message the binary posts in `mode` with `policy` for an event on each workspace,
/// delivered twice (the second sees what the first changed).
async fn cards(mode: &str, policy: &str) -> Vec<Value> {
    let scratch = Scratch::new("card-rendering");
    let policy = scratch.write("policy.toml", policy).display().to_string();
    let state = scratch.sqlite_state("state.db");
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", mode),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
        ],
    )
    .await;
    for _ in 0..2 {
        for (rg, workspace) in [(RG, WORKSPACE), (RG2, WORKSPACE2)] {
            let replies = handler
                .deliver(
                    "OnSubscriptionEvent",
                    "event",
                    &[workspace_write_of(SUB, rg, workspace)],
                )
                .await;
            assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
        }
    }
    sink.received("teams").into_iter().map(|r| r.body).collect()
}

/// Renders each card, checks what the renderer said and what it shows, saves a screenshot
/// `{prefix}-{n}.png`, and returns the workspace each card's first line names.
fn render_and_check(cards: &[Value], prefix: &str) -> Vec<&'static str> {
    let dir = screenshots();
    let mut named = Vec::new();
    for (n, json) in cards.iter().enumerate() {
        let verdict = render::render(json);
        assert!(verdict.errors.is_empty(), "{:?} in {json}", verdict.errors);
        assert!(
            verdict.warnings.is_empty(),
            "{:?} in {json}",
            verdict.warnings
        );
        let text = verdict.text.trim();
        assert!(!text.is_empty(), "nothing rendered of {json}");
        let first = text.lines().next().unwrap_or_default();
        let workspace = [WORKSPACE2, WORKSPACE]
            .into_iter()
            .find(|w| first.starts_with(&format!("{}: ", shown(w))))
            .unwrap_or_else(|| panic!("the first line names no workspace: {first:?}\n{text}"));
        named.push(workspace);
        assert_eq!(
            escapes(text),
            Vec::<String>::new(),
            "escape backslashes shown:\n{text}"
        );
        render::screenshot(json, verdict.height, &dir.join(format!("{prefix}-{n}.png")));
    }
    named
}

/// Each backslash in `text` followed by a character Markdown would interpret, with the rest of
/// its line.
fn escapes(text: &str) -> Vec<String> {
    text.match_indices('\\')
        .filter(|(i, _)| {
            text[i + 1..]
                .chars()
                .next()
                .is_some_and(|c| MARKDOWN.contains(&c))
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| *c != '\n')
                .take(40)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn every_alert_card_renders_in_the_official_renderer_without_errors_or_escapes() {
    // Missing tools fail here, before anything runs: scripts/test-tools installs them.
    render::chromium();
    render::renderer();

    let cards = cards("alert", TEAMS_ONLY).await;
    assert!(cards.len() >= 2, "a card per workspace: {}", cards.len());
    let named = render_and_check(&cards, "alert");
    for workspace in [WORKSPACE, WORKSPACE2] {
        assert!(
            named.contains(&workspace),
            "no card for {workspace}: {named:?}"
        );
    }
}

#[tokio::test]
async fn remediation_and_resolution_cards_render_too() {
    render::chromium();
    render::renderer();

    let cards = cards("remediate", REMEDIATE_POLICY).await;
    assert!(cards.len() >= 2, "a card per workspace: {}", cards.len());
    let all = cards.iter().map(Value::to_string).collect::<String>();
    assert!(
        all.contains("verified"),
        "a remediation was verified: {all}"
    );
    render_and_check(&cards, "remediate");
}

/// The check itself: the page reports what the renderer cannot parse or validate, and shows a
/// backslash as written, so the tests above would see one.
#[test]
fn the_render_page_reports_errors_warnings_and_backslashes() {
    let card = json!({
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [
            {"type": "TextBlock", "text": "ws: change\\(s\\)"},
            {"type": "Bogus"},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "no url"}],
    });
    let verdict = render::render(&card);
    assert!(
        verdict.errors.iter().any(|e| e.contains("Bogus")),
        "{verdict:?}"
    );
    assert!(
        verdict.warnings.iter().any(|w| w.contains("url")),
        "{verdict:?}"
    );
    assert_eq!(escapes(&verdict.text), ["\\(s\\)", "\\)"], "{verdict:?}");
}
