//! The HTTP server the Functions host talks to (azure-notes §H1–§H4): `GET /` for
//! readiness, `POST /{FunctionName}` for invocations, forwarded `POST /api/evaluate`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::engine::Engine;
use crate::functions::{self, FUNCTIONS};
use crate::telemetry;

/// Event Grid refuses events over 1 MiB; the host envelope repeats `data` under `Metadata`.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Room for the envelope around the largest event the relevant Azure events come close to.
pub const ENVELOPE_MARGIN_BYTES: usize = 64 * 1024;
/// Bodies above this are answered 413 without being parsed.
pub const MAX_BODY_BYTES: usize = MAX_EVENT_BYTES + ENVELOPE_MARGIN_BYTES;
/// After an oversized body, read on at most this much so the caller still sees the 413.
const MAX_DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;
/// In-flight invocations get this long to finish after SIGTERM.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 25;

/// The header carrying the host's invocation id.
const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// A bound, not yet running server.
pub struct Application {
    server: Server,
    port: u16,
}

impl Application {
    /// Binds to the given listener (tests pass port 0) and prepares the server.
    pub fn build(engine: Engine, listener: TcpListener) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let engine = web::Data::from(Arc::new(engine));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(engine.clone())
                .route("/", web::get().to(ready))
                .route("/api/evaluate", web::post().to(evaluate))
                .route("/{function}", web::post().to(invoke))
                .default_service(web::to(not_found))
        })
        .shutdown_timeout(SHUTDOWN_GRACE_SECONDS)
        .listen(listener)?
        .run();
        Ok(Self { server, port })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then drains in-flight requests and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn ready() -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({"status": "ready", "version": env!("CARGO_PKG_VERSION")}),
    )
}

async fn invoke(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let name = path.into_inner();
    let Some(function) = functions::find(&name) else {
        return unknown_function(&name);
    };
    let body = match read_body(&request, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let invocation_id = invocation_id(&request);
    let started = Instant::now();
    let span = telemetry::invocation_span(
        function.name,
        telemetry::faas_trigger(function.trigger),
        &invocation_id,
        request.headers(),
    );
    let reply = functions::invoke(&engine, function, &body, &invocation_id)
        .instrument(span.clone())
        .await;
    let disposition = reply.disposition;
    span.record("cmkguard.disposition", disposition);
    span.record("http.response.status_code", reply.status);
    telemetry::record_invocation(function.name, disposition);
    let elapsed_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        // Ignored events are most of the traffic and are counted in the invocation metric;
        // one line each would cost more than answering them.
        if disposition == "ignored" {
            tracing::debug!(
                message = "Invocation handled.",
                function = function.name,
                invocation_id = %invocation_id,
                disposition,
                elapsed_us
            );
        } else {
            tracing::info!(
                message = "Invocation handled.",
                function = function.name,
                invocation_id = %invocation_id,
                disposition,
                elapsed_us
            );
        }
    });
    bytes_response(
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        reply.body,
    )
}

async fn evaluate(
    request: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let body = match read_body(&request, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let invocation_id = invocation_id(&request);
    let span = telemetry::invocation_span("Evaluate", "http", &invocation_id, request.headers());
    let (status, reply) = functions::evaluate_http(&engine, &body, &invocation_id)
        .instrument(span.clone())
        .await;
    let disposition = match &reply {
        functions::EvaluateReply::Outcome(outcome)
        | functions::EvaluateReply::Unavailable(outcome, _) => {
            telemetry::disposition(outcome.disposition)
        }
        functions::EvaluateReply::BadRequest(_) => "rejected",
    };
    span.record("cmkguard.disposition", disposition);
    span.record("http.response.status_code", status);
    telemetry::record_invocation("Evaluate", disposition);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        &reply.to_json(),
    )
}

async fn not_found(request: HttpRequest) -> HttpResponse {
    let path = request.path().trim_start_matches('/');
    unknown_function(path)
}

fn unknown_function(name: &str) -> HttpResponse {
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    json_response(
        StatusCode::NOT_FOUND,
        &json!({
            "error": format!("no function named `{}`", crate::ids::truncate(name)),
            "functions": names,
        }),
    )
}

fn invocation_id(request: &HttpRequest) -> String {
    request
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Reads a (possibly chunked) body up to [`MAX_BODY_BYTES`].
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Bytes, HttpResponse> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = |size: String| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({
                "error": format!(
                    "body of {size} exceeds the limit of {MAX_BODY_BYTES} bytes (a 1 MiB Event Grid event plus the host envelope)"
                ),
                "limit": MAX_BODY_BYTES,
            }),
        )
    };
    let mut body = BytesMut::new();
    let mut received = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("body: could not be read: {e}")}),
            )
        })?;
        received += chunk.len();
        if received > MAX_BODY_BYTES || declared.is_some_and(|d| d > MAX_BODY_BYTES) {
            if received > MAX_DRAIN_BYTES {
                break;
            }
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if received > MAX_BODY_BYTES || declared.is_some_and(|d| d > MAX_BODY_BYTES) {
        let size = if received > MAX_DRAIN_BYTES {
            format!("more than {MAX_DRAIN_BYTES} bytes")
        } else {
            format!("{} bytes", received.max(declared.unwrap_or(0)))
        };
        return Err(too_large(size));
    }
    Ok(body.freeze())
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    bytes_response(status, body.to_string().into_bytes())
}

/// A response with a body that is already JSON text.
fn bytes_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
        .body(body)
}
