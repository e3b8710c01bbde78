//! The HTTP server the Functions host talks to (azure-notes §H1–§H4): `GET /` for
//! readiness, `POST /{FunctionName}` for invocations, forwarded `POST /api/evaluate` and
//! `POST /api/who-uses`.

use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::engine::Engine;
use crate::functions::{self, FUNCTIONS};
use crate::telemetry;

/// Event Grid refuses events over 1 MiB; the host envelope repeats `data` under `Metadata`.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Room for the envelope around the largest event the relevant Azure events come close to.
pub const ENVELOPE_MARGIN_BYTES: usize = 64 * 1024;
/// Bodies above this are answered 413 without being parsed; a declared `Content-Length` above
/// it is answered before the body is read.
pub const MAX_BODY_BYTES: usize = MAX_EVENT_BYTES + ENVELOPE_MARGIN_BYTES;
/// The limit for an Event Hub batch (`OnKeyVaultAudit`): `host.json` caps a batch at
/// [`MAX_BATCH_MESSAGES`] messages of at most 1 MiB each (the Event Hubs Standard limit), and
/// as the JSON text the host sends (`dataType: string`) each grows by the escaped quotes.
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH_MESSAGES * MAX_EVENT_BYTES * 3 / 2;
/// `extensions.eventHubs.maxEventBatchSize` in `host.json` (a black-box test holds them together).
pub const MAX_BATCH_MESSAGES: usize = 10;

/// The body limit of a function: an Event Hub batch holds several messages.
fn body_limit(function: Option<&functions::FunctionDefinition>) -> (usize, &'static str) {
    match function.map(|f| f.trigger) {
        Some(functions::TriggerType::EventHub) => (
            MAX_BATCH_BODY_BYTES,
            "an Event Hub batch: host.json's maxEventBatchSize messages of up to 1 MiB, as JSON text",
        ),
        _ => (
            MAX_BODY_BYTES,
            "a 1 MiB Event Grid event plus the host envelope",
        ),
    }
}
/// A body that sends nothing for this long is answered 408. The host sends a body it already
/// holds, so a pause this long means a stalled or hostile client, and every stalled body holds a
/// connection and a buffer.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// However steadily it trickles, a body must be complete within this long (408 otherwise): the
/// Event Grid budget. A caller that takes longer to send than Event Grid waits for the answer
/// is not one the answer can help.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
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
            let app = App::new()
                .app_data(engine.clone())
                .route("/", web::get().to(ready))
                .route("/api/evaluate", web::post().to(evaluate))
                .route("/api/who-uses", web::post().to(who_uses));
            // Each function's own path is matched as text; the pattern, which needs a regular
            // expression per request (a tenth of an irrelevant event's CPU), only takes the
            // names in another case.
            FUNCTIONS
                .iter()
                .fold(app, |app, function| {
                    app.route(
                        &format!("/{}", function.name),
                        web::post().to(
                            move |request: HttpRequest,
                                  payload: web::Payload,
                                  engine: web::Data<Engine>| {
                                invoke(function, request, payload, engine)
                            },
                        ),
                    )
                })
                .route("/{function}", web::post().to(invoke_by_name))
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

/// `POST /{function}` for a name in another case than its definition's.
async fn invoke_by_name(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let name = path.into_inner();
    match functions::find(&name) {
        Some(function) => invoke(function, request, payload, engine).await,
        None => unknown_function(&name),
    }
}

async fn invoke(
    function: &'static functions::FunctionDefinition,
    request: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let body = match read_body(&request, payload, body_limit(Some(function))).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let invocation_id = invocation_id(&request);
    let started = Instant::now();
    let span = telemetry::invocation_span(
        function.name,
        function.trigger.faas_name(),
        &invocation_id,
        request.headers(),
    );
    let reply = functions::invoke(&engine, function, &body, &invocation_id)
        .instrument(span.clone())
        .await;
    let disposition = reply.disposition;
    span.record("cmkguard.disposition", disposition);
    span.record("http.response.status_code", reply.status.as_u16());
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
    bytes_response(reply.status, reply.body)
}

async fn evaluate(
    request: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let body = match read_body(&request, payload, body_limit(None)).await {
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
        | functions::EvaluateReply::Unavailable(outcome, _) => outcome.disposition.as_str(),
        functions::EvaluateReply::BadRequest(_) => "rejected",
    };
    span.record("cmkguard.disposition", disposition);
    span.record("http.response.status_code", status.as_u16());
    telemetry::record_invocation("Evaluate", disposition);
    json_response(status, &reply.to_json())
}

/// `POST /api/who-uses` (forwarded): what depends on a key or vault.
async fn who_uses(
    request: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine>,
) -> HttpResponse {
    let limit = (
        crate::who_uses::MAX_BODY_BYTES,
        "a who-uses request: {\"target\": …}",
    );
    let body = match read_body(&request, payload, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let invocation_id = invocation_id(&request);
    let span = telemetry::invocation_span("WhoUses", "http", &invocation_id, request.headers());
    let (status, reply) =
        crate::who_uses::http(engine.observer(), &engine.settings().intake, &body)
            .instrument(span.clone())
            .await;
    span.record("http.response.status_code", status.as_u16());
    json_response(status, &reply)
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
            "error": format!("no function named `{}`", crate::text::field(name)),
            "functions": names,
        }),
    )
}

fn invocation_id(request: &HttpRequest) -> String {
    request
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        // It is repeated in logs and spans: a tab (the one control a header may hold) or an
        // overlong value is replaced.
        .filter(|v| !v.is_empty() && v.len() <= 100 && !v.bytes().any(|b| b.is_ascii_control()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Reads a (possibly chunked) body up to `limit` ([`body_limit`]): 413 for a larger one (at once
/// when its `Content-Length` says so), 408 when it stalls for [`BODY_IDLE_TIMEOUT`] or is not
/// complete within [`BODY_DEADLINE`]. These answers leave the body unread and close the
/// connection ([`UnreadBody`]).
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    (limit, why): (usize, &'static str),
) -> Result<Bytes, HttpResponse> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&d| d > limit as u64) {
        let reply = too_large(&format!("{declared} bytes (Content-Length)"), limit, why);
        return Err(UnreadBody::reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &reply,
            payload,
        ));
    }
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let mut body = Received::default();
    loop {
        // A chunk already received is taken at once: no clock read, no timer (most bodies).
        let next = if let Some(next) = payload.next().now_or_never() {
            next
        } else {
            let wait_until = (tokio::time::Instant::now() + BODY_IDLE_TIMEOUT).min(deadline);
            match tokio::time::timeout_at(wait_until, payload.next()).await {
                Ok(next) => next,
                Err(_elapsed) => {
                    let reply = timed_out(body.len(), wait_until >= deadline);
                    return Err(UnreadBody::reply(
                        StatusCode::REQUEST_TIMEOUT,
                        &reply,
                        payload,
                    ));
                }
            }
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("body: could not be read: {e}")}),
            )
        })?;
        if body.len() + chunk.len() > limit {
            let reply = too_large(&format!("more than {limit} bytes"), limit, why);
            return Err(UnreadBody::reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &reply,
                payload,
            ));
        }
        body.push(chunk);
    }
    Ok(body.into_bytes())
}

/// A request body as it arrives: a body in one chunk (most are) is kept as received, not
/// copied; later chunks are copied after the first.
#[derive(Default)]
struct Received {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Received {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    fn push(&mut self, chunk: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            first => {
                if let Some(first) = first {
                    self.rest.extend_from_slice(&first);
                }
                self.rest.extend_from_slice(&chunk);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// The body of an answer given before the request body was read to its end. It keeps the
/// request body's stream until the answer is written, because actix-web decides then what
/// becomes of the rest: with the stream still held, it closes the connection after the answer
/// (reading on briefly, so that the client sees it); a dropped chunked stream would instead
/// be drained for as long as the client sends — or holds it open without sending.
struct UnreadBody {
    reply: Bytes,
    _payload: web::Payload,
}

impl UnreadBody {
    fn reply(status: StatusCode, reply: &Value, payload: web::Payload) -> HttpResponse {
        HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
            .body(Self {
                reply: Bytes::from(reply.to_string()),
                _payload: payload,
            })
    }
}

impl MessageBody for UnreadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.reply.len() as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let reply = std::mem::take(&mut self.get_mut().reply);
        Poll::Ready((!reply.is_empty()).then_some(Ok(reply)))
    }
}

/// The 413 body: the limit and why it is what it is.
fn too_large(size: &str, limit: usize, why: &str) -> Value {
    json!({
        "error": format!("body of {size} exceeds the limit of {limit} bytes ({why})"),
        "limit": limit,
    })
}

/// The 408 body for a body that stalled (or, when `whole`, took longer than [`BODY_DEADLINE`]).
fn timed_out(received: usize, whole: bool) -> Value {
    let error = if whole {
        format!(
            "body: not complete after {} s ({received} bytes received); the body must arrive within {} s",
            BODY_DEADLINE.as_secs(),
            BODY_DEADLINE.as_secs()
        )
    } else {
        format!(
            "body: nothing received for {} s ({received} bytes so far); the request was given up",
            BODY_IDLE_TIMEOUT.as_secs()
        )
    };
    json!({ "error": error })
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
