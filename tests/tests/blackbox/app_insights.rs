//! Telemetry into Application Insights through the real binary, configured only with a
//! connection string whose ingestion endpoint is a stand-in (`cmk_guard_blackbox::ingest`):
//! request telemetry for the invocation (continuing the host's trace), dependency telemetry for
//! the Azure calls and metric telemetry arrive, all under one operation id; with
//! `APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD` each upload carries the managed
//! identity's bearer token.

use std::time::Duration;

use azure_sim::{Sim, SimOptions};
use cmk_guard_blackbox::ingest::Ingest;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::story::{tenant, workspace_write};
use cmk_guard_blackbox::{Handler, envelope};
use serde_json::Value;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";
const INSTRUMENTATION_KEY: &str = "00000000-0000-0000-0000-00000000c0de";

async fn run(extra: &[(&str, &str)]) -> (Ingest, Handler) {
    // The stand-in serves the simulator's certificate, which the handler trusts.
    let tls = Scratch::new("app-insights-tls");
    let options = SimOptions {
        tls_out: Some(tls.path().to_path_buf()),
        ..SimOptions::default()
    };
    let sim = Sim::start(tenant(), options)
        .await
        .expect("start azure-sim");
    let read = |name: &str| std::fs::read_to_string(tls.path().join(name)).expect("sim TLS file");
    let ingest = Ingest::start(&read("server.pem"), &read("server.key")).await;
    let connection_string = ingest.connection_string(INSTRUMENTATION_KEY);
    let mut env = vec![
        (
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            connection_string.as_str(),
        ),
        // Short export intervals so the test's one invocation is exported promptly; the
        // assertions read what had arrived when the process exited (SIGTERM flushes).
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ];
    env.extend_from_slice(extra);
    let mut handler = Handler::launch(sim, &env).await;
    let reply = cmk_guard_blackbox::http_client()
        .build()
        .expect("client")
        .post(handler.url("/OnSubscriptionEvent"))
        .header(
            "X-Azure-Functions-InvocationId",
            uuid::Uuid::new_v4().to_string(),
        )
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(envelope("event", &workspace_write(), "OnSubscriptionEvent"))
        .send()
        .await
        .expect("POST");
    assert_eq!(reply.status().as_u16(), 200);
    handler.terminate();
    let status = handler
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the handler did not exit after SIGTERM: {:?}; received {:?}",
                handler.stderr.snapshot(),
                ingest.received()
            )
        });
    assert!(status.success(), "{:?}", handler.stderr.snapshot());
    (ingest, handler)
}

fn base_type(envelope: &Value) -> &str {
    envelope["data"]["baseType"].as_str().unwrap_or_default()
}

fn operation_id(envelope: &Value) -> &str {
    envelope["tags"]["ai.operation.id"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_connection_string_alone_sends_requests_dependencies_and_metrics() {
    let (ingest, _handler) = run(&[]).await;
    let envelopes = ingest.envelopes();
    assert!(!envelopes.is_empty(), "nothing reached the stand-in");
    for envelope in &envelopes {
        assert_eq!(envelope["iKey"], INSTRUMENTATION_KEY, "{envelope}");
    }
    // Uploads use the instrumentation key only: no bearer token unless asked for.
    assert!(
        ingest
            .received()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );

    // The invocation is one request, continuing the host's trace.
    let requests: Vec<&Value> = envelopes
        .iter()
        .filter(|e| base_type(e) == "RequestData")
        .collect();
    let request = requests
        .iter()
        .find(|e| e["data"]["baseData"]["name"] == "OnSubscriptionEvent")
        .unwrap_or_else(|| panic!("no request telemetry in {requests:?}"));
    assert_eq!(operation_id(request), TRACE_ID);
    assert_eq!(request["tags"]["ai.operation.parentId"], PARENT_ID);
    assert_eq!(request["data"]["baseData"]["success"], true, "{request}");

    // The Azure calls are dependencies in the same operation, under the request.
    let dependencies: Vec<&Value> = envelopes
        .iter()
        .filter(|e| base_type(e) == "RemoteDependencyData")
        .collect();
    assert!(!dependencies.is_empty(), "no dependency telemetry");
    for dependency in &dependencies {
        assert_eq!(operation_id(dependency), TRACE_ID, "{dependency}");
        let name = dependency["data"]["baseData"]["name"]
            .as_str()
            .unwrap_or_default();
        assert!(!name.contains('?'), "{name}");
    }
    assert!(
        dependencies.iter().any(|d| d["data"]["baseData"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("GET ") && n.contains("Microsoft.KeyVault/vaults"))),
        "{dependencies:?}"
    );

    // Metrics arrive as metric telemetry.
    let metrics: Vec<&str> = envelopes
        .iter()
        .filter(|e| base_type(e) == "MetricData")
        .flat_map(|e| {
            e["data"]["baseData"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in [
        "cmkguard_invocations_total",
        "cmkguard_azure_requests_total",
    ] {
        assert!(metrics.contains(&name), "{name} missing from {metrics:?}");
    }
}

#[tokio::test]
async fn entra_authentication_sends_the_managed_identity_token() {
    let (ingest, _handler) = run(&[(
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "Authorization=AAD",
    )])
    .await;
    let tracks: Vec<_> = ingest
        .received()
        .into_iter()
        .filter(|r| r.is_track())
        .collect();
    assert!(!tracks.is_empty(), "nothing reached the stand-in");
    // The first uploads may precede the sign-in; once the credential is there every upload
    // carries its bearer token, and the request telemetry is among those.
    let authenticated: Vec<_> = tracks
        .iter()
        .filter(|r| r.bearer_audience().as_deref() == Some("https://monitor.azure.com/"))
        .collect();
    assert!(
        authenticated.iter().any(|r| r
            .body
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| base_type(e) == "RequestData")),
        "no authenticated upload carried the request telemetry"
    );
}
