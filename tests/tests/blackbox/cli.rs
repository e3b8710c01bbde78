//! The command line: `--version`, `--help`, `evaluate`.

use std::process::Command;

use azure_sim::{Sim, SimOptions, Tenant};
use cmk_guard_blackbox::{binary, fixtures_dir};
use serde_json::Value;

/// Runs the CLI against a simulator, as a person with a configured identity would.
async fn run_against(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run cmk-guard");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .output()
        .expect("run cmk-guard");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("cmk-guard {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for word in ["serve", "evaluate"] {
        assert!(out.contains(word), "{out}");
    }
}

#[test]
fn without_a_command_or_port_it_says_what_to_do() {
    let (code, _, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("FUNCTIONS_CUSTOMHANDLER_PORT"), "{err}");
}

#[tokio::test]
async fn evaluate_prints_the_outcome_of_an_event_file() {
    let sim = Sim::start(Tenant::compliant().expect("tenant"), SimOptions::default())
        .await
        .expect("sim");
    let path = fixtures_dir().join("events/cloudevents/Microsoft.KeyVault.KeyNearExpiry.json");
    let (code, out, err) = run_against(
        &sim,
        &["evaluate", "--event", path.to_str().unwrap_or_default()],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let outcome: Value = serde_json::from_str(&out).expect("JSON outcome");
    assert_eq!(outcome["disposition"], "evaluated");
    assert_eq!(outcome["event"]["type"], "Microsoft.KeyVault.KeyNearExpiry");
    assert_eq!(
        outcome["workspaces"].as_array().map(Vec::len),
        Some(1),
        "{outcome}"
    );

    let ws = outcome["workspaces"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (code, out, err) = run_against(&sim, &["evaluate", "--resource", &ws]).await;
    assert_eq!(code, Some(0), "{err}");
    let outcome: Value = serde_json::from_str(&out).expect("JSON outcome");
    assert_eq!(outcome["workspaces"][0], ws.as_str());

    let (code, out, err) =
        run_against(&sim, &["evaluate", "--resource", &ws, "--format", "table"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "0 finding(s) in 1 workspace(s)",
        "the compliant tenant has no findings"
    );

    let batch = fixtures_dir()
        .join("events/eventgrid-schema/Microsoft.KeyVault.CertificateNearExpiry.json");
    let (code, out, _) = run(&["evaluate", "--event", batch.to_str().unwrap_or_default()]);
    assert_eq!(code, Some(0));
    let outcomes: Value = serde_json::from_str(&out).expect("JSON");
    let first = if outcomes.is_array() {
        &outcomes[0]
    } else {
        &outcomes
    };
    assert_eq!(first["disposition"], "ignored");
}

#[test]
fn evaluate_exits_non_zero_on_bad_input() {
    let dir = std::env::temp_dir().join(format!("cmk-guard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"eventType\": 1}").expect("write");
    let (code, out, _) = run(&["evaluate", "--event", bad.to_str().unwrap_or_default()]);
    assert_eq!(code, Some(1));
    assert!(out.contains("\"rejected\""), "{out}");
    let (code, _, err) = run(&[
        "evaluate",
        "--event",
        dir.join("missing.json").to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = run(&["evaluate", "--resource", "not-an-id"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not an ARM resource id"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
