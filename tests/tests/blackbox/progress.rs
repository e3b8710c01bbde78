//! `cmk-guard scan` shows its progress on a terminal: on stderr, only when stderr is a terminal
//! (run under a pseudo-terminal, tests/pty/run.py) and not `--quiet`; stdout, redirected to a
//! file, carries the JSON alone.

use std::process::Output;

use azure_sim::{Sim, SimOptions};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{binary, repo_root};
use serde_json::Value;

/// The subscription of `scan::tenant()` with five workspaces.
const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

/// `cmk-guard scan` with stderr on a pseudo-terminal and stdout into a file: (exit code, what
/// the terminal showed, stdout).
async fn scan_at_a_terminal(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    let scratch = Scratch::new("progress");
    let stdout = scratch.join("stdout.json");
    let output: Output = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/pty/run.py"))
        .arg(&stdout)
        .arg(binary())
        .arg("scan")
        .args(args)
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run python3 tests/pty/run.py");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        std::fs::read_to_string(&stdout).expect("stdout file"),
    )
}

#[tokio::test]
async fn a_terminal_sees_the_progress_and_stdout_stays_clean_json() {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let (code, terminal, stdout) =
        scan_at_a_terminal(&sim, &["--subscription", SUB, "--format", "json"]).await;
    assert_eq!(code, Some(0), "{terminal}");
    // Redrawn in place, and the last state is every workspace of the one subscription.
    assert!(terminal.contains("\r\x1b[2Ksubs "), "{terminal:?}");
    assert!(
        terminal.contains("subs 1/1, workspaces 5/5, reads "),
        "{terminal:?}"
    );
    assert!(terminal.contains(", took "), "{terminal:?}");
    let reads: u64 = terminal
        .rsplit("reads ")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a count of reads");
    assert!(reads > 0, "{terminal:?}");
    assert!(terminal.ends_with('\n'), "the line is ended: {terminal:?}");
    let outcome: Value = serde_json::from_str(&stdout).expect("stdout is JSON alone");
    assert_eq!(outcome["event"]["type"], "cmk-guard.Scan");
    assert!(!stdout.contains("subs "), "{stdout}");
}

#[tokio::test]
async fn quiet_or_a_redirected_stderr_shows_no_progress() {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let (code, terminal, stdout) = scan_at_a_terminal(
        &sim,
        &["--subscription", SUB, "--format", "json", "--quiet"],
    )
    .await;
    assert_eq!(code, Some(0), "{terminal}");
    assert!(!terminal.contains("workspaces"), "{terminal:?}");
    serde_json::from_str::<Value>(&stdout).expect("stdout is JSON alone");

    let output = tokio::process::Command::new(binary())
        .args(["scan", "--subscription", SUB, "--format", "json"])
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("run cmk-guard scan");
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("workspaces"), "{stderr:?}");
    serde_json::from_slice::<Value>(&output.stdout).expect("stdout is JSON alone");
}
