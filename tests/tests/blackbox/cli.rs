//! The command line: `--version`, `--help`, `evaluate`.

use std::process::Command;

use azure_sim::{Sim, SimOptions, Tenant};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{binary, fixtures_dir, run_cli as run};
use serde_json::Value;

/// Runs the CLI against a simulator, as a person with a configured identity would.
async fn run_against(sim: &Sim, args: &[&str]) -> (Option<i32>, String, String) {
    cmk_guard_blackbox::run_cli_with(args, sim.handler_env()).await
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
    let scratch = Scratch::new("cli");
    let bad = scratch.write("bad.json", "{\"eventType\": 1}");
    let (code, out, _) = run(&["evaluate", "--event", bad.to_str().unwrap_or_default()]);
    assert_eq!(code, Some(1));
    assert!(out.contains("\"rejected\""), "{out}");
    let (code, _, err) = run(&[
        "evaluate",
        "--event",
        scratch.join("missing.json").to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = run(&["evaluate", "--resource", "not-an-id"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not an ARM resource id"), "{err}");
}

/// A directory that holds no program: as `PATH`, it guarantees that no `az` or `azd` on the
/// machine can sign cmk-guard in. Removed on drop.
struct EmptyPath(Scratch);

impl EmptyPath {
    fn new() -> Self {
        Self(Scratch::new("no-az"))
    }

    fn as_str(&self) -> &str {
        self.0.path().to_str().unwrap_or_default()
    }
}

/// Runs the CLI with no way to sign in: no managed identity or service principal variables,
/// and a `PATH` without `az`/`azd`.
fn run_signed_out(args: &[&str]) -> (Option<i32>, String, String) {
    let path = EmptyPath::new();
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", path.as_str())
        .output()
        .expect("run cmk-guard");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The one clean paragraph a missing credential gets, wherever it is reported.
fn assert_no_credential_paragraph(text: &str, context: &str) {
    for part in [
        "no Azure credential found",
        "IDENTITY_ENDPOINT",
        "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
        "az login",
        "azd auth login",
    ] {
        assert!(text.contains(part), "{context}: names {part:?}: {text}");
    }
    let order: Vec<usize> = [
        "IDENTITY_ENDPOINT",
        "AZURE_CLIENT_SECRET",
        "az login",
        "azd auth",
    ]
    .iter()
    .filter_map(|part| text.find(part))
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{context}: in the order they are tried: {text}"
    );
    for raw in [
        "\u{fffd}",
        "\\n",
        "AzureCliCredential",
        "Multiple errors",
        "troubleshoot",
    ] {
        assert!(
            !text.contains(raw),
            "{context}: not the library's dump ({raw:?}): {text}"
        );
    }
}

#[test]
fn without_any_sign_in_every_command_that_reads_azure_is_a_configuration_error() {
    let workspace = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";
    let event = fixtures_dir().join("events/cloudevents/Microsoft.KeyVault.KeyNearExpiry.json");
    let commands: [&[&str]; 4] = [
        &["evaluate", "--resource", workspace],
        &["evaluate", "--resource", workspace, "--format", "table"],
        &["evaluate", "--event", event.to_str().unwrap_or_default()],
        &[
            "scan",
            "--subscription",
            "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34",
        ],
    ];
    for args in commands {
        let (code, out, err) = run_signed_out(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(
            out, "",
            "{args:?}: nothing was checked, so nothing is shown"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one paragraph: {err}"
        );
        assert_no_credential_paragraph(&err, &format!("{args:?}"));
    }
}

#[test]
fn evaluate_without_arguments_names_both_inputs() {
    let (code, _, err) = run(&["evaluate"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--event") && err.contains("--resource"),
        "{err}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [
        &["--help"][..],
        &["evaluate", "--help"],
        &["scan", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, Some(0));
        for line in [
            "0  complete",
            "1  scan",
            "2  bad arguments",
            "3  incomplete",
        ] {
            assert!(out.contains(line), "{args:?}: {line}: {out}");
        }
    }
}

/// One CMK workspace whose chain is compliant, in one subscription.
fn one_workspace() -> (Tenant, String) {
    use azure_sim::{KeySpec, VaultSpec, WorkspaceSpec};
    let sub = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
    let workspace = WorkspaceSpec::new(sub, "rg-cli", "ws-cli").cmk("kv-cli", "cmk");
    let id = workspace.id();
    let tenant = Tenant::builder()
        .subscription(sub)
        .vault(VaultSpec::new(sub, "rg-cli", "kv-cli").key(KeySpec::rsa("cmk", 3072)))
        .workspace(workspace)
        .build()
        .expect("tenant");
    (tenant, id)
}

#[tokio::test]
async fn forbidden_everywhere_is_reported_as_incomplete_never_as_compliant() {
    let (tenant, workspace) = one_workspace();
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .expect("sim");
    // Tokens are still issued: cmk-guard is signed in, its identity just may not read.
    sim.add_fault(
        azure_sim::Fault::on_everything()
            .host("management.azure.com")
            .status(403),
    );
    let visibility = |outcome: &Value| -> Vec<Value> {
        outcome["findings"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|f| f["rule"] == "guard.visibility" && f["state"] == "open")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let advises_reader = |finding: &Value| {
        finding["observed"]
            .as_str()
            .is_some_and(|o| o.contains("lacks read on") && o.contains("grant it Reader"))
    };

    let (code, out, err) = run_against(&sim, &["evaluate", "--resource", &workspace]).await;
    assert_eq!(code, Some(3), "incomplete: {err}");
    let outcome: Value = serde_json::from_str(&out).expect("JSON outcome");
    let unseen = visibility(&outcome);
    assert!(
        unseen
            .iter()
            .any(|f| f["resource"] == workspace.as_str() && advises_reader(f)),
        "the workspace read is reported with what to grant: {outcome:#}"
    );
    assert!(err.contains("incomplete"), "{err}");

    let (code, table, _) = run_against(
        &sim,
        &["evaluate", "--resource", &workspace, "--format", "table"],
    )
    .await;
    assert_eq!(code, Some(3));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("WORKSPACE"), "{table}");
    assert!(
        lines[1].contains("guard.visibility"),
        "what could not be read comes first: {table}"
    );
    assert!(
        table.contains("incomplete, cmk-guard could not read:")
            && table.contains("grant it Reader"),
        "the table shows the whole advice: {table}"
    );

    for fail_on in [None, Some("critical"), Some("low")] {
        let mut args = vec![
            "scan",
            "--subscription",
            "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34",
        ];
        args.extend(fail_on.iter().flat_map(|s| ["--fail-on", *s]));
        args.extend(["--format", "json"]);
        let (code, out, err) = run_against(&sim, &args).await;
        assert_eq!(code, Some(3), "{args:?}: incomplete wins over 1: {err}");
        let outcome: Value = serde_json::from_str(&out).expect("JSON outcome");
        let unseen = visibility(&outcome);
        assert!(
            unseen.iter().any(|f| f["resource"]
                == "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34"
                && f["observed"]
                    .as_str()
                    .is_some_and(|o| o.contains("list of ML workspaces"))
                && advises_reader(f)),
            "{args:?}: the workspace list that could not be read is a finding: {outcome:#}"
        );
    }
}

#[tokio::test]
async fn serve_without_any_sign_in_stays_ready_and_fails_invocations_with_the_reason() {
    use cmk_guard_blackbox::{Handler, envelope};
    let (tenant, workspace) = one_workspace();
    let sim = Sim::start(tenant, SimOptions::default())
        .await
        .expect("sim");
    let path = EmptyPath::new();
    let handler = Handler::launch(
        sim,
        &[
            ("IDENTITY_ENDPOINT", ""),
            ("IDENTITY_HEADER", ""),
            ("PATH", path.as_str()),
        ],
    )
    .await;
    assert_eq!(
        handler.get("/").await.status,
        200,
        "the host needs readiness"
    );

    let event = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34",
        "subject": workspace,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write",
                 "resourceUri": workspace, "subscriptionId": "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34"},
        "dataVersion": "2", "metadataVersion": "1"
    });
    let reply = handler
        .invoke(
            "OnSubscriptionEvent",
            envelope("event", &event, "OnSubscriptionEvent"),
        )
        .await;
    assert_eq!(
        reply.status, 503,
        "transient until a credential works: {:?}",
        reply.body
    );
    let logs = reply.logs().join("\n");
    assert!(logs.contains("delivered again"), "{logs}");
    assert_no_credential_paragraph(&logs, "the invocation's Logs");
    assert!(
        !visibility_rules(reply.outcome()).is_empty(),
        "the outcome does not look compliant: {}",
        reply.outcome()
    );

    // The startup check logs the same paragraph once, in the background.
    let started = std::time::Instant::now();
    let logged = loop {
        let lines = handler.stdout.snapshot();
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("No Azure credential found."))
        {
            break line.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no startup log of the missing credential: {lines:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_no_credential_paragraph(&logged, "the startup log");
    assert_eq!(handler.get("/").await.status, 200, "still answering");
}

fn visibility_rules(outcome: &Value) -> Vec<&Value> {
    outcome["findings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|f| f["rule"] == "guard.visibility")
                .collect()
        })
        .unwrap_or_default()
}
