//! Teams cards rendered for real: every card the real binary posts for workspaces with several
//! CMK problems is rendered by the official Adaptive Cards JavaScript renderer in headless
//! Chromium (`cmk_guard_blackbox::render`, `tests/render/`). Each renders without a parse error
//! or a validation warning, shows text whose first line starts with its workspace's name (as
//! cards show names: with the look-alikes of docs/alerts.md), and shows no
//! escape backslash before a character Markdown would interpret. A screenshot of each is saved
//! under `target/card-rendering/` for a person to look at (not committed).
//!
//! The tenant: one workspace whose vault lacks purge protection and whose key is RSA 2048, and
//! one whose names carry characters Teams' Markdown would interpret (`_`, `(`, `)`, `-`).

use azure_sim::{KeySpec, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{KEY, RG, SUB, VAULT, WORKSPACE, workspace_write_of};
use cmk_guard_blackbox::{Handler, render};

/// Every severity to Teams, nothing by email.
const POLICY: &str = r#"
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

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
    Tenant::builder()
        .subscription(SUB)
        .vault(
            VaultSpec::new(SUB, RG, VAULT)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 2048)),
        )
        .workspace(WorkspaceSpec::new(SUB, RG, WORKSPACE).cmk(VAULT, KEY))
        .vault(
            VaultSpec::new(SUB, RG2, VAULT2)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 2048)),
        )
        .workspace(WorkspaceSpec::new(SUB, RG2, WORKSPACE2).cmk(VAULT2, KEY))
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

#[tokio::test]
async fn every_card_renders_in_the_official_renderer_without_errors_or_escapes() {
    // Missing tools fail here, before anything runs: scripts/test-tools installs them.
    render::chromium();
    render::renderer();

    let scratch = Scratch::new("card-rendering");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let state = scratch.sqlite_state("state.db");
    let sink = Sink::start().await;
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams),
        ],
    )
    .await;
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

    let cards = sink.received("teams");
    assert!(cards.len() >= 2, "a card per workspace: {}", cards.len());
    let dir = screenshots();
    let mut named = Vec::new();
    for (n, card) in cards.iter().enumerate() {
        let verdict = render::render(&card.body);
        let json = &card.body;
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
        for (i, _) in text.match_indices('\\') {
            let next = text[i + 1..].chars().next();
            assert!(
                !next.is_some_and(|c| MARKDOWN.contains(&c)),
                "an escape backslash shows in the rendered card: {:?}\n{text}",
                &text[i..text.len().min(i + 40)]
            );
        }
        render::screenshot(json, verdict.height, &dir.join(format!("card-{n}.png")));
    }
    for workspace in [WORKSPACE, WORKSPACE2] {
        assert!(
            named.contains(&workspace),
            "no card for {workspace}: {named:?}"
        );
    }
}
