//! `--format sarif` and `--format csv` of `scan` and `evaluate`, read as code scanning and a
//! spreadsheet read them: the SARIF validated against the official SARIF 2.1.0 schema
//! (tests/fixtures/sarif-schema-2.1.0.json) and checked to hold every open finding of the
//! tenant with its rule, level and location; the CSV parsed back, one row per finding, with
//! formula injection defused and first seen read from the audit trail. And
//! `evaluate --fail-on`, the same gate as `scan`'s.

use std::collections::BTreeSet;

use azure_sim::{Fault, Sim, SimOptions, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::{Handler, binary, fixtures_dir, timer_envelope};
use serde_json::Value;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const RG: &str = "rg-scan";

/// The open findings the scan tenant ([`super::scan::tenant`]) is built to have, as (workspace
/// name, rule, SARIF level): known from how the tenant was made, not from cmk-guard.
const EXPECTED: [(&str, &str, &str); 4] = [
    ("ws-norole", "workspace.key-access", "error"),
    ("ws-purge", "vault.purge-protection", "error"),
    ("ws-endpoints", "workspace.unsupported-endpoints", "warning"),
    ("ws-small", "key.type-size", "warning"),
];

fn workspace(name: &str) -> String {
    WorkspaceSpec::new(SUB, RG, name).id()
}

async fn run(sim: &Sim, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut all = sim.handler_env();
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    cmk_guard_blackbox::run_cli_with(args, all).await
}

/// Parses `text` as SARIF and validates it against the official schema, formats included.
fn valid_sarif(text: &str) -> Value {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("sarif-schema-2.1.0.json"))
            .expect("the vendored schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles");
    let log: Value = serde_json::from_str(text).expect("SARIF is JSON");
    // The validator is not a rubber stamp: a level SARIF does not define, or a results entry
    // without a message, is refused.
    let mut broken = log.clone();
    broken["runs"][0]["results"] = serde_json::json!([{"ruleId": "x", "level": "fatal"}]);
    assert!(
        !validator.is_valid(&broken),
        "the schema check must be able to fail"
    );
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid SARIF 2.1.0: {errors:#?}\n{text}"
    );
    assert_eq!(log["version"], "2.1.0");
    log
}

/// The open findings of an Outcome JSON, as (rule, resource, severity, workspace).
fn open_findings(outcome: &Value) -> BTreeSet<(String, String, String, String)> {
    outcome["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["state"] == "open")
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (
                text("rule"),
                text("resource"),
                text("severity"),
                text("workspace"),
            )
        })
        .collect()
}

fn level(severity: &str) -> &'static str {
    match severity {
        "critical" | "high" => "error",
        "medium" => "warning",
        _ => "note",
    }
}

/// Every open finding of `outcome` is a result of `run` with its rule, level and location, and
/// nothing else is an unsuppressed result.
fn assert_results_match(run: &Value, outcome: &Value) {
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    let results = run["results"].as_array().expect("results");
    let open: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("suppressions").is_none())
        .collect();
    let findings = open_findings(outcome);
    assert_eq!(open.len(), findings.len(), "{run:#}");
    for (rule, resource, severity, workspace) in &findings {
        let result = open
            .iter()
            .find(|r| {
                r["ruleId"] == rule.as_str()
                    && r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
                        == resource.as_str()
            })
            .unwrap_or_else(|| panic!("no result for {rule} on {resource}: {run:#}"));
        assert_eq!(result["level"], level(severity), "{result:#}");
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], rule.as_str());
        assert!(
            rules[index]["helpUri"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://"))
        );
        let location = &result["locations"][0];
        assert_eq!(location["logicalLocations"][0]["kind"], "resource");
        let artifact = &location["physicalLocation"]["artifactLocation"];
        let uri = artifact["uri"]
            .as_str()
            .expect("a physical location, as code scanning requires");
        // An ARM id is a path under ARM; a key URL, its host and path under KEYVAULT.
        let (base, path) = match resource.strip_prefix("https://") {
            Some(url) => ("KEYVAULT", url),
            None => ("ARM", resource.trim_start_matches('/')),
        };
        assert_eq!((artifact["uriBaseId"].as_str(), uri), (Some(base), path));
        assert_eq!(
            result["relatedLocations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            workspace.as_str()
        );
        assert!(
            result["partialFingerprints"]["cmkGuardFindingKey/v1"]
                .as_str()
                .is_some_and(|f| f.len() == 64)
        );
    }
}

#[tokio::test]
async fn scan_sarif_is_valid_and_holds_every_open_finding() {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let (code, json, err) = run(
        &sim,
        &["scan", "--subscription", SUB, "--format", "json"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let outcome: Value = serde_json::from_str(&json).expect("JSON");
    let (code, text, err) = run(
        &sim,
        &["scan", "--subscription", SUB, "--format", "sarif"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let log = valid_sarif(&text);
    let run_ = &log["runs"][0];
    assert_eq!(run_["tool"]["driver"]["name"], "cmk-guard");
    assert_eq!(run_["invocations"][0]["executionSuccessful"], true);

    // The tenant's own findings, known independently of cmk-guard's JSON.
    let results = run_["results"].as_array().expect("results");
    for (name, rule, level) in EXPECTED {
        let id = workspace(name);
        assert!(
            results.iter().any(|r| r["ruleId"] == rule
                && r["level"] == level
                && r["relatedLocations"][0]["logicalLocations"][0]["fullyQualifiedName"]
                    == id.as_str()),
            "{rule} on {name}: {run_:#}"
        );
    }
    assert_results_match(run_, &outcome);

    // The same findings, the same fingerprints: code scanning keeps one alert per finding.
    let (_, again, _) = run(
        &sim,
        &["scan", "--subscription", SUB, "--format", "sarif"],
        &[],
    )
    .await;
    let fingerprints = |log: &Value| -> BTreeSet<String> {
        log["runs"][0]["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["partialFingerprints"]["cmkGuardFindingKey/v1"].to_string())
            .collect()
    };
    let first = fingerprints(&log);
    assert_eq!(first.len(), EXPECTED.len());
    assert_eq!(first, fingerprints(&valid_sarif(&again)));
}

#[tokio::test]
async fn exemptions_are_suppressed_in_sarif_and_csv_defuses_formulas() {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let scratch = Scratch::new("report-formats");
    let reason = "=HYPERLINK(\"https://example.invalid\",\"click\")";
    let policy = scratch.write(
        "policy.toml",
        format!(
            "[[exemptions]]\nrule = \"key.type-size\"\nresource = \"{}\"\nreason = '{reason}'\n",
            workspace("ws-small")
        ),
    );
    let env = [("CMKGUARD_POLICY_FILE", policy.to_str().unwrap_or_default())];

    let (code, text, err) = run(
        &sim,
        &["scan", "--subscription", SUB, "--format", "sarif"],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let log = valid_sarif(&text);
    let results = log["runs"][0]["results"].as_array().expect("results");
    let exempted: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("suppressions").is_some())
        .collect();
    assert_eq!(exempted.len(), 1, "{log:#}");
    assert_eq!(exempted[0]["ruleId"], "key.type-size");
    assert_eq!(exempted[0]["suppressions"][0]["kind"], "external");
    assert_eq!(exempted[0]["suppressions"][0]["justification"], reason);
    assert_eq!(results.len(), EXPECTED.len());

    let (code, csv_text, err) = run(
        &sim,
        &["scan", "--subscription", SUB, "--format", "csv"],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "workspace",
            "resource",
            "rule",
            "severity",
            "state",
            "observed",
            "expected",
            "first_seen",
            "doc",
            "exemption"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("RFC 4180 records");
    assert_eq!(
        rows.len(),
        EXPECTED.len(),
        "one row per finding: {csv_text}"
    );
    for (name, rule, _) in EXPECTED {
        let row = rows
            .iter()
            .find(|r| &r[0] == workspace(name).as_str() && &r[2] == rule)
            .unwrap_or_else(|| panic!("no row for {rule} on {name}: {csv_text}"));
        let state = if rule == "key.type-size" {
            "exempted"
        } else {
            "open"
        };
        assert_eq!(&row[4], state, "{row:?}");
        assert!(
            row[8].starts_with("https://learn.microsoft.com/"),
            "{row:?}"
        );
    }
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a cell a spreadsheet would run as a formula: {cell}"
            );
        }
    }
    let row = rows
        .iter()
        .find(|r| &r[4] == "exempted")
        .expect("the exempted row");
    assert_eq!(&row[9], format!("'{reason}"), "an apostrophe makes it text");
}

#[tokio::test]
async fn evaluate_prints_sarif_and_csv_and_gates_with_fail_on() {
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let purge = workspace("ws-purge");
    let evaluate = |format: &'static str, fail_on: Option<&'static str>| {
        let mut args = vec!["evaluate", "--resource", purge.as_str(), "--format", format];
        args.extend(fail_on.iter().flat_map(|s| ["--fail-on", *s]));
        let sim = &sim;
        async move { run(sim, &args, &[]).await }
    };

    let (code, json, err) = evaluate("json", None).await;
    assert_eq!(code, Some(0), "no --fail-on, no gate: {err}");
    let outcome: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(open_findings(&outcome).len(), 1, "{outcome:#}");

    let (code, text, err) = evaluate("sarif", None).await;
    assert_eq!(code, Some(0), "{err}");
    let log = valid_sarif(&text);
    assert_results_match(&log["runs"][0], &outcome);
    assert_eq!(
        log["runs"][0]["results"][0]["ruleId"],
        "vault.purge-protection"
    );

    let (code, text, err) = evaluate("csv", None).await;
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .collect::<Result<_, _>>()
        .expect("CSV");
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(&rows[0][2], "vault.purge-protection");
    assert_eq!(&rows[0][3], "high");

    // The finding is high: a gate at high or below fails, one at critical passes.
    for (fail_on, expected) in [("low", 1), ("medium", 1), ("high", 1), ("critical", 0)] {
        let (code, _, err) = evaluate("sarif", Some(fail_on)).await;
        assert_eq!(code, Some(expected), "--fail-on {fail_on}: {err}");
    }

    // Unreadable vault: incomplete, exit 3 whatever the gate, and SARIF says so.
    sim.add_fault(
        Fault::on_path("GET", &format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv-purge"))
            .host("management.azure.com")
            .status(403),
    );
    for fail_on in [None, Some("critical"), Some("low")] {
        let (code, text, err) = evaluate("sarif", fail_on).await;
        assert_eq!(code, Some(3), "{fail_on:?}: incomplete wins: {err}");
        let log = valid_sarif(&text);
        let run_ = &log["runs"][0];
        assert_eq!(
            run_["invocations"][0]["executionSuccessful"], false,
            "{run_:#}"
        );
        assert!(
            run_["results"]
                .as_array()
                .is_some_and(|all| all.iter().any(|r| r["ruleId"] == "guard.visibility")),
            "{run_:#}"
        );
    }
}

#[tokio::test]
async fn csv_first_seen_comes_from_the_audit_trail() {
    // A sweep in `alert` mode opens the tenant's findings in the SQLite store's trail.
    let scratch = Scratch::new("report-formats-trail");
    let state = scratch.sqlite_state("state.db");
    let teams = Sink::start().await;
    let teams_url = teams.url("teams");
    let sim = Sim::start(super::scan::tenant(), SimOptions::default())
        .await
        .expect("sim");
    let mut env: Vec<(String, String)> = sim.handler_env();
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_STATE", &state),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_url),
        ],
    )
    .await;
    let swept = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(swept.status, 200, "{:?}", swept.body);
    env.push(("CMKGUARD_STATE".into(), state.clone()));
    let output = tokio::process::Command::new(binary())
        .args(["scan", "--subscription", SUB, "--format", "csv", "--quiet"])
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("run cmk-guard");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .collect::<Result<_, _>>()
        .expect("CSV");
    assert_eq!(rows.len(), EXPECTED.len(), "{text}");
    for row in &rows {
        assert!(
            time::OffsetDateTime::parse(&row[7], &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "first_seen of an opened finding is its time in the trail: {row:?}"
        );
    }
}
