//! Finding changes in Azure Monitor through the real binary: with `CMKGUARD_LOGS_*` pointing at
//! a Logs Ingestion stand-in (`cmk_guard_blackbox::ingest`), a finding that opens and then
//! resolves arrives as two rows of `CmkGuardFindings_CL` with the table's columns, each request
//! carrying the managed identity's bearer token (from the simulator's identity endpoint); a
//! throttled upload is retried after `Retry-After`; a remediation arrives as `remediated`.

use azure_sim::{Sim, SimOptions};
use cmk_guard_blackbox::Handler;
use cmk_guard_blackbox::ingest::{Ingest, Ingested};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::story::{policy_file, tenant, workspace_id, workspace_write};
use serde_json::Value;

const RULE_ID: &str = "dcr-00112233445566778899aabbccddeeff";
const STREAM_PATH: &str =
    "/dataCollectionRules/dcr-00112233445566778899aabbccddeeff/streams/Custom-CmkGuardFindings";
/// The columns the table declares (infra/modules/monitor.bicep).
const COLUMNS: &[&str] = &[
    "TimeGenerated",
    "Change",
    "Rule",
    "Severity",
    "State",
    "WorkspaceId",
    "SubscriptionId",
    "ResourceId",
    "Observed",
    "Expected",
    "Remediation",
];

/// The simulator (its certificate also serves the stand-in) and the stand-in.
async fn sim_and_ingest(scratch: &Scratch) -> (Sim, Ingest) {
    let options = SimOptions {
        tls_out: Some(scratch.path().to_path_buf()),
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant(), options)
        .await
        .expect("start azure-sim");
    let read = |name: &str| std::fs::read_to_string(scratch.path().join(name)).expect("TLS file");
    let ingest = Ingest::start(&read("server.pem"), &read("server.key")).await;
    (sim, ingest)
}

/// Delivers a person's write of the story's workspace, happening now: reads from before it
/// are not reused.
async fn deliver(handler: &Handler) -> Value {
    let mut event = workspace_write();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    event["eventTime"] = Value::String(now);
    let reply = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await
        .remove(0);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.outcome().clone()
}

fn uploads(ingest: &Ingest) -> Vec<Ingested> {
    ingest
        .received()
        .into_iter()
        .filter(|r| r.path() == STREAM_PATH)
        .collect()
}

fn rows(uploads: &[Ingested]) -> Vec<Value> {
    uploads
        .iter()
        .flat_map(|u| u.body.as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_finding_that_opens_and_resolves_arrives_as_two_rows() {
    let scratch = Scratch::new("logs-ingestion");
    let (sim, ingest) = sim_and_ingest(&scratch).await;
    let endpoint = ingest.endpoint();
    let env = [
        ("CMKGUARD_MODE", "alert"),
        ("CMKGUARD_LOGS_INGESTION_ENDPOINT", endpoint.as_str()),
        ("CMKGUARD_LOGS_DCR_ID", RULE_ID),
    ];
    let handler = Handler::launch(sim, &env).await;
    // The first upload is throttled: it is sent again after Retry-After.
    ingest.script(&[429]);
    deliver(&handler).await;
    handler.sim.tenant_mut(|t| {
        for vault in &mut t.vaults {
            vault.enable_purge_protection = Some(true);
        }
    });
    let second = deliver(&handler).await;
    assert_eq!(second["findings"], serde_json::json!([]), "{second}");

    let uploads = uploads(&ingest);
    assert!(
        uploads.len() >= 3,
        "one throttled and two sent: {uploads:?}"
    );
    for upload in &uploads {
        assert!(
            upload.target.ends_with("?api-version=2023-01-01"),
            "{}",
            upload.target
        );
        // The managed identity's token, for Azure Monitor ingestion.
        assert_eq!(
            upload.bearer_audience().as_deref(),
            Some("https://monitor.azure.com/")
        );
        assert_eq!(upload.header("content-type"), Some("application/json"));
    }
    // The throttled batch is not lost: every change arrives exactly once after it.
    let rows = rows(&uploads[1..]);
    let changes: Vec<&str> = rows.iter().filter_map(|r| r["Change"].as_str()).collect();
    assert_eq!(changes, ["opened", "resolved"], "{rows:?}");
    for row in &rows {
        let object = row.as_object().expect("a row is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = COLUMNS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(row["Rule"], "vault.purge-protection");
        assert_eq!(row["WorkspaceId"].as_str(), Some(workspace_id().as_str()));
        assert!(
            row["TimeGenerated"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    assert_eq!(rows[0]["State"], "open");
    assert_eq!(rows[1]["State"], "resolved");
}

#[tokio::test]
async fn a_remediation_arrives_as_remediated_and_a_failing_endpoint_loses_nothing_stored() {
    let scratch = Scratch::new("logs-ingestion");
    let (sim, ingest) = sim_and_ingest(&scratch).await;
    let endpoint = ingest.endpoint();
    let policy = policy_file(&scratch);
    let env = [
        ("CMKGUARD_MODE", "remediate"),
        ("CMKGUARD_POLICY_FILE", policy.as_str()),
        ("CMKGUARD_LOGS_INGESTION_ENDPOINT", endpoint.as_str()),
        ("CMKGUARD_LOGS_DCR_ID", RULE_ID),
    ];
    let handler = Handler::launch(sim, &env).await;
    // Every try of the first batch is refused: the invocation still succeeds.
    ingest.script(&[403]);
    deliver(&handler).await;
    let refused = uploads(&ingest);
    assert_eq!(refused.len(), 1, "a 403 is not retried");
    let changes: Vec<String> = rows(&refused)
        .iter()
        .filter_map(|r| r["Change"].as_str().map(str::to_owned))
        .collect();
    assert!(
        changes.iter().any(|c| c == "remediated"),
        "{:?}",
        rows(&refused)
    );
    assert!(
        handler
            .stdout
            .snapshot()
            .iter()
            .any(|l| l.contains("Finding changes not sent to Azure Monitor")
                && !l.contains("Bearer")),
        "the failure is logged without the token"
    );
}
