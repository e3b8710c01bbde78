//! `cmk-guard who-uses` and `POST /api/who-uses`: a key's blast radius from Resource Graph, within
//! the allowlist, through the CLI, the forwarded route and the host's envelope.

use azure_sim::WorkspaceSpec;
use azure_sim::encrypted;
use azure_sim::{Fault, KeySpec, KeyVersionSpec, Sim, SimOptions, Tenant, VaultSpec, VersionPin};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::smtp::Smtp;
use cmk_guard_blackbox::{Handler, story};
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const OUTSIDE: &str = "7c1e9a3b-2d4f-4a6c-8e0b-1f3d5a7c9e2b";
const VAULT: &str = "kv-shared";
const KEY: &str = "https://kv-shared.vault.azure.net/keys/cmk";

fn vault_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/{VAULT}"
    )
}

fn storage_id(subscription: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

fn cosmos_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.DocumentDB/databaseAccounts/db-other"
    )
}

/// Three workspaces on one key (ws-a on its older version), a storage account following the
/// key's latest version, the same in a subscription outside the allowlist, and a Cosmos DB
/// account on another key of the vault.
async fn sim() -> (Sim, [String; 2]) {
    let pinned = |name: &str, pin: &str| {
        WorkspaceSpec::new(SUB, "rg-ml", name)
            .cmk(VAULT, "cmk")
            .with_cmk(|c| c.version = VersionPin::Named(pin.into()))
    };
    let tenant = Tenant::builder()
        .subscription(SUB)
        .subscription(OUTSIDE)
        .vault(
            VaultSpec {
                subscription: SUB.into(),
                resource_group: "rg-keys".into(),
                name: VAULT.into(),
                ..VaultSpec::default()
            }
            .key(KeySpec::rsa("cmk", 3072).older_version(KeyVersionSpec::default()))
            .key(KeySpec::rsa("other", 3072)),
        )
        .workspace(pinned("ws-a", "oldest"))
        .workspace(pinned("ws-b", "latest"))
        .workspace(pinned("ws-c", "latest"))
        .build()
        .expect("tenant");
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .expect("sim");
    let version = |name: &str| {
        sim.tenant(|t| {
            let key = t
                .workspace(name)
                .and_then(|w| w.encryption.as_ref())
                .map(|e| e.key_identifier.clone());
            key.and_then(|k| k.rsplit('/').next().map(str::to_owned))
                .expect("pinned version")
        })
    };
    let (oldest, latest) = (version("ws-a"), version("ws-b"));
    assert_ne!(oldest, latest);
    let admin = sim.admin();
    admin
        .add_managed_resources("ws-a")
        .expect("managed resources");
    admin
        .put_resource(
            &storage_id(SUB, "stdata"),
            &encrypted::storage_account(KEY, Some(&latest)),
        )
        .expect("storage");
    admin
        .put_resource(
            &storage_id(OUTSIDE, "stoutside"),
            &encrypted::storage_account(KEY, Some(&latest)),
        )
        .expect("storage outside");
    admin
        .put_resource(
            &cosmos_id(),
            &encrypted::cosmos_account("https://kv-shared.vault.azure.net/keys/other", None),
        )
        .expect("cosmos");
    (sim, [oldest, latest])
}

fn env(sim: &Sim) -> Vec<(String, String)> {
    let mut env = sim.handler_env();
    env.push(("CMKGUARD_SUBSCRIPTIONS".into(), SUB.into()));
    env
}

async fn cli(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<&str> = std::iter::once("who-uses")
        .chain(args.iter().copied())
        .collect();
    cmk_guard_blackbox::run_cli_with(&args, env(sim)).await
}

async fn cli_json(sim: &Sim, target: &str) -> Value {
    let (code, out, err) = cli(sim, &[target, "--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).expect("JSON report")
}

/// The names (last id segment) of the workspaces and of the other resources.
fn names(report: &Value) -> (Vec<String>, Vec<String>) {
    let name = |v: &Value| {
        v["id"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or_default()
            .to_owned()
    };
    let list = |key: &str| {
        report[key]
            .as_array()
            .map(|a| a.iter().map(name).collect())
            .unwrap_or_default()
    };
    (list("workspaces"), list("otherResources"))
}

#[tokio::test]
async fn a_shared_key_lists_its_three_workspaces_and_the_storage_account() {
    let (sim, [oldest, _]) = sim().await;
    let report = cli_json(&sim, KEY).await;
    assert_eq!(report["complete"], true);
    let (workspaces, others) = names(&report);
    assert_eq!(workspaces, ["ws-a", "ws-b", "ws-c"]);
    // Not the account outside the allowlist, nor the Cosmos DB account on another key.
    assert_eq!(others, ["stdata"]);
    let ws_a = &report["workspaces"][0];
    assert_eq!(ws_a["version"], oldest.as_str());
    // Its Microsoft-managed storage, Cosmos DB and Search, listed under it.
    let managed: Vec<&str> = ws_a["managedResources"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        managed,
        [
            "microsoft.documentdb/databaseaccounts",
            "microsoft.search/searchservices",
            "microsoft.storage/storageaccounts"
        ]
    );
    assert_eq!(report["otherResources"][0]["version"], "latest");

    let (code, table, err) = cli(&sim, &[KEY]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains("3 workspaces and 1 other resource use this key."),
        "{table}"
    );
    assert!(table.contains(&storage_id(SUB, "stdata")), "{table}");
}

#[tokio::test]
async fn a_versioned_key_lists_only_what_uses_that_version() {
    let (sim, [oldest, latest]) = sim().await;
    let report = cli_json(&sim, &format!("{KEY}/{oldest}")).await;
    assert_eq!(names(&report), (vec!["ws-a".to_owned()], vec![]));
    // The storage account follows the latest version, which is in use.
    let report = cli_json(&sim, &format!("{KEY}/{latest}")).await;
    assert_eq!(
        names(&report),
        (
            vec!["ws-b".to_owned(), "ws-c".to_owned()],
            vec!["stdata".to_owned()]
        )
    );
    assert_eq!(report["otherResources"][0]["versionInUse"], latest.as_str());
}

#[tokio::test]
async fn a_vault_id_lists_every_key_of_the_vault() {
    let (sim, _) = sim().await;
    let report = cli_json(&sim, &vault_id()).await;
    let (workspaces, others) = names(&report);
    assert_eq!(workspaces, ["ws-a", "ws-b", "ws-c"]);
    assert_eq!(others, ["db-other", "stdata"]);
}

#[tokio::test]
async fn nothing_outside_the_allowlist_is_searched() {
    let (sim, _) = sim().await;
    let (code, out, err) = cli(&sim, &[KEY, "--subscription", OUTSIDE]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(err.contains("is not in CMKGUARD_SUBSCRIPTIONS"), "{err}");
    let queries = sim.requests(&Default::default());
    let graph: Vec<_> = queries
        .iter()
        .filter(|r| {
            r.path
                .to_ascii_lowercase()
                .contains("microsoft.resourcegraph")
        })
        .collect();
    assert!(graph.is_empty(), "nothing was read: {graph:?}");
    // A key nobody uses: complete, empty, exit 0.
    let (code, out, err) = cli(
        &sim,
        &[
            "https://kv-shared.vault.azure.net/keys/unused",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(names(&report), (vec![], vec![]));
}

#[tokio::test]
async fn hostile_targets_are_refused_before_anything_is_read() {
    let (sim, _) = sim().await;
    for target in [
        "kv-shared",
        "https://kv-shared.vault.azure.net.evil.example/keys/cmk",
        "https://kv-shared.vault.azure.net/keys/c'm|k",
        "https://kv-shared.vault.azure.net/keys/cmk\u{1b}[2J",
        "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa",
        &"a".repeat(10_000),
    ] {
        let (code, out, err) = cli(&sim, &[target]).await;
        assert_eq!(code, Some(2), "{target}: {out}");
        assert!(err.starts_with("cmk-guard: who-uses: "), "{err}");
        assert!(
            !err.contains('\u{1b}'),
            "no control characters echoed: {err:?}"
        );
        assert!(err.len() < 1000, "bounded: {}", err.len());
    }
    let graph = sim
        .requests(&Default::default())
        .into_iter()
        .filter(|r| {
            r.path
                .to_ascii_lowercase()
                .contains("microsoft.resourcegraph")
        })
        .count();
    assert_eq!(graph, 0);
}

#[tokio::test]
async fn post_api_who_uses_answers_like_the_cli() {
    let (sim, _) = sim().await;
    let expected = cli_json(&sim, KEY).await;
    let handler = Handler::launch(sim, &[("CMKGUARD_SUBSCRIPTIONS", SUB)]).await;
    let forwarded = handler
        .post_chunked(
            "/api/who-uses",
            json!({"target": KEY}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.body);
    assert_eq!(names(&forwarded.body), names(&expected));
    assert_eq!(forwarded.body["workspaces"], expected["workspaces"]);

    // Without forwarding: the request in `Data.req`, the answer in `Outputs.res`.
    let request = json!({"Url": "http://localhost/api/who-uses", "Method": "POST", "Body": json!({"target": vault_id()}).to_string()});
    let envelope = json!({"Data": {"req": request}, "Metadata": {}})
        .to_string()
        .into_bytes();
    let reply = handler.invoke("WhoUses", envelope).await;
    assert_eq!(reply.status, 200);
    let res = &reply.body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{res}");
    let body: Value =
        serde_json::from_str(res["body"].as_str().unwrap_or_default()).expect("JSON body");
    assert_eq!(names(&body).1, ["db-other", "stdata"]);

    for (bad, why) in [
        (b"not json".to_vec(), "must be JSON"),
        (
            json!({"resource": KEY}).to_string().into_bytes(),
            "`target`",
        ),
        (json!({"target": 42}).to_string().into_bytes(), "`target`"),
        (
            json!({"target": "https://evil.example/keys/cmk"})
                .to_string()
                .into_bytes(),
            "not a Key Vault key URL",
        ),
        (
            json!({"target": "https://kv1.vault.azure.net/keys/cmk\u{7}"})
                .to_string()
                .into_bytes(),
            "control characters",
        ),
    ] {
        let reply = handler.post_chunked("/api/who-uses", bad).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        let error = reply.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{error}");
    }
    let huge = json!({"target": "x".repeat(64 * 1024)})
        .to_string()
        .into_bytes();
    let reply = handler.post_chunked("/api/who-uses", huge).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
}

#[tokio::test]
async fn a_throttled_or_failing_resource_graph_makes_it_incomplete() {
    let (sim, _) = sim().await;
    // A Retry-After beyond the deadline: nothing to wait for.
    let fault = sim.add_fault(Fault::on_operation("ResourceGraph_Resources").throttle(3600));
    let (code, out, err) = cli(&sim, &[KEY, "--format", "json"]).await;
    assert_eq!(code, Some(3), "{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["complete"], false);
    assert!(
        err.contains("incomplete: Resource Graph could not be read"),
        "{err}"
    );
    sim.remove_fault(fault);

    sim.add_fault(Fault::on_operation("ResourceGraph_Resources").status(500));
    let handler = Handler::launch(sim, &[("CMKGUARD_SUBSCRIPTIONS", SUB)]).await;
    let reply = handler
        .post_chunked(
            "/api/who-uses",
            json!({"target": KEY}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["complete"], false);
    assert!(
        reply.body["incompleteReason"]
            .as_str()
            .is_some_and(|r| r.contains("Resource Graph"))
    );
}

/// Teams and email for every severity, no remediation.
const TEAMS_AND_EMAIL: &str = r#"
[notify]
teams = ["critical", "high", "medium", "low"]
email = ["critical", "high", "medium", "low"]
"#;

/// The story's workspace (its vault lacks purge protection) and a storage account on its key,
/// with Teams and email; `fault` is set on the simulator before the handler starts.
async fn alerting(fault: Option<Fault>) -> (Handler, Sink, Smtp, Scratch) {
    let scratch = Scratch::new("who-uses-alerts");
    let tls_dir = scratch.join("tls");
    let options = SimOptions {
        tls_out: Some(tls_dir.clone()),
        ..SimOptions::default()
    };
    let sim = Sim::start(story::tenant(), options).await.expect("sim");
    let key = format!(
        "https://{}.vault.azure.net/keys/{}",
        story::VAULT,
        story::KEY
    );
    sim.admin()
        .put_resource(
            &storage_id(story::SUB, "stshared"),
            &encrypted::storage_account(&key, None),
        )
        .expect("storage");
    if let Some(fault) = fault {
        sim.add_fault(fault);
    }
    let smtp = Smtp::start(&tls_dir).await;
    let teams = Sink::start().await;
    let policy = scratch
        .write("policy.toml", TEAMS_AND_EMAIL)
        .display()
        .to_string();
    let (teams_url, smtp_url) = (teams.url("teams"), smtp.url());
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
            ("CMKGUARD_SMTP_URL", &smtp_url),
            ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.example"),
            ("CMKGUARD_EMAIL_TO", "ml-platform@contoso.example"),
        ],
    )
    .await;
    (handler, teams, smtp, scratch)
}

const COUNTS: &str = "1 workspace and 1 other resource use keys of this vault";

#[tokio::test]
async fn an_alert_on_a_vault_says_what_depends_on_it_in_teams_and_email() {
    let (handler, teams, smtp, _scratch) = alerting(None).await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[story::workspace_write()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let cards = teams.received("teams");
    assert_eq!(cards.len(), 1);
    let card = cards[0].body.to_string();
    assert!(card.contains("Depends on it"), "{card}");
    assert!(card.contains(COUNTS), "{card}");
    let mails = smtp.received();
    assert_eq!(mails.len(), 1);
    let mail = mails[0].to_string();
    assert!(mail.contains(COUNTS), "{mail}");
}

#[tokio::test]
async fn without_resource_graph_the_alert_goes_out_without_counts() {
    let fault = Fault::on_operation("ResourceGraph_Resources").status(403);
    let (handler, teams, smtp, _scratch) = alerting(Some(fault)).await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[story::workspace_write()])
        .await;
    assert_eq!(replies[0].status, 200, "{:?}", replies[0].body);
    let cards = teams.received("teams");
    assert_eq!(cards.len(), 1, "the alert is not held back");
    let card = cards[0].body.to_string();
    assert!(card.contains(story::FINDING), "{card}");
    assert!(!card.contains("Depends on it"), "{card}");
    assert!(!smtp.received()[0].to_string().contains("Depends on it"));
}
