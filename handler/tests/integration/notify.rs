//! Alerts against real parts: a local HTTP(S) sink that answers like Teams Workflows (202),
//! a fake of the ACS `emails:send` endpoint over HTTPS, and aiosmtpd with STARTTLS and AUTH
//! (installed by `scripts/test-tools`). Every channel goes through the production transport.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use cmk_guard::azure::http_client;
use cmk_guard::azure::{ConnectTo, TransportSettings};
use cmk_guard::notify::{
    Alert, Change, Channel, Delivery, DeliveryStatus, Message, Notification, Notifier,
    NotifySettings, RetryBudget,
};
use cmk_guard::outcome::{Action, ActionKind, ActionResult, Finding, FindingState, Severity};
use cmk_guard_blackbox::scratch::Scratch;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

const SUBSCRIPTION: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const HOSTILE: &str = "kv<script>*_[x](http://evil)";
const SIG: &str = "S3cr3tW0rkflowSig";
const TENANT: &str = "contoso.onmicrosoft.com";
const TOKEN: &str = "test-token-for-acs";

/// Short waits so retries cost milliseconds, and room for one `Retry-After: 1` however slow
/// the machine; failures end after `max_attempts`, long before the total.
const FAST: RetryBudget = RetryBudget {
    total: Duration::from_secs(20),
    max_attempts: 4,
    first_backoff: Duration::from_millis(50),
};

// ---------------------------------------------------------------------------------------------
// Findings

fn workspace() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/ml/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    )
}

fn hostile_vault() -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/ml/providers/Microsoft.KeyVault/vaults/{HOSTILE}"
    )
}

fn finding(severity: Severity, resource: &str) -> Finding {
    Finding {
        rule: cmk_guard::catalogue::RuleId::VaultPurgeProtection,
        resource: resource.into(),
        workspace: workspace(),
        severity,
        state: FindingState::Open,
        observed: "enablePurgeProtection is false".into(),
        expected: "enablePurgeProtection is true".into(),
    }
}

fn hostile_notification(severity: Severity) -> Notification {
    Notification::from_finding(
        &finding(severity, &hostile_vault()),
        Change::New,
        Some(TENANT),
    )
    .with_action(&Action {
        kind: ActionKind::Remediate,
        rule: "vault.purge-protection".into(),
        target: hostile_vault(),
        result: ActionResult::Planned,
        detail: "PATCH enablePurgeProtection=true".into(),
    })
}

// ---------------------------------------------------------------------------------------------
// An HTTP(S) sink that records requests and answers from a script

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// How long the sink takes before it answers.
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
}

#[derive(Debug, Clone)]
struct Received {
    path_and_query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Decides a reply from the request itself (a fake service's validation), before the script.
type Check = fn(&Received) -> Option<Reply>;

struct SinkState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    check: Option<Check>,
}

struct Sink {
    port: u16,
    state: Arc<SinkState>,
}

impl Sink {
    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<SinkState>) -> HttpResponse {
    let received = Received {
        path_and_query: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let reply = state
        .check
        .and_then(|check| check(&received))
        .or_else(|| state.script.lock().unwrap().pop_front())
        .unwrap_or_else(|| state.default.clone());
    state.received.lock().unwrap().push(received);
    tokio::time::sleep(reply.delay).await;
    let mut response = HttpResponse::build(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in reply.headers {
        response.insert_header((name, value));
    }
    response.body(reply.body)
}

async fn start_sink(
    script: Vec<Reply>,
    default: Reply,
    check: Option<Check>,
    tls: Option<rustls::ServerConfig>,
) -> Sink {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = web::Data::new(SinkState {
        received: Mutex::new(Vec::new()),
        script: Mutex::new(script.into()),
        default,
        check,
    });
    let state = data.clone().into_inner();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals();
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config),
        None => server.listen(listener),
    }
    .unwrap()
    .run();
    tokio::spawn(server);
    Sink { port, state }
}

/// A Workflows-like sink: 202 with an empty body, after the scripted replies.
async fn workflows_sink(script: Vec<Reply>) -> Sink {
    start_sink(script, Reply::status(202), None, None).await
}

fn workflow_url(port: u16) -> String {
    format!(
        "http://127.0.0.1:{port}/powerautomate/automations/direct/workflows/4f1c/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"
    )
}

fn notifier(
    pairs: &[(&str, String)],
    transport: &TransportSettings,
    credential: Option<Arc<dyn TokenCredential>>,
) -> Notifier {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let settings = NotifySettings::from_lookup(|name| map.get(name).cloned()).unwrap();
    Notifier::new(
        &settings,
        http_client(transport).unwrap(),
        transport,
        credential,
    )
    .unwrap()
    .with_retry_budget(FAST)
}

fn teams_notifier(port: u16) -> Notifier {
    notifier(
        &[("CMKGUARD_TEAMS_WEBHOOK_URL", workflow_url(port))],
        &TransportSettings::default(),
        None,
    )
}

fn sent_detail(delivery: &Delivery) -> &str {
    match &delivery.status {
        DeliveryStatus::Sent { detail } => detail,
        DeliveryStatus::Failed { reason, .. } => panic!("not sent: {reason}"),
    }
}

fn failure(delivery: &Delivery) -> (&str, bool) {
    match &delivery.status {
        DeliveryStatus::Failed { reason, retryable } => (reason, *retryable),
        DeliveryStatus::Sent { detail } => panic!("unexpectedly sent: {detail}"),
    }
}

/// Every text a card would render (not URLs, which are never shown as Markdown).
fn card_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| card_texts(v, out)),
        // A TextRun is plain text in Adaptive Cards: what it shows is never read as Markdown.
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("TextRun") => {}
        Value::Object(map) => {
            for (key, v) in map {
                if key != "url" && key != "$schema" {
                    card_texts(v, out);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Teams

#[tokio::test]
async fn a_teams_card_reaches_workflows_with_escaped_names_and_a_portal_link() {
    let sink = workflows_sink(Vec::new()).await;
    let notifier = teams_notifier(sink.port);
    let notification = hostile_notification(Severity::Critical);
    let message = Message::teams(Alert::Changes(std::slice::from_ref(&notification)));

    let delivery = notifier.send(&message).await;

    assert_eq!(delivery.channel, Channel::Teams);
    let detail = sent_detail(&delivery);
    assert_eq!(
        detail,
        format!("HTTP 202 from http://127.0.0.1:{}", sink.port)
    );
    let action = delivery.action("vault.purge-protection");
    assert_eq!(action.kind, ActionKind::Notify);
    assert_eq!(action.target, "teams");
    assert_eq!(action.result, ActionResult::Sent);

    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].path_and_query.ends_with(&format!("sig={SIG}")));
    assert_eq!(received[0].headers["content-type"], "application/json");
    let body = received[0].json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["contentUrl"], Value::Null);
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.5");
    assert_eq!(card["msteams"]["width"], "Full");
    assert_eq!(
        card["body"][0]["text"],
        "ws1: 1 CMK problem, worst Critical"
    );
    assert!(
        card["fallbackText"]
            .as_str()
            .unwrap()
            .starts_with("ws1: 1 CMK problem, worst Critical. Critical · new: ")
    );
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );

    let section = &card["body"][1];
    assert_eq!(section["type"], "Container");
    assert_eq!(section["style"], "attention");
    assert_eq!(section["items"][0]["color"], "attention");
    let items = section["items"].as_array().unwrap();
    assert!(
        items[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("Why it matters: ")
    );
    assert_eq!(
        items[2]["text"],
        "What cmk-guard does: cmk-guard would fix this in remediate mode; in this mode a person fixes it."
    );
    let facts = items.iter().find(|item| item["type"] == "FactSet").unwrap()["facts"]
        .as_array()
        .unwrap();
    let titles: Vec<&str> = facts.iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Observed", "Expected", "Action", "Rule"]);
    // Names and ids are TextRuns, in reading order around the facts, and copy exactly.
    let verbatim: Vec<(&str, &str)> = items
        .iter()
        .filter(|item| item["type"] == "RichTextBlock" && item["inlines"][1]["fontType"].is_null())
        .map(|item| {
            (
                item["inlines"][0]["text"].as_str().unwrap(),
                item["inlines"][1]["text"].as_str().unwrap(),
            )
        })
        .collect();
    let hostile_id = hostile_vault();
    assert_eq!(
        verbatim,
        [
            ("Workspace: ", "ws1"),
            // The last segment of the id: the hostile name holds a `/`.
            ("Resource: ", "evil)"),
            ("Resource id: ", hostile_id.as_str()),
            ("Workspace id: ", workspace().as_str()),
        ]
    );
    for (_, text) in &verbatim {
        assert!(!text.contains('\\'), "backslash in {text:?}");
    }
    let fact = |name: &str| {
        facts
            .iter()
            .find(|f| f["title"] == name)
            .map(|f| f["value"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(
        fact("Action"),
        "would remediate (not applied in this mode): PATCH enablePurgeProtection=true"
    );

    // The resource name cannot form a link, emphasis or a tag anywhere in the card.
    let mut texts = Vec::new();
    card_texts(card, &mut texts);
    for text in &texts {
        assert!(!text.contains("]("), "link syntax in {text:?}");
        assert!(!text.contains('<'), "tag in {text:?}");
        assert!(!text.contains('*'), "emphasis in {text:?}");
        assert!(!text.contains('\\'), "escape backslash in {text:?}");
    }

    // The only link is the portal button; the hostile id is no ARM id, so it is the workspace's.
    let open = &card["actions"][0];
    assert_eq!(open["type"], "Action.OpenUrl");
    assert_eq!(
        open["url"],
        format!(
            "https://portal.azure.com/#@{TENANT}/resource{}",
            workspace()
        )
    );
}

#[tokio::test]
async fn a_stored_message_is_sent_again_unchanged() {
    let sink = workflows_sink(Vec::new()).await;
    let notifier = teams_notifier(sink.port);
    let message = Message::teams(Alert::Changes(&[hostile_notification(Severity::High)]));

    let stored = serde_json::to_string(&message).unwrap();
    assert!(!stored.contains(SIG));
    let restored: Message = serde_json::from_str(&stored).unwrap();
    assert_eq!(restored, message);
    assert!(notifier.send(&restored).await.is_sent());
    assert!(notifier.send(&message).await.is_sent());

    let received = sink.received();
    assert_eq!(received[0].body, received[1].body);
}

#[tokio::test]
async fn many_findings_are_trimmed_under_20_kb_with_a_count_of_the_rest() {
    let sink = workflows_sink(Vec::new()).await;
    let notifier = teams_notifier(sink.port);
    let notifications: Vec<Notification> = (0..300)
        .map(|i| {
            let mut f = finding(Severity::Medium, &hostile_vault());
            f.observed = format!("finding {i}: {}", "x".repeat(300));
            Notification::from_finding(&f, Change::New, Some(TENANT))
        })
        .collect();

    let delivery = notifier
        .send(&Message::teams(Alert::Changes(&notifications)))
        .await;

    sent_detail(&delivery);
    let received = sink.received();
    assert!(
        received[0].body.len() <= 20 * 1024,
        "{} bytes",
        received[0].body.len()
    );
    let body = received[0].json();
    let items = body["attachments"][0]["content"]["body"]
        .as_array()
        .unwrap();
    let sections = items.iter().filter(|i| i["type"] == "Container").count();
    assert!(sections >= 5, "only {sections} findings fit");
    assert_eq!(
        items.last().unwrap()["text"],
        format!("+{} more not shown", 300 - sections)
    );
    assert_eq!(items[1]["style"], "accent");
    // Batched sections carry their own portal button.
    let buttons = items[1]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "ActionSet")
        .unwrap();
    assert_eq!(buttons["actions"][0]["type"], "Action.OpenUrl");
}

#[tokio::test]
async fn an_absurd_retry_after_after_a_slow_answer_is_refused_without_a_panic() {
    // The first answer takes over a second, so the time spent plus an unbounded wait would
    // overflow; the wait is bounded and past the budget, so the send gives up at once.
    for value in ["18446744073709551615", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let sink = workflows_sink(vec![
            Reply::status(429)
                .header("Retry-After", value)
                .after(Duration::from_millis(1100)),
        ])
        .await;
        let message = Message::teams(Alert::Changes(&[hostile_notification(Severity::High)]));
        let sent = teams_notifier(sink.port).send(&message).await;
        let (reason, retryable) = failure(&sent);
        assert!(
            retryable && reason.contains("past the"),
            "{value}: {reason}"
        );
        assert_eq!(sink.received().len(), 1, "{value}: not retried");
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_once() {
    let sink = workflows_sink(vec![Reply::status(429).header("Retry-After", "1")]).await;
    let notifier = teams_notifier(sink.port);
    let message = Message::teams(Alert::Changes(&[hostile_notification(Severity::High)]));

    let started = Instant::now();
    let delivery = notifier.send(&message).await;

    sent_detail(&delivery);
    // A lower bound the sender's own sleep guarantees; that it stayed within the budget is
    // what `sent` says (past the budget the sender gives up instead).
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn a_500_is_retried_until_workflows_accepts() {
    let sink = workflows_sink(vec![Reply::status(500)]).await;
    let notifier = teams_notifier(sink.port);
    let message = Message::teams(Alert::Changes(&[hostile_notification(Severity::High)]));

    let delivery = notifier.send(&message).await;

    assert!(sent_detail(&delivery).starts_with("HTTP 202"));
    let received = sink.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body);
}

#[tokio::test]
async fn the_webhook_sig_never_shows_in_failures() {
    let message = Message::teams(Alert::Changes(&[hostile_notification(Severity::High)]));
    // A server that echoes the request URL in its errors.
    fn echo(request: &Received) -> Option<Reply> {
        Some(Reply::status(500).body(&format!(
            "flow failed for https://prod.example{}",
            request.path_and_query
        )))
    }
    let echoing = start_sink(Vec::new(), Reply::status(202), Some(echo), None).await;
    fn echo_bad_request(request: &Received) -> Option<Reply> {
        Some(Reply::status(400).body(&format!("bad card sent to {}", request.path_and_query)))
    }
    let rejecting = start_sink(Vec::new(), Reply::status(202), Some(echo_bad_request), None).await;
    let throttling = workflows_sink(vec![Reply::status(429).header("Retry-After", "60")]).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    let mut reasons = Vec::new();
    let echoed = teams_notifier(echoing.port).send(&message).await;
    let (reason, retryable) = failure(&echoed);
    assert!(retryable && reason.starts_with("HTTP 500"), "{reason}");
    assert!(reason.contains("[redacted]"), "{reason}");
    assert_eq!(echoing.received().len(), FAST.max_attempts as usize);
    reasons.push(reason.to_owned());

    let rejected = teams_notifier(rejecting.port).send(&message).await;
    let (reason, retryable) = failure(&rejected);
    assert!(!retryable && reason.starts_with("HTTP 400"), "{reason}");
    assert_eq!(rejecting.received().len(), 1);
    reasons.push(reason.to_owned());

    let started = Instant::now();
    let throttled = teams_notifier(throttling.port).send(&message).await;
    let (reason, retryable) = failure(&throttled);
    assert!(retryable && reason.contains("60 s"), "{reason}");
    // Given up at once: no second try, and no wait (waiting out the Retry-After would take
    // a minute, however fast the machine).
    assert_eq!(throttling.received().len(), 1, "not retried");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited out a Retry-After past the budget"
    );
    reasons.push(reason.to_owned());

    let refused = teams_notifier(closed_port).send(&message).await;
    let (reason, retryable) = failure(&refused);
    assert!(
        retryable && reason.starts_with("could not connect"),
        "{reason}"
    );
    reasons.push(reason.to_owned());

    let notifier = teams_notifier(closed_port);
    reasons.push(format!("{notifier:?}"));
    reasons.extend(notifier.describe());
    reasons.push(serde_json::to_string(&refused).unwrap());
    reasons.push(format!("{:?}", refused.action("vault.purge-protection")));
    for text in reasons {
        assert!(!text.contains(SIG), "the sig leaked: {text}");
        assert!(
            !text.contains("workflows/4f1c"),
            "the flow path leaked: {text}"
        );
    }
}

#[tokio::test]
async fn an_unconfigured_channel_fails_without_sending() {
    let notifier = notifier(&[], &TransportSettings::default(), None);
    assert!(!notifier.is_configured(Channel::Teams));
    let delivery = notifier
        .send(&Message::teams(Alert::Changes(&[hostile_notification(
            Severity::High,
        )])))
        .await;
    assert_eq!(
        failure(&delivery),
        ("CMKGUARD_TEAMS_WEBHOOK_URL is not set", false)
    );
}

// ---------------------------------------------------------------------------------------------
// Generic webhook

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with the secret's key, computed here with
/// the `hmac` crate as a receiver would, not with cmk-guard's signer.
fn standard_webhooks_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_webhook_gets_one_signed_cloudevent_per_change_with_ids_kept_on_retry() {
    // The second event is refused once (503, past the budget's retries) so the message fails.
    let refusals = (0..FAST.max_attempts).map(|_| Reply::status(503));
    let sink = workflows_sink(
        std::iter::once(Reply::status(202))
            .chain(refusals)
            .collect(),
    )
    .await;
    let notifier = notifier(
        &[
            (
                "CMKGUARD_WEBHOOK_URL",
                format!("http://127.0.0.1:{}/hooks/cmk?token={SIG}", sink.port),
            ),
            ("CMKGUARD_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("WEBSITE_SITE_NAME", "func-cmk-guard".to_owned()),
        ],
        &TransportSettings::default(),
        None,
    );
    let opened = hostile_notification(Severity::Critical);
    let mut resolved = Notification::from_finding(
        &Finding {
            rule: cmk_guard::catalogue::RuleId::WorkspaceKeyAccess,
            state: FindingState::Resolved,
            ..finding(Severity::High, &workspace())
        },
        Change::Resolved,
        None,
    );
    resolved.observed = "the identity can unwrap".into();
    let now = time::OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
    let message = Message::webhook("outbox-1", &[opened, resolved], now);
    let stored: Message = serde_json::from_value(serde_json::to_value(&message).unwrap()).unwrap();

    let first = notifier.send(&message).await;
    let (reason, retryable) = failure(&first);
    assert!(retryable && reason.contains("503"), "{reason}");
    assert!(
        !reason.contains(SIG) && !reason.contains("MfKQ9r8"),
        "{reason}"
    );
    let again = notifier.send(&stored).await;
    assert!(sent_detail(&again).contains("2 event(s)"), "{again:?}");
    assert!(!sent_detail(&again).contains(SIG));

    let received = sink.received();
    // Sent: event 1; refused: event 2 (4 tries); sent again: events 1 and 2.
    assert_eq!(received.len(), 1 + FAST.max_attempts as usize + 2);
    let ids: Vec<String> = received
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids[0],
        ids[ids.len() - 2],
        "a retry of a change keeps its id"
    );
    assert_eq!(ids[1], ids[ids.len() - 1]);
    assert_ne!(ids[0], ids[1], "one id per change");

    for request in &received {
        let event = request.json();
        assert_eq!(
            request.headers["content-type"],
            "application/cloudevents+json"
        );
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "/cmk-guard/func-cmk-guard");
        assert_eq!(event["time"], "2026-11-30T00:53:20Z");
        assert_eq!(event["subject"], workspace());
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(request.headers["webhook-id"], event["id"].as_str().unwrap());
        let timestamp = &request.headers["webhook-timestamp"];
        let age =
            time::OffsetDateTime::now_utc().unix_timestamp() - timestamp.parse::<i64>().unwrap();
        assert!(
            (0..300).contains(&age),
            "timestamp {timestamp} is this attempt's"
        );
        assert_eq!(
            request.headers["webhook-signature"],
            standard_webhooks_signature(
                WEBHOOK_SECRET,
                &request.headers["webhook-id"],
                timestamp,
                &request.body
            )
        );
        assert_ne!(
            request.headers["webhook-signature"],
            standard_webhooks_signature(
                "whsec_dGhpcyBpcyBhbm90aGVyIGtleSBvZiAzMiBieXRlcyE=",
                &request.headers["webhook-id"],
                timestamp,
                &request.body
            )
        );
    }
    let opened = received[0].json();
    assert_eq!(opened["type"], "com.cmk-guard.finding.opened");
    assert_eq!(opened["data"]["change"]["kind"], "new");
    assert_eq!(opened["data"]["finding"]["rule"], "vault.purge-protection");
    assert_eq!(opened["data"]["finding"]["resource"], hostile_vault());
    assert_eq!(opened["data"]["finding"]["severity"], "critical");
    assert_eq!(opened["data"]["finding"]["state"], "open");
    assert_eq!(
        opened["data"]["finding"]["observed"],
        "enablePurgeProtection is false"
    );
    assert_eq!(
        opened["data"]["finding"]["expected"],
        "enablePurgeProtection is true"
    );
    assert_eq!(opened["data"]["finding"]["action"]["result"], "planned");
    let resolved = received[received.len() - 1].json();
    assert_eq!(resolved["type"], "com.cmk-guard.finding.resolved");
    assert_eq!(resolved["data"]["finding"]["state"], "resolved");
    assert_eq!(resolved["data"]["finding"]["action"], Value::Null);
}

#[tokio::test]
async fn an_unsigned_webhook_sends_no_signature_headers() {
    let sink = workflows_sink(Vec::new()).await;
    let notifier = notifier(
        &[(
            "CMKGUARD_WEBHOOK_URL",
            format!("http://127.0.0.1:{}/hooks/cmk", sink.port),
        )],
        &TransportSettings::default(),
        None,
    );
    let now = time::OffsetDateTime::now_utc();
    let message = Message::webhook("outbox-2", &[hostile_notification(Severity::Low)], now);

    let delivery = notifier.send(&message).await;

    assert_eq!(delivery.channel, Channel::Webhook);
    let request = &sink.received()[0];
    assert_eq!(request.json()["source"], "/cmk-guard/local");
    assert!(!request.headers.contains_key("webhook-signature"));
    assert!(!request.headers.contains_key("webhook-id"));
}

// ---------------------------------------------------------------------------------------------
// Certificates for the HTTPS and SMTP servers

struct Pki {
    /// Holds the PEM files; removed on drop.
    _dir: Scratch,
    ca_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    server_config: rustls::ServerConfig,
}

/// A test CA and a leaf for `names` and 127.0.0.1 (rustls refuses a CA as the end entity).
fn pki(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cmk-guard notify test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, names[0]);
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

    let dir = Scratch::new("notify-pki");
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();

    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        _dir: dir,
        ca_path,
        cert_path,
        key_path,
        server_config,
    }
}

// ---------------------------------------------------------------------------------------------
// Azure Communication Services

#[derive(Debug, Default)]
struct StubCredential {
    scopes: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl TokenCredential for StubCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .unwrap()
            .extend(scopes.iter().map(|s| (*s).to_owned()));
        Ok(AccessToken::new(
            TOKEN,
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// What ACS itself would refuse: no or a wrong bearer token (401), a body without the
/// required fields (400).
fn acs_checks(request: &Received) -> Option<Reply> {
    if request.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}"))
    {
        return Some(Reply::status(401).body(r#"{"error":{"code":"Unauthorized"}}"#));
    }
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    let valid = body["senderAddress"].is_string()
        && body["content"]["subject"].is_string()
        && body["recipients"]["to"]
            .as_array()
            .is_some_and(|to| !to.is_empty() && to.iter().all(|r| r["address"].is_string()));
    if !valid {
        return Some(Reply::status(400).body(r#"{"error":{"code":"BadRequest"}}"#));
    }
    None
}

#[tokio::test]
async fn acs_email_goes_over_https_with_the_managed_identity_token() {
    let pki = pki(&["alerts.communication.azure.com"]);
    let accepted = Reply::status(202)
        .header(
            "Operation-Location",
            "https://alerts.communication.azure.com/emails/operations/op-42?api-version=2023-03-31",
        )
        .header("Retry-After", "30")
        .body(r#"{"id":"op-42","status":"Running"}"#);
    let sink = start_sink(
        vec![Reply::status(429).header("Retry-After", "0")],
        accepted,
        Some(acs_checks),
        Some(pki.server_config.clone()),
    )
    .await;
    let transport = TransportSettings {
        ca_bundle: Some(pki.ca_path.clone()),
        proxy: Default::default(),
        connect_to: ConnectTo::parse_list(&format!(
            "communication.azure.com=127.0.0.1:{}",
            sink.port
        ))
        .unwrap(),
    };
    let credential = Arc::new(StubCredential::default());
    let notifier = notifier(
        &[
            (
                "CMKGUARD_EMAIL_TO",
                "oncall@contoso.com, Sec Team <sec@contoso.com>".into(),
            ),
            ("CMKGUARD_EMAIL_FROM", "DoNotReply@contoso.com".into()),
            (
                "CMKGUARD_ACS_ENDPOINT",
                "https://alerts.communication.azure.com".into(),
            ),
        ],
        &transport,
        Some(credential.clone()),
    );
    let notification = hostile_notification(Severity::Critical);

    let delivery = notifier
        .send(&Message::email(Alert::Changes(std::slice::from_ref(
            &notification,
        ))))
        .await;

    assert_eq!(
        sent_detail(&delivery),
        "HTTP 202 from https://alerts.communication.azure.com, operation op-42"
    );
    assert_eq!(
        *credential.scopes.lock().unwrap(),
        ["https://communication.azure.com/.default"]
    );
    let received = sink.received();
    assert_eq!(received.len(), 2, "one 429, then accepted");
    let request = &received[1];
    assert_eq!(
        request.path_and_query,
        "/emails:send?api-version=2023-03-31"
    );
    assert_eq!(request.headers["host"], "alerts.communication.azure.com");
    assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        request.headers["operation-id"], received[0].headers["operation-id"],
        "a retry keeps its operation id"
    );
    let body = request.json();
    assert_eq!(body["senderAddress"], "DoNotReply@contoso.com");
    assert_eq!(
        body["recipients"]["to"],
        json!([{"address": "oncall@contoso.com"}, {"address": "sec@contoso.com", "displayName": "Sec Team"}])
    );
    let subject = body["content"]["subject"].as_str().unwrap();
    assert!(
        subject == "[cmk-guard] ws1: 1 CMK problem, worst Critical",
        "{subject}"
    );
    let html = body["content"]["html"].as_str().unwrap();
    assert!(
        html.contains("kv&lt;script&gt;*_[x](http://evil)"),
        "{html}"
    );
    assert!(!html.contains("<script"));
    assert!(html.contains(&format!(
        "<a href=\"https://portal.azure.com/#@{TENANT}/resource{}\">",
        workspace()
    )));
    let text = body["content"]["plainText"].as_str().unwrap();
    assert!(
        text.contains(&format!("  Resource id: {}\n", hostile_vault())),
        "{text}"
    );
    assert!(text.contains(
        "  Action: would remediate (not applied in this mode): PATCH enablePurgeProtection=true\n"
    ));
    assert_eq!(body["userEngagementTrackingDisabled"], true);
}

#[tokio::test]
async fn an_acs_rejection_does_not_show_the_token() {
    #[derive(Debug)]
    struct WrongToken;
    #[async_trait::async_trait]
    impl TokenCredential for WrongToken {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            Ok(AccessToken::new(
                "wrong-token-value",
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }
    fn echo_token(request: &Received) -> Option<Reply> {
        acs_checks(request).map(|reply| {
            reply.body(&format!(
                "token {} refused",
                request.headers["authorization"]
            ))
        })
    }
    let sink = start_sink(Vec::new(), Reply::status(202), Some(echo_token), None).await;
    let notifier = notifier(
        &[
            ("CMKGUARD_EMAIL_TO", "oncall@contoso.com".into()),
            ("CMKGUARD_EMAIL_FROM", "DoNotReply@contoso.com".into()),
            (
                "CMKGUARD_ACS_ENDPOINT",
                format!("http://127.0.0.1:{}", sink.port),
            ),
        ],
        &TransportSettings::default(),
        Some(Arc::new(WrongToken)),
    );

    let delivery = notifier
        .send(&Message::email(Alert::Changes(&[hostile_notification(
            Severity::High,
        )])))
        .await;

    let (reason, retryable) = failure(&delivery);
    assert!(!retryable && reason.starts_with("HTTP 401"), "{reason}");
    assert!(!reason.contains("wrong-token-value"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// SMTP with aiosmtpd

const SMTP_USER: &str = "alerts|app";
const SMTP_PASSWORD: &str = "pa:ss@w0rd-secret";

/// `.tools/venv/bin/python` from `scripts/test-tools` (or `$CMKGUARD_TOOLS`).
fn tools_python() -> PathBuf {
    let tools = std::env::var_os("CMKGUARD_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let python = tools.join("venv/bin/python");
    assert!(
        python.is_file(),
        "aiosmtpd is not installed ({} is missing): run scripts/test-tools",
        python.display()
    );
    python
}

/// aiosmtpd, killed on drop; then its maildir is removed (fields drop in order).
struct SmtpServer {
    _child: tokio::process::Child,
    port: u16,
    maildir: Scratch,
}

impl SmtpServer {
    /// Starts aiosmtpd; `tls` = STARTTLS required with AUTH, else a server offering neither.
    async fn start(tls: Option<&Pki>) -> Self {
        let python = tools_python();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let maildir = Scratch::new("notify-maildir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut command = tokio::process::Command::new(&python);
        command
            .arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--maildir")
            .arg(maildir.path());
        match tls {
            Some(pki) => {
                command
                    .arg("--cert")
                    .arg(&pki.cert_path)
                    .arg("--key")
                    .arg(&pki.key_path)
                    .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD]);
            }
            None => {
                command.arg("--no-tls");
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run scripts/test-tools",
                    python.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!("the SMTP server exited ({status}); run scripts/test-tools?\n{stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            _child: child,
            port,
            maildir,
        }
    }

    /// The decoded messages the server accepted, in order.
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.maildir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

fn smtp_url(user: &str, password: &str, host: &str, port: u16) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!("smtp://{}:{}@{host}:{port}", encode(user), encode(password))
}

fn smtp_notifier(url: String, transport: &TransportSettings) -> Notifier {
    notifier(
        &[
            (
                "CMKGUARD_EMAIL_TO",
                "oncall@contoso.com, Sec Team <sec@contoso.com>".into(),
            ),
            (
                "CMKGUARD_EMAIL_FROM",
                "cmk-guard <cmk-guard@contoso.com>".into(),
            ),
            ("CMKGUARD_SMTP_URL", url),
        ],
        transport,
        None,
    )
}

#[tokio::test]
async fn smtp_email_is_delivered_over_starttls_with_auth() {
    let pki = pki(&["smtp.contoso.com", "localhost"]);
    let server = SmtpServer::start(Some(&pki)).await;
    // The real host name stays on the certificate check; the connection goes to the server.
    let transport = TransportSettings {
        ca_bundle: Some(pki.ca_path.clone()),
        proxy: Default::default(),
        connect_to: ConnectTo::parse_list(&format!("smtp.contoso.com=127.0.0.1:{}", server.port))
            .unwrap(),
    };
    let notifier = smtp_notifier(
        smtp_url(SMTP_USER, SMTP_PASSWORD, "smtp.contoso.com", 587),
        &transport,
    );
    let notifications = vec![
        hostile_notification(Severity::Critical),
        Notification::from_finding(
            &finding(Severity::High, &workspace()),
            Change::Reminder,
            None,
        ),
    ];

    let delivery = notifier
        .send(&Message::email(Alert::Changes(&notifications)))
        .await;

    let detail = sent_detail(&delivery);
    assert_eq!(
        detail,
        "250 from smtp://smtp.contoso.com:587 for 2 recipient(s)"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["tls"], true);
    assert_eq!(message["authenticated"], true);
    assert_eq!(message["login"], SMTP_USER);
    assert_eq!(message["mail_from"], "cmk-guard@contoso.com");
    assert_eq!(
        message["rcpt_tos"],
        json!(["oncall@contoso.com", "sec@contoso.com"])
    );
    let headers = &message["headers"];
    assert_eq!(headers["from"], "cmk-guard <cmk-guard@contoso.com>");
    assert_eq!(
        headers["to"],
        "oncall@contoso.com, Sec Team <sec@contoso.com>"
    );
    assert_eq!(
        headers["subject"],
        "[cmk-guard] ws1: 2 CMK problems, worst Critical"
    );
    assert!(headers["date"].is_string() && headers["message-id"].is_string());
    assert_eq!(message["content_type"], "multipart/alternative");
    let parts = message["parts"].as_array().unwrap();
    let types: Vec<&str> = parts
        .iter()
        .map(|p| p["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    // SMTP carries CRLF line ends.
    let text = parts[0]["body"].as_str().unwrap().replace("\r\n", "\n");
    let html = parts[1]["body"].as_str().unwrap();
    assert!(
        text.contains(&format!("  Resource id: {}\n", hostile_vault())),
        "{text}"
    );
    assert!(
        text.contains("High · reminder: purge protection is off on the key vault (ws1)"),
        "{text}"
    );
    assert!(
        html.contains("kv&lt;script&gt;*_[x](http://evil)"),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("border-left:6px solid #b3261e"),
        "critical colour"
    );
    let raw = std::fs::read_to_string(server.maildir.join("0001.eml")).unwrap();
    assert!(!raw.contains(SMTP_PASSWORD));
    // One workspace's mails thread together.
    assert!(raw.contains("In-Reply-To: <"), "{raw}");
    assert!(raw.contains("@cmk-guard>"), "{raw}");
}

#[tokio::test]
async fn smtp_refuses_a_server_without_starttls() {
    let server = SmtpServer::start(None).await;
    let notifier = smtp_notifier(
        smtp_url(SMTP_USER, SMTP_PASSWORD, "localhost", server.port),
        &TransportSettings::default(),
    );

    let delivery = notifier
        .send(&Message::email(Alert::Changes(&[hostile_notification(
            Severity::High,
        )])))
        .await;

    let (reason, retryable) = failure(&delivery);
    assert!(!retryable, "{reason}");
    assert!(reason.contains("STARTTLS"), "{reason}");
    assert!(
        !reason.contains(SMTP_PASSWORD) && !reason.contains("w0rd"),
        "{reason}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn smtp_with_a_wrong_password_fails_without_showing_it() {
    let pki = pki(&["localhost"]);
    let server = SmtpServer::start(Some(&pki)).await;
    let transport = TransportSettings {
        ca_bundle: Some(pki.ca_path.clone()),
        proxy: Default::default(),
        connect_to: Vec::new(),
    };
    let notifier = smtp_notifier(
        smtp_url(SMTP_USER, "not-the-password", "localhost", server.port),
        &transport,
    );

    let delivery = notifier
        .send(&Message::email(Alert::Changes(&[hostile_notification(
            Severity::High,
        )])))
        .await;

    let (reason, retryable) = failure(&delivery);
    assert!(!retryable, "{reason}");
    assert!(reason.contains("535"), "{reason}");
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn smtp_refuses_a_certificate_it_does_not_trust() {
    let pki = pki(&["localhost"]);
    let server = SmtpServer::start(Some(&pki)).await;
    let notifier = smtp_notifier(
        smtp_url(SMTP_USER, SMTP_PASSWORD, "localhost", server.port),
        &TransportSettings::default(),
    );

    let delivery = notifier
        .send(&Message::email(Alert::Changes(&[hostile_notification(
            Severity::High,
        )])))
        .await;

    let (reason, retryable) = failure(&delivery);
    assert!(!retryable, "{reason}");
    assert!(
        reason.to_ascii_lowercase().contains("certificate"),
        "{reason}"
    );
    assert!(server.messages().is_empty());
}
