//! Telemetry through the real binary: OTLP/HTTP (protobuf) export to a real receiver started
//! here — the invocation span continues the host's trace, Azure calls are child client spans,
//! the metrics count what happened, logs are exported — and no configured secret reaches any
//! exported byte or log line.
//!
//! The tenant and the event are the story's (`cmk_guard_blackbox::story`): one CMK workspace
//! whose vault lacks purge protection, written by a person.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{tenant, workspace_write};
use cmk_guard_blackbox::{Handler, Reply, envelope, free_port};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One OTLP request as received: path, headers (lower-case names) and the raw body.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A data point's attributes as sorted (key, value) pairs.
type Labels = Vec<(String, String)>;

/// A loopback OTLP/HTTP receiver that keeps every request it is sent.
#[derive(Clone)]
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Export>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver = Receiver {
            port: listener.local_addr().expect("addr").port(),
            received: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = serving.clone();
                tokio::spawn(async move { receiver.serve(stream).await });
            }
        });
        receiver
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// HTTP/1.1 with keep-alive; bodies by Content-Length or chunked.
    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut reader = BufReader::new(stream);
        while let Some(cmk_guard_blackbox::http1::RawRequest {
            target: path,
            headers,
            body,
        }) = cmk_guard_blackbox::http1::read_request(&mut reader).await
        {
            self.received.lock().expect("lock").push(Export {
                path,
                headers,
                body,
            });
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn received(&self) -> Vec<Export> {
        self.received.lock().expect("lock").clone()
    }

    fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
        self.received()
            .into_iter()
            .filter(|e| e.path == path)
            .map(|e| e.body)
            .collect()
    }

    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut spans = Vec::new();
        for body in self.bodies("/v1/traces") {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("traces");
            for resource in request.resource_spans {
                let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push((attributes.clone(), span));
                    }
                }
            }
        }
        spans
    }

    /// The latest value of each counter data point (cumulative), keyed by metric and labels.
    fn counters(&self) -> Vec<(String, Labels, f64)> {
        let mut latest: Vec<(String, Labels, u64, f64)> = Vec::new();
        for body in self.bodies("/v1/metrics") {
            let request = ExportMetricsServiceRequest::decode(body.as_slice()).expect("metrics");
            for resource in request.resource_metrics {
                for scope in resource.scope_metrics {
                    for metric in scope.metrics {
                        let points = match metric.data {
                            Some(metric::Data::Sum(sum)) => sum
                                .data_points
                                .into_iter()
                                .map(|p| {
                                    let value = match p.value {
                                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                                        Some(number_data_point::Value::AsDouble(v)) => v,
                                        None => 0.0,
                                    };
                                    (labels(&p.attributes), p.time_unix_nano, value)
                                })
                                .collect(),
                            Some(metric::Data::Histogram(histogram)) => histogram
                                .data_points
                                .into_iter()
                                .map(|p| (labels(&p.attributes), p.time_unix_nano, p.count as f64))
                                .collect(),
                            _ => Vec::new(),
                        };
                        for (labels, time, value) in points {
                            match latest
                                .iter_mut()
                                .find(|(n, l, _, _)| *n == metric.name && *l == labels)
                            {
                                Some(entry) if entry.2 <= time => {
                                    entry.2 = time;
                                    entry.3 = value;
                                }
                                Some(_) => {}
                                None => latest.push((metric.name.clone(), labels, time, value)),
                            }
                        }
                    }
                }
            }
        }
        latest
            .into_iter()
            .map(|(name, labels, _, value)| (name, labels, value))
            .collect()
    }

    fn log_records(&self) -> Vec<(String, Vec<u8>)> {
        let mut records = Vec::new();
        for body in self.bodies("/v1/logs") {
            let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("logs");
            for resource in request.resource_logs {
                for scope in resource.scope_logs {
                    for record in scope.log_records {
                        let text = record.body.as_ref().map(text).unwrap_or_default();
                        records.push((text, record.trace_id));
                    }
                }
            }
        }
        records
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn labels(attributes: &[KeyValue]) -> Labels {
    let mut labels: Labels = attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect();
    labels.sort();
    labels
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exports happen often and the batch is small, so the test also sees periodic exports; the
/// assertions read what had arrived when the process exited (SIGTERM flushes).
fn otel_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
    ]
}

/// Invokes `OnSubscriptionEvent` like the host, with a known traceparent and invocation id.
async fn deliver(handler: &Handler, invocation_id: &str) -> Reply {
    let response = cmk_guard_blackbox::http_client()
        .build()
        .expect("client")
        .post(handler.url("/OnSubscriptionEvent"))
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(envelope("event", &workspace_write(), "OnSubscriptionEvent"))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.expect("JSON reply");
    Reply {
        status,
        content_type,
        body,
    }
}

async fn stop(handler: &mut Handler) {
    handler.terminate();
    let status = handler
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the handler exits after SIGTERM");
    assert!(
        status.success(),
        "{status}: {:?}",
        handler.stderr.snapshot()
    );
}

#[tokio::test]
async fn exports_the_invocation_trace_metrics_and_logs_over_otlp() {
    let receiver = Receiver::start().await;
    let env = otel_env(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut handler = Handler::start_with(tenant(), &env).await;
    let invocation_id = uuid::Uuid::new_v4().to_string();
    let reply = deliver(&handler, &invocation_id).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.outcome()["disposition"], "evaluated");
    stop(&mut handler).await;

    // The invocation span continues the host's trace.
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no spans exported");
    let (resource, invocation) = spans
        .iter()
        .find(|(_, s)| s.name == "OnSubscriptionEvent")
        .unwrap_or_else(|| panic!("no invocation span in {:?}", names(&spans)));
    assert_eq!(
        attribute(resource, "service.name").as_deref(),
        Some("cmk-guard")
    );
    assert_eq!(
        attribute(resource, "cloud.provider").as_deref(),
        Some("azure")
    );
    assert!(attribute(resource, "service.version").is_some());
    assert_eq!(hex(&invocation.trace_id), TRACE_ID);
    assert_eq!(hex(&invocation.parent_span_id), PARENT_ID);
    assert_eq!(invocation.kind, span::SpanKind::Server as i32);
    let attrs = &invocation.attributes;
    assert_eq!(attribute(attrs, "faas.trigger").as_deref(), Some("pubsub"));
    assert_eq!(
        attribute(attrs, "faas.invocation_id").as_deref(),
        Some(invocation_id.as_str())
    );
    assert_eq!(
        attribute(attrs, "cmkguard.disposition").as_deref(),
        Some("evaluated")
    );

    // Azure calls are client spans under the invocation, with their status codes.
    let descends = |span: &Span| {
        let mut parent = span.parent_span_id.clone();
        while !parent.is_empty() {
            if parent == invocation.span_id {
                return true;
            }
            parent = spans
                .iter()
                .find(|(_, s)| s.span_id == parent)
                .map(|(_, s)| s.parent_span_id.clone())
                .unwrap_or_default();
        }
        false
    };
    let azure: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| attribute(&s.attributes, "azure.service").is_some())
        .collect();
    assert!(!azure.is_empty(), "no Azure spans in {:?}", names(&spans));
    for call in &azure {
        assert_eq!(hex(&call.trace_id), TRACE_ID, "{}", call.name);
        assert!(descends(call), "{} is not under the invocation", call.name);
        assert_eq!(call.kind, span::SpanKind::Client as i32);
        assert!(
            attribute(&call.attributes, "http.response.status_code").is_some(),
            "{}: {:?}",
            call.name,
            call.attributes
        );
        let url = attribute(&call.attributes, "url.full").unwrap_or_default();
        assert!(!url.contains('?'), "{url}");
    }
    assert!(
        azure.iter().any(|s| {
            s.name.starts_with("GET ")
                && s.name.contains("Microsoft.KeyVault/vaults/{name}")
                && attribute(&s.attributes, "http.response.status_code").as_deref() == Some("200")
        }),
        "{:?}",
        names(&spans)
    );

    // Metrics.
    let counters = receiver.counters();
    let value = |name: &str, wanted: &[(&str, &str)]| -> f64 {
        counters
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && wanted
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    assert_eq!(
        value(
            "cmkguard_invocations_total",
            &[
                ("function", "OnSubscriptionEvent"),
                ("disposition", "evaluated")
            ]
        ),
        1.0,
        "{counters:?}"
    );
    assert!(
        value("cmkguard_azure_requests_total", &[]) > 0.0,
        "{counters:?}"
    );
    assert!(
        value("cmkguard_azure_requests_total", &[("status", "200")]) > 0.0,
        "{counters:?}"
    );
    assert!(
        value("cmkguard_azure_request_duration_seconds", &[]) > 0.0,
        "{counters:?}"
    );
    assert!(
        value(
            "cmkguard_findings_total",
            &[("rule", "vault.purge-protection")]
        ) >= 1.0,
        "{counters:?}"
    );
    assert!(
        counters
            .iter()
            .any(|(n, labels, _)| n == "cmkguard_findings_total"
                && labels.iter().any(|(k, _)| k == "severity")),
        "{counters:?}"
    );

    // Logs are exported too, correlated with the trace.
    let logs = receiver.log_records();
    assert!(
        logs.iter()
            .any(|(body, trace)| body == "Invocation handled." && hex(trace) == TRACE_ID),
        "{logs:?}"
    );
    // And still written as JSON lines on stdout.
    assert!(
        handler
            .stdout
            .snapshot()
            .iter()
            .any(|l| l.contains("Invocation handled.") && serde_json::from_str::<Value>(l).is_ok())
    );
}

fn names(spans: &[(Vec<KeyValue>, Span)]) -> Vec<String> {
    spans.iter().map(|(_, s)| s.name.clone()).collect()
}

#[tokio::test]
async fn no_configured_secret_reaches_telemetry_or_logs() {
    let receiver = Receiver::start().await;
    let sink = Sink::start().await;
    let teams = format!(
        "http://127.0.0.1:{}/teams?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRETSIG",
        sink.port
    );
    let webhook = format!(
        "http://127.0.0.1:{}/hook?sv=2025-01-05&se=2027-01-01T00%3A00%3A00Z&sr=c&sp=racw&sig=SASSIGSECRET%2Bx%3D",
        sink.port
    );
    // Nothing listens there: the delivery fails, and its error is logged and exported.
    let smtp = format!("smtp://alerts:SMTPPASSWORDSECRET@localhost:{}", free_port());
    let scratch = Scratch::new("telemetry");
    let policy = scratch
        .write(
            "policy.toml",
            "[notify]\nteams = [\"critical\", \"high\", \"medium\", \"low\"]\nemail = [\"critical\", \"high\", \"medium\", \"low\"]\nwebhook = [\"critical\", \"high\", \"medium\", \"low\"]\n",
        )
        .display()
        .to_string();
    let mut env = otel_env(&receiver);
    env.extend([
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20OTLPTOKENSECRET".to_owned(),
        ),
        ("CMKGUARD_MODE", "alert".to_owned()),
        ("CMKGUARD_POLICY_FILE", policy),
        ("CMKGUARD_TEAMS_WEBHOOK_URL", teams),
        ("CMKGUARD_WEBHOOK_URL", webhook),
        ("CMKGUARD_SMTP_URL", smtp),
        (
            "CMKGUARD_EMAIL_FROM",
            "cmk-guard@contoso.example".to_owned(),
        ),
        (
            "CMKGUARD_EMAIL_TO",
            "ml-platform@contoso.example".to_owned(),
        ),
        ("CMKGUARD_LOG", "debug".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut handler = Handler::start_with(tenant(), &env).await;
    let reply = deliver(&handler, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let notified: Vec<String> = reply.outcome()["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["kind"] == "notify")
                .map(|a| format!("{}={}", a["target"], a["result"]))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        notified.iter().any(|n| n.contains("teams"))
            && notified.iter().any(|n| n.contains("email")),
        "every channel was tried: {notified:?}"
    );
    stop(&mut handler).await;

    let exports = receiver.received();
    assert!(
        exports.iter().any(|e| e.path == "/v1/traces"),
        "traces were exported"
    );
    assert!(
        exports.iter().any(|e| e.path == "/v1/logs"),
        "logs were exported"
    );
    assert!(
        exports.iter().any(|e| e.path == "/v1/metrics"),
        "metrics were exported"
    );
    assert!(
        exports.iter().all(|e| e
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v.contains("OTLPTOKENSECRET"))),
        "OTEL_EXPORTER_OTLP_HEADERS are sent (as headers only)"
    );
    let counters = receiver.counters();
    assert!(
        counters
            .iter()
            .any(|(n, labels, _)| n == "cmkguard_notifications_total"
                && labels.iter().any(|(k, v)| k == "channel" && v == "teams")),
        "{counters:?}"
    );
    let stdout = handler.stdout.snapshot().join("\n");
    let stderr = handler.stderr.snapshot().join("\n");
    assert!(!stdout.is_empty(), "the handler logged");
    for secret in [
        "SECRETSIG",
        "SASSIGSECRET",
        "SMTPPASSWORDSECRET",
        "OTLPTOKENSECRET",
    ] {
        for export in &exports {
            assert!(
                !contains(&export.body, secret.as_bytes()),
                "{secret} in an export to {}",
                export.path
            );
        }
        assert!(!stdout.contains(secret), "{secret} on stdout");
        assert!(!stderr.contains(secret), "{secret} on stderr");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
