//! `cmk-guard scan`: the table and JSON outputs against golden files, and the exit codes that
//! make it a CI gate. Regenerate the golden files with `CMKGUARD_BLESS=1` after a deliberate
//! change, and review the diff.

use std::path::PathBuf;

use azure_sim::{Grant, KeySpec, Sim, SimOptions, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::repo_root;
use serde_json::Value;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const CLEAN_SUB: &str = "5b8e2d4f-1a3c-4e6b-9d7f-0c2a4e6b8d1f";
const RG: &str = "rg-scan";

pub(super) fn tenant() -> Tenant {
    let chain = |name: &str,
                 vault: VaultSpec,
                 key: KeySpec,
                 ws: fn(WorkspaceSpec) -> WorkspaceSpec,
                 sub: &str| {
        let vault_name = format!("kv-{name}");
        let vault = VaultSpec {
            subscription: sub.into(),
            resource_group: RG.into(),
            name: vault_name.clone(),
            ..vault
        };
        (
            vault.key(key),
            ws(WorkspaceSpec::new(sub, RG, &format!("ws-{name}")).cmk(&vault_name, "key")),
        )
    };
    let rsa = || KeySpec::rsa("key", 3072);
    let parts = [
        chain("ok", VaultSpec::default(), rsa(), |w| w, SUB),
        chain(
            "purge",
            VaultSpec::default().purge_protection(None),
            rsa(),
            |w| w,
            SUB,
        ),
        chain(
            "small",
            VaultSpec::default(),
            KeySpec::rsa("key", 2048),
            |w| w,
            SUB,
        ),
        chain(
            "endpoints",
            VaultSpec::default(),
            rsa(),
            |w| w.online_endpoint("score"),
            SUB,
        ),
        chain(
            "norole",
            VaultSpec::default(),
            rsa(),
            |w| w.with_cmk(|c| c.grant = Grant::None),
            SUB,
        ),
        chain("clean", VaultSpec::default(), rsa(), |w| w, CLEAN_SUB),
    ];
    let mut builder = Tenant::builder().subscription(SUB).subscription(CLEAN_SUB);
    for (vault, workspace) in parts {
        builder = builder.vault(vault).workspace(workspace);
    }
    builder.build().expect("tenant")
}

async fn scan(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<&str> = std::iter::once("scan")
        .chain(args.iter().copied())
        .collect();
    cmk_guard_blackbox::run_cli_with(&args, sim.handler_env()).await
}

fn golden(name: &str, actual: &str) {
    let path: PathBuf = repo_root().join("tests/golden").join(name);
    if std::env::var_os("CMKGUARD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CMKGUARD_BLESS=1 once)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is deliberate, re-bless and review",
        path.display()
    );
}

#[tokio::test]
async fn table_and_json_match_the_golden_files() {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("sim");
    let (code, table, err) = scan(&sim, &["--subscription", SUB]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains("\x1b[2K") && !err.contains("subs 1/1"),
        "no progress indicator when stderr is not a terminal: {err:?}"
    );
    golden("scan.table.txt", &table);

    let (code, json, err) = scan(&sim, &["--subscription", SUB, "--format", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let mut outcome: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(outcome["event"]["type"], "cmk-guard.Scan");
    outcome["event"]["id"] = Value::String("<scan id>".into());
    golden(
        "scan.json",
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&outcome).expect("JSON")
        ),
    );
}

#[tokio::test]
async fn fail_on_makes_it_a_gate() {
    let sim = Sim::start(tenant(), SimOptions::default())
        .await
        .expect("sim");
    // The dirty subscription has a critical finding (no key access) and high ones.
    assert_eq!(
        scan(&sim, &["--subscription", SUB, "--fail-on", "critical"])
            .await
            .0,
        Some(1)
    );
    assert_eq!(
        scan(&sim, &["--subscription", SUB, "--fail-on", "high"])
            .await
            .0,
        Some(1)
    );
    // The clean subscription passes even the strictest gate.
    let (code, out, _) = scan(&sim, &["--subscription", CLEAN_SUB, "--fail-on", "low"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "0 finding(s) in 1 workspace(s)");
    // Both subscriptions at once.
    let (code, out, _) = scan(&sim, &["--subscription", SUB, "--subscription", CLEAN_SUB]).await;
    assert_eq!(code, Some(0));
    assert!(out.trim_end().ends_with("in 6 workspace(s)"), "{out}");
    // Bad input.
    let (code, _, err) = scan(&sim, &["--subscription", "not-a-guid"]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("--subscription"), "{err}");
    let (code, _, _) = scan(&sim, &["--fail-on", "severe"]).await;
    assert_eq!(code, Some(2));
}
