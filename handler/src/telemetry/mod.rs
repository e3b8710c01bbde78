//! Telemetry: `tracing` everywhere; log lines always go to stdout (JSON lines, for the
//! Functions host) or stderr (readable, for the CLI). OpenTelemetry traces, metrics and logs
//! are exported to Application Insights when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set
//! ([`app_insights`]) and over OTLP (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (both when both are); the SDK reads the other standard `OTEL_*` variables itself (signal
//! endpoints, headers, batch delays, export interval, sampler, resource attributes).
//!
//! Naming scheme (STYLE.md): metrics are `cmkguard_<noun>_total{labels}` counters and
//! `cmkguard_<noun>_seconds` histograms; labels carry only low-cardinality, non-secret values
//! (rule ids, severities, results, channel names, method + URL template). Span attributes follow
//! the OpenTelemetry semantic conventions (`faas.*`, `http.*`, `url.*`). No URL is recorded with
//! its query string, so no SAS signature, webhook `sig=` or token can reach an attribute.

pub mod app_insights;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The variable that switches OTLP export on.
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The instrumentation scope and default `service.name`.
pub const SERVICE_NAME: &str = "cmk-guard";
/// How long one OTLP export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once [`init`] has installed the OTLP trace layer: without it, an invocation span would
/// be built and formatted for nothing (the JSON log lines do not show spans).
static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether spans reach an OTLP exporter.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

/// The installed OpenTelemetry providers; dropping it flushes and shuts them down.
#[derive(Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporters (after the server has stopped).
    pub fn shutdown(&mut self) {
        if let Some(traces) = self.traces.take() {
            let _ = traces.force_flush();
            let _ = traces.shutdown();
        }
        if let Some(metrics) = self.metrics.take() {
            let _ = metrics.force_flush();
            let _ = metrics.shutdown();
        }
        if let Some(logs) = self.logs.take() {
            let _ = logs.force_flush();
            let _ = logs.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sets up logging (JSON lines on stdout when `json`, else compact lines on stderr) and export
/// of traces, metrics and logs: to Application Insights when `APPLICATIONINSIGHTS_CONNECTION_STRING`
/// is set, over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is; the exporters trust `roots`. Call
/// once, outside any async runtime. A failed exporter setup is reported on stderr and leaves logging on.
pub fn init(json: bool, roots: rustls::RootCertStore) -> Telemetry {
    use tracing_subscriber::EnvFilter;
    // The Azure SDK logs every credential probe and failed response at info; cmk-guard says
    // what matters itself, so the libraries speak up only for warnings unless CMKGUARD_LOG asks.
    let filter = EnvFilter::try_from_env("CMKGUARD_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,azure_core=warn,azure_identity=warn,typespec_client_core=warn")
    });
    let builder = tracing_subscriber::fmt::layer();
    let fmt_layer = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed()
    } else {
        // Colour codes only for a person at a terminal, never into a pipe or a file.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder
            .compact()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut telemetry = Telemetry::default();
    let lookup = |name: &str| std::env::var(name).ok();
    let targets = Targets {
        otlp: enabled(lookup),
        app_insights: app_insights::connection_string(lookup),
        entra: app_insights::entra_requested(lookup),
    };
    let (trace_layer, log_layer) = if targets.otlp || targets.app_insights.is_some() {
        match providers(&targets, roots) {
            Ok((traces, metrics, logs)) => {
                let tracer = traces.tracer(SERVICE_NAME);
                opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
                opentelemetry::global::set_tracer_provider(traces.clone());
                opentelemetry::global::set_meter_provider(metrics.clone());
                let trace_layer = tracing_opentelemetry::layer().with_tracer(tracer);
                let log_layer =
                    opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&logs)
                        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                            !is_exporter_target(m.target())
                        }));
                telemetry = Telemetry {
                    traces: Some(traces),
                    metrics: Some(metrics),
                    logs: Some(logs),
                };
                (Some(trace_layer), Some(log_layer))
            }
            Err(error) => {
                eprintln!("cmk-guard: OpenTelemetry export is off: {error}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let exporting_traces = trace_layer.is_some();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(trace_layer)
        .with(log_layer)
        .try_init()
        .is_ok();
    if installed && exporting_traces {
        TRACES_EXPORTED.store(true, Ordering::Relaxed);
    }
    telemetry
}

/// Whether OTLP export is configured (an endpoint, and the SDK not disabled).
pub fn enabled(lookup: impl Fn(&str) -> Option<String>) -> bool {
    let disabled =
        lookup("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && lookup(ENDPOINT_VARIABLE).is_some_and(|v| !v.trim().is_empty())
}

/// Events of the exporter's own HTTP stack must not be exported again (a feedback loop).
fn is_exporter_target(target: &str) -> bool {
    ["opentelemetry", "hyper", "reqwest", "h2", "tower", "rustls"]
        .iter()
        .any(|prefix| target.starts_with(prefix))
}

type Providers = (SdkTracerProvider, SdkMeterProvider, SdkLoggerProvider);

/// Where telemetry goes.
struct Targets {
    /// OTLP, configured by the `OTEL_*` variables.
    otlp: bool,
    /// Application Insights, with this connection string.
    app_insights: Option<String>,
    /// Application Insights uploads carry an Entra token.
    entra: bool,
}

/// Why OTLP export could not be set up (logging stays on).
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("trace exporter: {0}")]
    Traces(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("metric exporter: {0}")]
    Metrics(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("log exporter: {0}")]
    Logs(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("TLS setup failed: {0}")]
    Tls(#[source] rustls::Error),
    #[error("HTTP client setup failed: {0}")]
    Client(#[source] reqwest::Error),
    #[error("Application Insights exporter: {0}")]
    AppInsights(#[source] app_insights::ConnectionStringError),
}

fn providers(targets: &Targets, roots: rustls::RootCertStore) -> Result<Providers, ExportError> {
    let client = http_client(roots)?;
    let resource = resource(|name| std::env::var(name).ok());
    let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut metrics = SdkMeterProvider::builder().with_resource(resource.clone());
    let mut logs = SdkLoggerProvider::builder().with_resource(resource.clone());
    if targets.otlp {
        let (spans, points, records) = otlp_exporters(&client)?;
        traces = traces.with_batch_exporter(spans);
        metrics = metrics.with_reader(PeriodicReader::builder(points).build());
        logs = logs.with_batch_exporter(records);
    }
    if let Some(connection_string) = &targets.app_insights {
        let exporter = app_insights::exporter(connection_string, client, targets.entra)
            .map_err(ExportError::AppInsights)?;
        traces = traces.with_batch_exporter(exporter.clone());
        metrics = metrics.with_reader(PeriodicReader::builder(exporter.clone()).build());
        logs = logs.with_batch_exporter(exporter);
    }
    Ok((traces.build(), metrics.build(), logs.build()))
}

type OtlpExporters = (
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
    opentelemetry_otlp::LogExporter,
);

/// The OTLP/HTTP (protobuf) exporters; endpoints and headers come from the `OTEL_*` variables.
fn otlp_exporters(client: &reqwest::blocking::Client) -> Result<OtlpExporters, ExportError> {
    use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let spans = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client.clone())
        .build()
        .map_err(ExportError::Traces)?;
    let metrics = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client.clone())
        .build()
        .map_err(ExportError::Metrics)?;
    let logs = LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(client.clone())
        .build()
        .map_err(ExportError::Logs)?;
    Ok((spans, metrics, logs))
}

/// A blocking client (the SDK exports from its own threads) on rustls with ring, trusting
/// `roots` (what every client trusts: Mozilla's roots, the system store, `CMKGUARD_CA_BUNDLE`);
/// built outside any async runtime.
fn http_client(roots: rustls::RootCertStore) -> Result<reqwest::blocking::Client, ExportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ExportError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cmk-guard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ExportError::Client)
}

/// `service.*`, `cloud.*` and `faas.*` resource attributes; `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` are read by the SDK and win for `service.name`.
pub fn resource(lookup: impl Fn(&str) -> Option<String>) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("cloud.provider", "azure"),
    ];
    if lookup("FUNCTIONS_CUSTOMHANDLER_PORT").is_some() || lookup("WEBSITE_SITE_NAME").is_some() {
        attributes.push(KeyValue::new("cloud.platform", "azure_functions"));
    }
    for (variable, key) in [
        ("REGION_NAME", "cloud.region"),
        ("WEBSITE_SITE_NAME", "service.namespace"),
        ("WEBSITE_INSTANCE_ID", "faas.instance"),
        ("WEBSITE_MEMORY_LIMIT_MB", "faas.max_memory"),
    ] {
        if let Some(value) = lookup(variable).filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new(key, value));
        }
    }
    let builder = Resource::builder().with_attributes(attributes);
    if lookup("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// The span of one invocation, continuing the caller's W3C `traceparent`/`tracestate` when
/// `headers` carries one; `trigger` is the `faas.trigger` (`pubsub`, `timer` or `http`). The disposition is recorded later (`cmkguard.disposition`). Without
/// trace export it is a disabled span, so recording into it costs nothing.
pub fn invocation_span(
    function: &str,
    trigger: &'static str,
    invocation_id: &str,
    headers: &actix_web::http::header::HeaderMap,
) -> tracing::Span {
    if !traces_exported() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "invocation",
        otel.name = %function,
        otel.kind = "server",
        faas.name = %function,
        faas.trigger = trigger,
        faas.invocation_id = %invocation_id,
        cmkguard.disposition = Empty,
        http.response.status_code = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
    span
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The instruments, created on first use (after the meter provider is installed).
struct Instruments {
    invocations: Counter<u64>,
    findings: Counter<u64>,
    remediations: Counter<u64>,
    notifications: Counter<u64>,
    azure_requests: Counter<u64>,
    azure_duration: Histogram<f64>,
    cache_lookups: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(SERVICE_NAME);
        Instruments {
            invocations: meter
                .u64_counter("cmkguard_invocations_total")
                .with_description("Host invocations by function and disposition.")
                .build(),
            findings: meter
                .u64_counter("cmkguard_findings_total")
                .with_description("Open findings reported in outcomes, by rule and severity.")
                .build(),
            remediations: meter
                .u64_counter("cmkguard_remediations_total")
                .with_description("Remediation actions by rule and result.")
                .build(),
            notifications: meter
                .u64_counter("cmkguard_notifications_total")
                .with_description("Alert deliveries by channel and result.")
                .build(),
            azure_requests: meter
                .u64_counter("cmkguard_azure_requests_total")
                .with_description("Azure HTTP requests (each try) by operation and status.")
                .build(),
            azure_duration: meter
                .f64_histogram("cmkguard_azure_request_duration_seconds")
                .with_description("Azure HTTP request duration (each try).")
                .with_unit("s")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
            cache_lookups: meter
                .u64_counter("cmkguard_cache_lookups_total")
                .with_description("Read-cache lookups by result (hit or miss).")
                .build(),
        }
    })
}

/// Counts one invocation.
pub fn record_invocation(function: &'static str, disposition: &'static str) {
    instruments().invocations.add(
        1,
        &[
            KeyValue::new("function", function),
            KeyValue::new("disposition", disposition),
        ],
    );
}

/// Counts one open finding reported in an Outcome.
pub fn record_finding(rule: &str, severity: &str) {
    instruments().findings.add(
        1,
        &[
            KeyValue::new("rule", rule.to_owned()),
            KeyValue::new("severity", severity.to_owned()),
        ],
    );
}

/// Counts one remediation action by its result.
pub fn record_remediation(rule: &str, result: &str) {
    instruments().remediations.add(
        1,
        &[
            KeyValue::new("rule", rule.to_owned()),
            KeyValue::new("result", result.to_owned()),
        ],
    );
}

/// Counts one alert delivery by its result.
pub fn record_notification(channel: &str, result: &str) {
    instruments().notifications.add(
        1,
        &[
            KeyValue::new("channel", channel.to_owned()),
            KeyValue::new("result", result.to_owned()),
        ],
    );
}

/// Counts `count` read-cache lookups that hit or missed (a remembered snapshot answers for
/// every hit its reads would have been).
pub fn record_cache_lookups(hit: bool, count: u64) {
    instruments().cache_lookups.add(
        count,
        &[KeyValue::new("result", if hit { "hit" } else { "miss" })],
    );
}

/// A per-try pipeline policy: one client span per Azure HTTP request (method, URL without
/// query, URL template, status, `x-ms-request-id`) and the request counter and duration.
#[derive(Debug)]
pub struct AzureTelemetryPolicy {
    /// `arm` or `keyvault`: how paths are turned into templates.
    pub service: &'static str,
}

#[async_trait]
impl Policy for AzureTelemetryPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let method = request.method().to_string().to_ascii_uppercase();
        let url = request.url();
        let template = url_template(self.service, url.path());
        let operation = format!("{method} {template}");
        let host = url.host_str().unwrap_or_default().to_owned();
        let span = tracing::info_span!(
            "azure.request",
            otel.name = %operation,
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = %method,
            url.full = %format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
            url.template = %template,
            server.address = %host,
            server.port = url.port_or_known_default().unwrap_or_default(),
            azure.service = self.service,
            http.response.status_code = Empty,
            az.service_request_id = Empty,
            error.type = Empty,
        );
        let started = Instant::now();
        let result = next[0]
            .send(ctx, request, &next[1..])
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(response) => {
                let status = u16::from(response.status());
                span.record("http.response.status_code", status);
                if let Some(id) = response.headers().get_optional_str(
                    &azure_core::http::headers::HeaderName::from_static("x-ms-request-id"),
                ) {
                    span.record("az.service_request_id", id);
                }
                if status >= 400 {
                    span.record("error.type", status.to_string());
                    span.record("otel.status_code", "ERROR");
                }
                status.to_string()
            }
            Err(error) => {
                let kind = format!("{:?}", error.kind());
                span.record("error.type", kind.as_str());
                span.record("otel.status_code", "ERROR");
                "error".to_owned()
            }
        };
        let instruments = instruments();
        let labels = [
            KeyValue::new("operation", operation),
            KeyValue::new("status", status),
        ];
        instruments.azure_requests.add(1, &labels);
        instruments
            .azure_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        result
    }
}

/// The path with names and ids replaced by placeholders: ARM paths keep the literal segments
/// (`subscriptions`, `resourceGroups`, `providers`, namespaces, resource types);
/// Key Vault data-plane paths keep only the collection and action words.
pub fn url_template(service: &str, path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::with_capacity(segments.len());
    if service == "keyvault" {
        const WORDS: &[&str] = &[
            "keys",
            "rotationpolicy",
            "rotate",
            "versions",
            "create",
            "secrets",
        ];
        for segment in segments {
            if WORDS.iter().any(|w| segment.eq_ignore_ascii_case(w)) {
                out.push(segment.to_owned());
            } else {
                out.push("{name}".to_owned());
            }
        }
    } else {
        let mut iter = segments.into_iter();
        let mut literal = true;
        while let Some(segment) = iter.next() {
            if segment.eq_ignore_ascii_case("providers") {
                out.push(segment.to_owned());
                if let Some(namespace) = iter.next() {
                    out.push(namespace.to_owned());
                }
                literal = true;
                continue;
            }
            if literal {
                out.push(segment.to_owned());
            } else {
                out.push("{name}".to_owned());
            }
            literal = !literal;
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_names_and_keep_types() {
        assert_eq!(
            url_template(
                "arm",
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
            ),
            "/subscriptions/{name}/resourceGroups/{name}/providers/Microsoft.KeyVault/vaults/{name}"
        );
        assert_eq!(
            url_template("arm", "/providers/Microsoft.ResourceGraph/resources"),
            "/providers/Microsoft.ResourceGraph/resources"
        );
        assert_eq!(
            url_template(
                "arm",
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/providers/Microsoft.Authorization/roleAssignments"
            ),
            "/subscriptions/{name}/resourceGroups/{name}/providers/Microsoft.MachineLearningServices/workspaces/{name}/providers/Microsoft.Authorization/roleAssignments"
        );
        assert_eq!(
            url_template("keyvault", "/keys/cmk/0123456789abcdef"),
            "/keys/{name}/{name}"
        );
        assert_eq!(
            url_template("keyvault", "/keys/cmk/rotationpolicy"),
            "/keys/{name}/rotationpolicy"
        );
    }

    #[test]
    fn export_needs_an_endpoint_and_an_enabled_sdk() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!enabled(env(&[])));
        assert!(!enabled(env(&[(ENDPOINT_VARIABLE, " ")])));
        assert!(enabled(env(&[(
            ENDPOINT_VARIABLE,
            "http://127.0.0.1:4318"
        )])));
        assert!(!enabled(env(&[
            (ENDPOINT_VARIABLE, "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])));
    }
}
