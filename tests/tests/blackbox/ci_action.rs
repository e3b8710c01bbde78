//! The GitHub Action (action.yml) and the Azure Pipelines example (docs/ci/azure-pipelines.yml)
//! run their one script, scripts/action/run, the way each CI system would: the action's step
//! with its inputs and GitHub's OIDC token endpoint (a local stand-in here), the pipeline's
//! inline script with the `idToken` its AzureCLI@2 task provides. Both sign in to azure-sim
//! through workload identity federation (azure-sim's Entra token endpoint checks the token
//! against the app's federated credential), scan, and write SARIF with the tenant's findings.
//! The release download path is run from a `file://` folder; GitHub's release server, the
//! upload-sarif action and the real Azure Pipelines agent are not run here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use azure_sim::model::{FederatedApp, FederatedCredential, RoleAssignment};
use azure_sim::{Sim, SimOptions};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{binary, repo_root};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};

/// The dirty subscription of `scan::tenant()`: a critical finding (no key access) and high ones.
const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const CLIENT_ID: &str = "6d2c1a4e-93b7-4f0a-8e55-1c7f2b9d0a31";
const PRINCIPAL_ID: &str = "b1e0f7c3-5a2d-4c89-9f16-3e7a0d4b8c52";
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "repo:contoso/ml-platform:ref:refs/heads/main";
/// An Azure DevOps service connection's issuer and subject (its organization id, then
/// `sc://{organization}/{project}/{connection}`).
const DEVOPS_ISSUER: &str = "https://vstoken.dev.azure.com/5c7f2a90-3d1b-4e8a-9b64-0f2e7d1c8a35";
const DEVOPS_SUBJECT: &str = "sc://contoso/ml-platform/cmk-guard-workload-identity";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

/// azure-sim serving the scan tenant, with an app whose federated credential trusts GitHub
/// tokens of `SUBJECT`, and Reader for its service principal on `SUB` only.
async fn sim() -> Sim {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    sim.tenant_mut(|tenant| {
        tenant.federated_apps.push(FederatedApp {
            client_id: CLIENT_ID.into(),
            principal_id: PRINCIPAL_ID.into(),
            credentials: vec![
                FederatedCredential::new(GITHUB_ISSUER, SUBJECT),
                FederatedCredential::new(DEVOPS_ISSUER, DEVOPS_SUBJECT),
            ],
        });
        tenant.role_assignments.push(RoleAssignment {
            name: "0f3c9a52-7d1e-4b6a-8c24-95e1f0a7b3d8".into(),
            scope: format!("/subscriptions/{SUB}"),
            role_definition_guid: READER.into(),
            principal_id: PRINCIPAL_ID.into(),
            principal_type: "ServicePrincipal".into(),
            condition: None,
            created: 0,
            created_by: "ci".into(),
        });
    });
    sim
}

/// The simulator's variables except its managed identity (CI has none), and Entra's host.
fn azure_env(sim: &Sim) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = sim
        .handler_env()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("IDENTITY_"))
        .collect();
    env.push((
        "AZURE_AUTHORITY_HOST".into(),
        format!("https://localhost:{}", sim.https_port()),
    ));
    env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    env
}

/// An external OIDC token (unsigned: azure-sim does not check signatures).
fn oidc_token(issuer: &str, subject: &str, audience: &str, expires_in: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": issuer, "sub": subject, "aud": audience,
        "iat": now, "nbf": now, "exp": now + expires_in,
        "repository": "contoso/ml-platform", "ref": "refs/heads/main",
    });
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"test"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// GitHub's OIDC token endpoint as a runner sees it: `GET {ACTIONS_ID_TOKEN_REQUEST_URL}&audience=…`
/// with `Authorization: Bearer {ACTIONS_ID_TOKEN_REQUEST_TOKEN}`; answers `{"value": token}`
/// for the audience asked, 401 without the request token. Keeps the targets asked for.
struct GitHubOidc {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

const REQUEST_TOKEN: &str = "runner-request-token";

impl GitHubOidc {
    async fn start() -> GitHubOidc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    let Some(request) = cmk_guard_blackbox::http1::read_request(&mut reader).await
                    else {
                        return;
                    };
                    seen.lock().unwrap().push(request.target.clone());
                    let authorised = request.headers.iter().any(|(name, value)| {
                        name == "authorization" && value == &format!("Bearer {REQUEST_TOKEN}")
                    });
                    let audience = url::Url::parse(&format!("http://x{}", request.target))
                        .ok()
                        .and_then(|u| {
                            u.query_pairs()
                                .find(|(k, _)| k == "audience")
                                .map(|(_, v)| v.into_owned())
                        });
                    let (status, body) = match (authorised, audience) {
                        (true, Some(audience)) => (
                            "200 OK",
                            json!({"count": 1, "value": oidc_token(GITHUB_ISSUER, SUBJECT, &audience, 300)})
                                .to_string(),
                        ),
                        _ => ("401 Unauthorized", "{}".to_owned()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = write.write_all(response.as_bytes()).await;
                });
            }
        });
        GitHubOidc {
            url: format!("http://127.0.0.1:{port}/_apis/distributedtask/token?api-version=2.0"),
            asked,
        }
    }
}

/// A YAML file of the repository as JSON (PyYAML from scripts/test-tools' venv).
fn yaml(path: &str) -> Value {
    let python = repo_root().join(".tools/venv/bin/python");
    let output = std::process::Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo_root().join(path))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/test-tools", python.display()));
    assert!(
        output.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("YAML as JSON")
}

/// Runs bash `script` from the repository root with exactly `env`: (exit code, stderr).
async fn bash(script: &str, env: &[(String, String)]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(repo_root())
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .expect("bash");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The rule ids of the open findings `cmk-guard scan --format json` reports for `SUB` (signed
/// in as the app itself through the simulator's managed identity).
async fn expected_rules(sim: &Sim) -> BTreeSet<String> {
    let output = tokio::process::Command::new(binary())
        .args(["scan", "--subscription", SUB, "--format", "json"])
        .env_clear()
        .envs(sim.handler_env())
        .output()
        .await
        .expect("scan");
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let rules: BTreeSet<String> = outcome["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["state"] == "open")
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect();
    assert!(rules.len() >= 3, "{outcome}");
    rules
}

/// The SARIF file's rule ids, after checking its version.
fn sarif_rules(path: &Path) -> BTreeSet<String> {
    let sarif: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("SARIF file")).expect("JSON");
    assert_eq!(sarif["version"], "2.1.0");
    sarif["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["suppressions"].as_array().is_none_or(Vec::is_empty))
        .filter_map(|r| r["ruleId"].as_str().map(str::to_owned))
        .collect()
}

/// Whether azure-sim's Entra endpoint issued a token to the app's service principal, and ARM
/// then served reads to it.
fn signed_in_federated(sim: &Sim) -> bool {
    let requests = sim.requests(&Default::default());
    let by_principal = |operation: &dyn Fn(&str) -> bool| {
        requests.iter().any(|r| {
            operation(&r.operation) && r.status == 200 && r.caller.as_deref() == Some(PRINCIPAL_ID)
        })
    };
    by_principal(&|op| op == "Entra_Token") && by_principal(&|op| op != "Entra_Token")
}

/// The `env` of action.yml's scan step with `${{ inputs.* }}` filled in from `inputs` (the
/// action's defaults otherwise); the step's command.
fn action_step(inputs: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let action = yaml("action.yml");
    assert_eq!(action["runs"]["using"], "composite");
    let steps = action["runs"]["steps"].as_array().expect("steps");
    let scan = steps
        .iter()
        .find(|s| s["id"] == "scan")
        .expect("the scan step");
    let input = |name: &str| -> String {
        inputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| {
                action["inputs"][name]["default"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    let env = scan["env"]
        .as_object()
        .expect("env")
        .iter()
        .map(|(name, value)| {
            let value = value.as_str().expect("a string");
            let expression = value
                .strip_prefix("${{ inputs.")
                .and_then(|v| v.strip_suffix(" }}"))
                .unwrap_or_else(|| panic!("{name}: only inputs are passed: {value}"));
            assert!(
                action["inputs"].get(expression).is_some(),
                "{name}: no input {expression}"
            );
            (name.clone(), input(expression))
        })
        .collect();
    // The upload step sends the scan step's report to code scanning, even after a failed gate.
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("github/codeql-action/upload-sarif@"))
        })
        .expect("the upload-sarif step");
    assert_eq!(
        upload["with"]["sarif_file"],
        "${{ steps.scan.outputs.report }}"
    );
    assert!(
        upload["if"]
            .as_str()
            .is_some_and(|c| c.starts_with("always()"))
    );
    (scan["run"].as_str().expect("run").to_owned(), env)
}

#[tokio::test]
async fn the_action_signs_in_with_githubs_oidc_token_and_writes_the_tenants_findings_as_sarif() {
    let sim = sim().await;
    let expected = expected_rules(&sim).await;
    sim.reset_counters();
    let oidc = GitHubOidc::start().await;
    let scratch = Scratch::new("ci-action");
    let report = scratch.join("out/cmk-guard.sarif");
    let outputs = scratch.join("github-output");
    let binary = binary().display().to_string();
    let (command, mut env) = action_step(&[
        ("client-id", CLIENT_ID),
        ("tenant-id", &sim.info().tenant_id),
        ("subscriptions", SUB),
        ("fail-on", "critical"),
        ("output", report.to_str().expect("path")),
    ]);
    env.extend(azure_env(&sim));
    env.extend([
        (
            "GITHUB_ACTION_PATH".to_owned(),
            repo_root().display().to_string(),
        ),
        ("GITHUB_OUTPUT".to_owned(), outputs.display().to_string()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL".to_owned(), oidc.url.clone()),
        (
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN".to_owned(),
            REQUEST_TOKEN.to_owned(),
        ),
        // A prebuilt binary instead of the action's default build from source.
        ("INPUT_BINARY".to_owned(), binary),
    ]);
    let (code, stderr) = bash(&command, &env).await;
    assert_eq!(code, Some(1), "a critical finding fails the gate: {stderr}");
    assert!(
        signed_in_federated(&sim),
        "{:?}",
        sim.requests(&Default::default())
    );
    assert_eq!(sarif_rules(&report), expected);
    let asked = oidc.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].ends_with("&audience=api://AzureADTokenExchange"),
        "{asked:?}"
    );
    let written = std::fs::read_to_string(&outputs).expect("GITHUB_OUTPUT");
    assert!(
        written.contains(&format!("report={}\n", report.display())),
        "{written}"
    );
    assert!(written.contains("exit-code=1\n"), "{written}");
}

#[tokio::test]
async fn a_token_for_another_branch_is_refused_by_entra_and_nothing_is_scanned() {
    let sim = sim().await;
    let scratch = Scratch::new("ci-action-refused");
    let token = scratch.join("token");
    for (issuer, subject, audience, expires_in, code) in [
        (
            GITHUB_ISSUER,
            "repo:contoso/ml-platform:ref:refs/heads/feature",
            "api://AzureADTokenExchange",
            300,
            "AADSTS70021",
        ),
        (
            "https://evil.example",
            SUBJECT,
            "api://AzureADTokenExchange",
            300,
            "AADSTS70021",
        ),
        (
            GITHUB_ISSUER,
            SUBJECT,
            "api://SomethingElse",
            300,
            "AADSTS70021",
        ),
        (
            GITHUB_ISSUER,
            SUBJECT,
            "api://AzureADTokenExchange",
            -3600,
            "AADSTS700024",
        ),
    ] {
        sim.reset_counters();
        std::fs::write(&token, oidc_token(issuer, subject, audience, expires_in)).expect("token");
        let report = scratch.join("refused.sarif");
        let _ = std::fs::remove_file(&report);
        let mut env = azure_env(&sim);
        env.extend([
            (
                "AZURE_FEDERATED_TOKEN_FILE".to_owned(),
                token.display().to_string(),
            ),
            ("INPUT_CLIENT_ID".to_owned(), CLIENT_ID.to_owned()),
            ("INPUT_TENANT_ID".to_owned(), sim.info().tenant_id.clone()),
            ("INPUT_SUBSCRIPTIONS".to_owned(), SUB.to_owned()),
            ("INPUT_BINARY".to_owned(), binary().display().to_string()),
            ("INPUT_OUTPUT".to_owned(), report.display().to_string()),
        ]);
        let (exit, stderr) = bash("scripts/action/run", &env).await;
        let requests = sim.requests(&Default::default());
        let refused: Vec<_> = requests
            .iter()
            .filter(|r| r.operation == "Entra_Token")
            .collect();
        assert!(
            !refused.is_empty()
                && refused
                    .iter()
                    .all(|r| r.status == 400 && r.caller.is_none()),
            "{subject} {audience}: {requests:?}"
        );
        assert!(
            requests.iter().all(|r| r.operation == "Entra_Token"),
            "nothing is read without a token: {requests:?}"
        );
        // The scan cannot sign in: a configuration problem, or incomplete, never clean.
        assert!(matches!(exit, Some(2 | 3)), "{exit:?}: {stderr}");
        // Entra's reason reaches the person reading the job's log or the report.
        let written = std::fs::read_to_string(&report).unwrap_or_default();
        assert!(
            stderr.contains(code) || written.contains(code),
            "{code}: {stderr}\n{written}"
        );
    }
}

/// `scripts/action/run` with a release: the archive and the binary in it must match SHA256SUMS.
#[tokio::test]
async fn a_release_is_run_only_when_it_matches_its_checksums() {
    let sim = sim().await;
    let scratch = Scratch::new("ci-release");
    let release = scratch.join("v0.1.0");
    std::fs::create_dir_all(&release).expect("release dir");
    let zip = release.join("cmk-guard.zip");
    let packed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], 'cmk-guard')",
        ])
        .arg(&zip)
        .arg(binary())
        .status()
        .expect("python3");
    assert!(packed.success());
    let sha = |path: &Path| -> String {
        use sha2::Digest;
        let bytes = std::fs::read(path).expect("read");
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let sums = format!(
        "{}  cmk-guard.zip\n{}  app/cmk-guard\n",
        sha(&zip),
        sha(&binary())
    );
    let token = scratch.join("token");
    std::fs::write(
        &token,
        oidc_token(GITHUB_ISSUER, SUBJECT, "api://AzureADTokenExchange", 300),
    )
    .expect("token");
    let run = |sums: String| {
        std::fs::write(release.join("SHA256SUMS"), sums).expect("sums");
        let mut env = azure_env(&sim);
        env.extend([
            (
                "AZURE_FEDERATED_TOKEN_FILE".to_owned(),
                token.display().to_string(),
            ),
            ("INPUT_CLIENT_ID".to_owned(), CLIENT_ID.to_owned()),
            ("INPUT_TENANT_ID".to_owned(), sim.info().tenant_id.clone()),
            ("INPUT_SUBSCRIPTIONS".to_owned(), SUB.to_owned()),
            ("INPUT_VERSION".to_owned(), "v0.1.0".to_owned()),
            (
                "INPUT_RELEASE_URL".to_owned(),
                format!("file://{}", release.display()),
            ),
            (
                "INPUT_OUTPUT".to_owned(),
                scratch.join("release.sarif").display().to_string(),
            ),
        ]);
        async move { bash("scripts/action/run", &env).await }
    };
    let (code, stderr) = run(sums.clone()).await;
    assert_eq!(
        code,
        Some(0),
        "no --fail-on: the findings do not fail: {stderr}"
    );
    assert!(!sarif_rules(&scratch.join("release.sarif")).is_empty());

    let tampered = sums.replacen(&sha(&zip)[..8], "00000000", 1);
    let (code, stderr) = run(tampered).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not match SHA256SUMS"), "{stderr}");
    let wrong_binary = sums.replacen(&sha(&binary())[..8], "00000000", 1);
    let (code, stderr) = run(wrong_binary).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("binary in cmk-guard.zip does not match"),
        "{stderr}"
    );
}

/// The Azure Pipelines example: its AzureCLI@2 step (workload identity service connection,
/// `addSpnToEnvironment`) runs with the variables the task sets, and what it writes is what
/// PublishBuildArtifacts publishes.
#[tokio::test]
async fn the_azure_pipelines_example_runs_the_script_with_the_tasks_id_token() {
    let pipeline = yaml("docs/ci/azure-pipelines.yml");
    let steps = pipeline["steps"].as_array().expect("steps");
    let cli = steps
        .iter()
        .find(|s| s["task"] == "AzureCLI@2")
        .expect("an AzureCLI@2 step");
    assert_eq!(cli["inputs"]["addSpnToEnvironment"], true);
    assert_eq!(cli["inputs"]["scriptType"], "bash");
    let script = cli["inputs"]["inlineScript"]
        .as_str()
        .expect("inlineScript");
    assert!(script.contains("scripts/action/run"), "{script}");
    let publish = steps
        .iter()
        .find(|s| {
            s["task"]
                .as_str()
                .is_some_and(|t| t.starts_with("PublishBuildArtifacts@"))
        })
        .expect("a PublishBuildArtifacts step");
    let published = publish["inputs"]["PathtoPublish"]
        .as_str()
        .expect("PathtoPublish");

    let sim = sim().await;
    let expected = expected_rules(&sim).await;
    sim.reset_counters();
    let scratch = Scratch::new("ci-pipelines");
    let variables: Vec<(String, String)> = pipeline["variables"]
        .as_object()
        .expect("variables")
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "subscriptions" => SUB.to_owned(),
                _ => v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string()),
            };
            (k.clone(), value)
        })
        .chain([
            (
                "Agent.TempDirectory".to_owned(),
                scratch.join("agent-temp").display().to_string(),
            ),
            (
                "Build.ArtifactStagingDirectory".to_owned(),
                scratch.join("staging").display().to_string(),
            ),
        ])
        .collect();
    std::fs::create_dir_all(scratch.join("agent-temp")).expect("temp dir");
    // Azure Pipelines expands $(name) macros before the script runs.
    let expand = |text: &str| -> String {
        let mut text = text.to_owned();
        for (name, value) in &variables {
            text = text.replace(&format!("$({name})"), value);
        }
        for macro_start in text.match_indices("$(").map(|(i, _)| i + 2) {
            let name = text[macro_start..].split(')').next().unwrap_or_default();
            assert!(
                !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
                "$({name}) is not a variable the pipeline or the agent defines"
            );
        }
        text
    };
    let mut env = azure_env(&sim);
    env.extend([
        // What addSpnToEnvironment gives a workload identity service connection's script.
        (
            "idToken".to_owned(),
            oidc_token(
                DEVOPS_ISSUER,
                DEVOPS_SUBJECT,
                "api://AzureADTokenExchange",
                300,
            ),
        ),
        ("servicePrincipalId".to_owned(), CLIENT_ID.to_owned()),
        ("tenantId".to_owned(), sim.info().tenant_id.clone()),
        ("INPUT_BINARY".to_owned(), binary().display().to_string()),
    ]);
    let (code, stderr) = bash(&expand(script), &env).await;
    assert_eq!(code, Some(1), "fail-on high: {stderr}");
    assert!(
        signed_in_federated(&sim),
        "{:?}",
        sim.requests(&Default::default())
    );
    let report = PathBuf::from(expand(published));
    assert_eq!(sarif_rules(&report), expected);
    assert_eq!(publish["condition"], "succeededOrFailed()");
}
