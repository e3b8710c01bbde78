//! `cmk-guard history <workspace>` and the HTML report, through the real binary.
//!
//! History: the story's workspace (its vault lacks purge protection) in `remediate` mode with
//! the policy's consent; a person's write of the workspace arrives as an event through the
//! host contract, the handler remediates, and the trail the handler wrote to its SQLite store
//! reads back as opened → remediated → verified → resolved, with the event's caller, and the
//! alert that went to Teams. The command's errors exit 2 with a clear message.
//!
//! The report: `scan --format html` of a tenant with several problems, rendered in headless
//! Chromium (`--dump-dom`): every open finding of the scan's JSON is there with its how-to-fix
//! text, a hostile endpoint name stays text, and nothing in the page is a script or fetches.

use azure_sim::{KeySpec, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::render::run_chromium;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{self, FINDING, USER, workspace_id, workspace_write};
use cmk_guard_blackbox::{Handler, repo_root, timer_envelope};
use serde_json::Value;

/// Consent to remediate purge protection; every severity to Teams.
const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// The claim ARM events carry a person's sign-in name in.
const UPN: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";
/// The person who wrote the workspace.
const PERSON: &str = "ada@contoso.example";

/// Runs the binary with exactly `env` (no inherited environment): (exit code, stdout, stderr).
async fn cli(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String, String) {
    cmk_guard_blackbox::run_cli_with(args, env.iter().map(|(k, v)| (k, v))).await
}

fn state_env(state: &str) -> Vec<(String, String)> {
    vec![("CMKGUARD_STATE".to_owned(), state.to_owned())]
}

#[tokio::test]
async fn history_shows_a_remediated_workspace_opened_remediated_verified_and_resolved_with_the_caller()
 {
    let scratch = Scratch::new("history");
    let state = scratch.sqlite_state("state.db");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let teams = Sink::start().await;
    let teams_url = teams.url("teams");
    let sim = Sim::start(story::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
        ],
    )
    .await;
    // A person's write, with the sign-in name ARM puts in the claims.
    let mut event = workspace_write();
    event["data"]["claims"][UPN] = Value::from(PERSON);
    let reply = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await
        .remove(0);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert!(
        outcome["actions"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["rule"] == FINDING && a["result"] == "applied")),
        "{outcome}"
    );

    // Read while the handler still runs: two processes on one SQLite file.
    let (code, stdout, stderr) = cli(
        &["history", &workspace_id(), "--format", "json"],
        &state_env(&state),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).expect("history JSON");
    let trail: Vec<&Value> = entries.iter().filter(|e| e["rule"] == FINDING).collect();
    let steps: Vec<&str> = trail.iter().filter_map(|e| e["step"].as_str()).collect();
    assert_eq!(
        steps,
        ["opened", "remediated", "verified", "resolved", "alerted"],
        "{stdout}"
    );
    for entry in &trail {
        assert_eq!(entry["caller"], USER, "{entry}");
        assert_eq!(entry["caller_name"], PERSON, "{entry}");
        assert!(
            entry["workspace"]
                .as_str()
                .is_some_and(|w| w.eq_ignore_ascii_case(&workspace_id())),
            "{entry}"
        );
        assert!(
            entry["resource"]
                .as_str()
                .is_some_and(|r| r.ends_with(&format!("/vaults/{}", story::VAULT))),
            "{entry}"
        );
        assert!(
            entry["at"].as_str().is_some_and(|at| at.starts_with("20")),
            "{entry}"
        );
    }
    assert_eq!(trail[0]["detail"].as_str().map(str::is_empty), Some(false));
    assert_eq!(trail[4]["detail"], "sent to teams");
    assert_eq!(teams.received("teams").len(), 1);

    let (code, table, stderr) = cli(&["history", &workspace_id()], &state_env(&state)).await;
    assert_eq!(code, Some(0), "{stderr}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["TIME", "RULE", "RESOURCE", "STEP", "CALLER", "DETAIL"] {
        assert!(header.contains(column), "{table}");
    }
    let opened = table
        .lines()
        .find(|l| l.contains(" opened "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        opened.contains(FINDING)
            && opened.contains(story::VAULT)
            && opened.contains(&format!("{PERSON} ({USER})")),
        "{table}"
    );

    // A workspace with no trail: an empty result, exit 0.
    let other = story::workspace_id_of(story::SUB, story::RG, "ws-other");
    let (code, stdout, stderr) =
        cli(&["history", &other, "--format", "json"], &state_env(&state)).await;
    assert_eq!((code, stdout.trim()), (Some(0), "[]"), "{stderr}");
}

#[tokio::test]
async fn history_errors_exit_2_and_say_what_is_wrong() {
    let scratch = Scratch::new("history-errors");
    let missing = scratch.sqlite_state("missing.db");
    let workspace = workspace_id();
    let garbage = scratch.write("garbage.db", "not a database, not even close".repeat(100));
    let garbage = format!("sqlite:{}", garbage.display());
    // (case, arguments, environment, what stderr says)
    let cases = [
        (
            "not a store",
            vec!["history", &workspace],
            state_env(&garbage),
            "cannot read the state store",
        ),
        (
            "not a store URL",
            vec!["history", &workspace],
            state_env("ftp://example.com/state"),
            "CMKGUARD_STATE",
        ),
        (
            "no store",
            vec!["history", &workspace],
            Vec::new(),
            "set CMKGUARD_STATE",
        ),
        (
            "missing file",
            vec!["history", &workspace],
            state_env(&missing),
            "no such file",
        ),
        (
            "not an ARM id",
            vec!["history", "ws<script>"],
            state_env(&missing),
            "history:",
        ),
        (
            "not a workspace",
            vec![
                "history",
                "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            ],
            state_env(&missing),
            "is not the ARM id of an ML workspace",
        ),
    ];
    for (case, args, env, says) in cases {
        let env: Vec<(String, String)> = env;
        let (code, stdout, stderr) = cli(&args, &env).await;
        assert_eq!(code, Some(2), "{case}: {stderr}");
        assert!(stderr.contains(says), "{case}: {stderr}");
        assert!(stdout.is_empty(), "{case}: {stdout}");
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    }
    assert!(
        !scratch.join("missing.db").exists(),
        "history never creates a store"
    );
}

/// An endpoint name no portal would allow, placed where the report quotes it.
const HOSTILE: &str = "ep\"'><script>alert(1)</script>";

/// Several problems at once, one of them quoting the hostile endpoint name.
fn report_tenant() -> Tenant {
    const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
    let vault = |name: &str| VaultSpec::new(SUB, "rg-report", name);
    Tenant::builder()
        .subscription(SUB)
        .vault(
            vault("kv-purge")
                .purge_protection(None)
                .key(KeySpec::rsa("key", 3072)),
        )
        .vault(vault("kv-small").key(KeySpec::rsa("key", 2048)))
        .vault(vault("kv-ep").key(KeySpec::rsa("key", 3072)))
        .workspace(WorkspaceSpec::new(SUB, "rg-report", "ws-purge").cmk("kv-purge", "key"))
        .workspace(WorkspaceSpec::new(SUB, "rg-report", "ws-small").cmk("kv-small", "key"))
        .workspace(
            WorkspaceSpec::new(SUB, "rg-report", "ws-endpoints")
                .cmk("kv-ep", "key")
                .online_endpoint(HOSTILE),
        )
        .build()
        .expect("tenant")
}

#[tokio::test]
async fn the_html_report_renders_every_open_finding_with_how_to_fix_and_escapes_names() {
    // A sweep in `alert` mode writes the trail the report reads: opened, planned, alerted.
    let scratch = Scratch::new("report");
    let state = scratch.sqlite_state("state.db");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let teams = Sink::start().await;
    let teams_url = teams.url("teams");
    let sim = Sim::start(report_tenant(), SimOptions::default())
        .await
        .expect("sim");
    let mut env = sim.handler_env();
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
        ],
    )
    .await;
    let swept = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(swept.status, 200, "{:?}", swept.body);
    env.extend(state_env(&state));
    // The sweep's trail is the workspace's history too: opened, planned and alerted.
    let purge = story::workspace_id_of(
        "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34",
        "rg-report",
        "ws-purge",
    );
    let (code, trail, stderr) = cli(&["history", &purge, "--format", "json"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    let trail: Value = serde_json::from_str(&trail).unwrap_or_else(|e| panic!("{e}: {trail}"));
    let steps: Vec<&str> = trail
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["rule"] == "vault.purge-protection")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(
        steps,
        ["opened", "remediation-planned", "alerted"],
        "{trail}"
    );
    let (_, json, stderr) = cli(&["scan", "--format", "json", "--quiet"], &env).await;
    let outcome: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let open: Vec<&Value> = outcome["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["state"] == "open")
        .collect();
    assert!(open.len() >= 3, "{json}");
    assert!(
        json.contains("<script>"),
        "the scan saw the hostile name: {json}"
    );

    let (code, html, stderr) = cli(&["scan", "--format", "html", "--quiet"], &env).await;
    assert_eq!(code, Some(0), "{stderr}");
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "{forbidden} in the report");
    }
    let page = scratch.write("report.html", &html);
    let url = url::Url::from_file_path(&page)
        .expect("file URL")
        .to_string();
    let dom = run_chromium(&["--dump-dom", &url]);
    assert!(!dom.contains("<script"), "a script in the rendered page");
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    let articles: Vec<&str> = dom.split("<article").skip(1).collect();
    assert_eq!(articles.len(), open.len(), "one article per open finding");
    for finding in &open {
        let rule = finding["rule"].as_str().expect("rule");
        let resource = finding["resource"].as_str().expect("resource");
        let name = resource.rsplit('/').next().unwrap_or(resource);
        let article = articles
            .iter()
            .find(|a| a.contains(&format!("<code>{rule}</code>")) && a.contains(&escape(name)))
            .unwrap_or_else(|| panic!("no article for {rule} on {resource}"));
        assert!(article.contains("How to fix"), "{rule}: {article}");
        assert!(
            article.contains("Documentation: <a href=\"https://learn.microsoft.com/"),
            "{rule}"
        );
    }
    assert!(
        dom.contains("--enable-purge-protection true"),
        "the az command"
    );
    for section in ["By severity", "By rule", "By workspace"] {
        assert!(dom.contains(section), "{section}");
    }

    // The README's picture of it, taken with the same Chromium.
    let png = repo_root().join("docs/img/report.png");
    if std::env::var_os("CMKGUARD_BLESS").is_some() {
        run_chromium(&[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,1500",
            "--hide-scrollbars",
            &url,
        ]);
    }
    assert!(
        png.is_file(),
        "docs/img/report.png: run with CMKGUARD_BLESS=1 once"
    );
}

/// What the HTML serializer writes for `text` in a text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
