//! The functions the host can invoke, one entry per `function-definitions/<Name>/function.json`,
//! and how each turns a host invocation into a reply.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use tokio::time::Instant;

use actix_web::http::StatusCode;

use crate::engine::{EVENT_BUDGET, Engine, Unfinished};
use crate::intake::{BindingSource, Invocation, Rejection};
use crate::outcome::{Disposition, EventRef, HostResponse, Outcome};

/// What a function's trigger is, which decides how its invocation is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    EventGrid,
    /// Event Hubs with `cardinality: many`: a batch of messages per invocation.
    EventHub,
    Timer,
    Http,
    /// Storage queue: one message (the sweep fan-out's share of one subscription).
    Queue,
}

impl TriggerType {
    /// The OpenTelemetry `faas.trigger`: `pubsub` (Event Grid, Event Hubs), `timer` or `http`.
    pub fn faas_name(self) -> &'static str {
        match self {
            TriggerType::EventGrid | TriggerType::EventHub | TriggerType::Queue => "pubsub",
            TriggerType::Timer => "timer",
            TriggerType::Http => "http",
        }
    }
}

/// One function definition: its folder name (the route) and its trigger binding name.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDefinition {
    pub name: &'static str,
    pub binding: &'static str,
    pub trigger: TriggerType,
}

/// Every function in `function-definitions/`. A black-box test checks the two agree.
pub const FUNCTIONS: &[FunctionDefinition] = &[
    FunctionDefinition {
        name: "OnSubscriptionEvent",
        binding: "event",
        trigger: TriggerType::EventGrid,
    },
    FunctionDefinition {
        name: "OnKeyVaultEvent",
        binding: "event",
        trigger: TriggerType::EventGrid,
    },
    FunctionDefinition {
        name: "OnKeyVaultAudit",
        binding: "messages",
        trigger: TriggerType::EventHub,
    },
    FunctionDefinition {
        name: "Sweep",
        binding: "timer",
        trigger: TriggerType::Timer,
    },
    FunctionDefinition {
        name: "SweepSubscription",
        binding: "message",
        trigger: TriggerType::Queue,
    },
    FunctionDefinition {
        name: "Evaluate",
        binding: "req",
        trigger: TriggerType::Http,
    },
    FunctionDefinition {
        name: "WhoUses",
        binding: "req",
        trigger: TriggerType::Http,
    },
];

/// The function named `name` (the host uses the folder name's exact case; any case is accepted).
pub fn find(name: &str) -> Option<&'static FunctionDefinition> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The handler's reply: an HTTP status, the JSON body as sent, and the disposition for logs,
/// spans and metrics (`-` when the reply holds no Outcome).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub disposition: &'static str,
}

/// Runs one host invocation of `function` with the raw request body.
pub async fn invoke(
    engine: &Engine,
    function: &FunctionDefinition,
    body: &[u8],
    invocation_id: &str,
) -> Reply {
    let deadline = Instant::now() + EVENT_BUDGET;
    let mut logs = Vec::new();
    // Most invocations are Event Grid events, most of them irrelevant: read in one typed pass
    // when it can decide them, else the general way below (which words every rejection).
    if function.trigger == TriggerType::EventGrid
        && let Some(event) =
            crate::intake::read_event(body, function.binding, &engine.settings().intake)
    {
        return finish(engine.on_read_event(event, deadline).await, logs);
    }
    let result = match Invocation::parse(body) {
        Err(rejection) => Ok(rejected(rejection)),
        Ok(mut invocation) => match invocation.take_binding(function.binding) {
            Err(rejection) => Ok(rejected(rejection)),
            Ok((value, source)) => {
                if let BindingSource::OnlyEntry(found) = source {
                    logs.push(format!(
                        "warning: Data has no `{}` binding; used `{}` instead (check function.json)",
                        function.binding,
                        crate::text::field(&found)
                    ));
                }
                // The sweep and the check are large futures; boxed, they do not make every
                // event's future larger (it is moved several times per request).
                match function.trigger {
                    TriggerType::EventGrid => engine.on_event(value, deadline).await,
                    TriggerType::EventHub => {
                        let batch = invocation.metadata.event_hub_batch();
                        Box::pin(engine.on_audit(value, batch, invocation_id, deadline)).await
                    }
                    TriggerType::Timer => {
                        Box::pin(on_timer(engine, value, &invocation, invocation_id)).await
                    }
                    TriggerType::Queue => {
                        Box::pin(engine.sweep_subscription(value, invocation_id)).await
                    }
                    TriggerType::Http if function.name == "WhoUses" => {
                        return Box::pin(who_uses_envelope(engine, value, logs)).await;
                    }
                    TriggerType::Http => {
                        return Box::pin(invoke_http_envelope(engine, value, invocation_id, logs))
                            .await;
                    }
                }
            }
        },
    };
    finish(result, logs)
}

/// The reply to an invocation that ran to `result`, after the `logs` gathered on the way.
fn finish(result: Result<Outcome, Unfinished>, mut logs: Vec<String>) -> Reply {
    match result {
        Ok(outcome) => {
            logs.push(outcome.log_line());
            host_reply(StatusCode::OK, outcome, logs)
        }
        Err(unfinished) => {
            logs.push(format!(
                "{}; failing the invocation so that it is delivered again: {}",
                unfinished.outcome.log_line(),
                unfinished.reason()
            ));
            host_reply(StatusCode::SERVICE_UNAVAILABLE, *unfinished.outcome, logs)
        }
    }
}

fn host_reply(status: StatusCode, outcome: Outcome, logs: Vec<String>) -> Reply {
    outcome.record_metrics();
    let response = HostResponse {
        outputs: Map::new(),
        logs: log_lines(logs),
        return_value: &outcome,
    };
    Reply {
        status,
        body: to_body(&response),
        disposition: outcome.disposition.as_str(),
    }
}

/// The `Logs` lines as the host gets them: the host writes each to its own log, so none may
/// hold a control character or exceed [`crate::text::LINE_BYTES`], whatever went into it.
fn log_lines(logs: Vec<String>) -> Vec<String> {
    logs.into_iter()
        .map(|line| crate::text::clean_owned(line, crate::text::LINE))
        .collect()
}

/// The JSON body of a reply; `{}` in the unreachable case that serialization fails.
fn to_body(response: &impl serde::Serialize) -> Vec<u8> {
    /// Room for the reply to an ignored event without growing the buffer, and just below
    /// glibc's first large-bin size (1,024 bytes), whose requests consolidate the free lists.
    const TYPICAL_REPLY_BYTES: usize = 1000;
    let mut body = Vec::with_capacity(TYPICAL_REPLY_BYTES);
    match serde_json::to_writer(&mut body, response) {
        Ok(()) => body,
        Err(_) => b"{}".to_vec(),
    }
}

fn rejected(rejection: Rejection) -> Outcome {
    Outcome::new(
        EventRef::default(),
        Disposition::Rejected,
        Some(rejection.to_string()),
    )
}

/// The timer payload (`TimerInfo`, PascalCase).
#[derive(Debug, Deserialize)]
struct TimerInfo {
    #[serde(rename = "IsPastDue", default)]
    is_past_due: bool,
}

async fn on_timer(
    engine: &Engine,
    value: Value,
    invocation: &Invocation,
    invocation_id: &str,
) -> Result<Outcome, Unfinished> {
    let id = invocation
        .metadata
        .sys
        .as_ref()
        .and_then(|sys| sys.rand_guid.clone())
        .unwrap_or_else(|| invocation_id.to_owned());
    // `RandGuid` comes from the request like any event field.
    let event = EventRef::from_event(
        Some(id),
        Some(TIMER_EVENT_TYPE.to_owned()),
        Some("Sweep".to_owned()),
    );
    match crate::intake::deserialize_at::<TimerInfo>("timer", value) {
        Err(rejection) => Ok(Outcome::new(
            event,
            Disposition::Rejected,
            Some(rejection.to_string()),
        )),
        Ok(timer) => {
            if timer.is_past_due {
                tracing::info!(message = "The sweep timer was past due.");
            }
            engine.sweep(event).await
        }
    }
}

/// The `event.type` of timer outcomes.
pub const TIMER_EVENT_TYPE: &str = "Microsoft.Azure.Functions.TimerTrigger";

/// `WhoUses` invoked without request forwarding, like `Evaluate` below.
async fn who_uses_envelope(engine: &Engine, request: Value, mut logs: Vec<String>) -> Reply {
    let body = request_body(&request);
    let (status, payload) =
        crate::who_uses::http(engine.observer(), &engine.settings().intake, &body).await;
    logs.push(format!("who-uses: HTTP {}", status.as_u16()));
    http_output(status, payload.to_string(), logs, "-")
}

/// The body of an HTTP request the host passed as an object (`Data.req.Body`): its text as
/// sent, or a JSON value as text.
fn request_body(request: &Value) -> Vec<u8> {
    match request.get("Body") {
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => other.to_string().into_bytes(),
    }
}

/// The host's reply to an HTTP function invoked without request forwarding: the HTTP answer
/// (`status`, the JSON `body`) in `Outputs.res`, the invocation itself 200.
fn http_output(
    status: StatusCode,
    body: String,
    logs: Vec<String>,
    disposition: &'static str,
) -> Reply {
    let mut outputs = Map::new();
    outputs.insert(
        "res".to_owned(),
        json!({"statusCode": status.as_u16(), "body": body, "headers": {"Content-Type": "application/json"}}),
    );
    let response = HostResponse {
        outputs,
        logs: log_lines(logs),
        return_value: Value::Null,
    };
    Reply {
        status: StatusCode::OK,
        body: to_body(&response),
        disposition,
    }
}

/// `Evaluate` invoked without request forwarding: `Data.req` holds the HTTP request as an
/// object and the reply goes in `Outputs.res` (azure-notes §H4).
async fn invoke_http_envelope(
    engine: &Engine,
    request: Value,
    invocation_id: &str,
    mut logs: Vec<String>,
) -> Reply {
    let body = request_body(&request);
    let (status, payload) = evaluate_http(engine, &body, invocation_id).await;
    logs.push(payload.log_line());
    // Only a plain Outcome has a top-level `disposition` in the forwarded body.
    let disposition = match &payload {
        EvaluateReply::Outcome(outcome) => outcome.disposition.as_str(),
        EvaluateReply::BadRequest(_) | EvaluateReply::Unavailable(..) => "-",
    };
    http_output(status, payload.to_json().to_string(), logs, disposition)
}

/// The answer to an on-demand check.
#[derive(Debug)]
pub enum EvaluateReply {
    /// 200: the Outcome.
    Outcome(Box<Outcome>),
    /// 400: the request was bad.
    BadRequest(String),
    /// 503: Azure did not answer in time; the Outcome so far and why.
    Unavailable(Box<Outcome>, String),
}

impl EvaluateReply {
    /// The JSON body: the Outcome, or `{"error": reason}` (with the partial Outcome on 503).
    pub fn to_json(&self) -> Value {
        match self {
            EvaluateReply::Outcome(outcome) => serde_json::to_value(outcome).unwrap_or(Value::Null),
            EvaluateReply::BadRequest(reason) => json!({ "error": reason }),
            EvaluateReply::Unavailable(outcome, reason) => {
                json!({ "error": reason, "outcome": serde_json::to_value(outcome).unwrap_or(Value::Null) })
            }
        }
    }

    /// One line for the host's `Logs`.
    pub fn log_line(&self) -> String {
        match self {
            EvaluateReply::Outcome(outcome) => outcome.log_line(),
            EvaluateReply::BadRequest(reason) => format!("bad evaluate request: {reason}"),
            EvaluateReply::Unavailable(outcome, reason) => {
                format!("{}; unavailable: {reason}", outcome.log_line())
            }
        }
    }
}

/// `POST /api/evaluate`: 200 with the Outcome, 400 with the reason, or 503 when Azure did not
/// answer in time.
pub async fn evaluate_http(
    engine: &Engine,
    body: &[u8],
    request_id: &str,
) -> (StatusCode, EvaluateReply) {
    let deadline = Instant::now() + EVENT_BUDGET;
    match engine.evaluate_request(body, request_id, deadline).await {
        Ok(Ok(outcome)) => {
            outcome.record_metrics();
            (StatusCode::OK, EvaluateReply::Outcome(Box::new(outcome)))
        }
        Ok(Err(unfinished)) => {
            unfinished.outcome.record_metrics();
            // The reply's `error`: one line, like a reason, however many reads failed.
            let reason = crate::text::clean_owned(unfinished.reason(), crate::text::REASON);
            let reply = EvaluateReply::Unavailable(unfinished.outcome, reason);
            (StatusCode::SERVICE_UNAVAILABLE, reply)
        }
        Err(rejection) => (
            StatusCode::BAD_REQUEST,
            EvaluateReply::BadRequest(rejection.to_string()),
        ),
    }
}
