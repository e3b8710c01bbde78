//! Hostile input through every entry point (issue 13, parts 6 and 7): control characters,
//! terminal escapes, line separators and 500 KB strings in event fields, in binding names and in
//! values a deserializer would quote; stalled, trickling and oversized bodies. Every host `Logs`
//! line and every string of a reply is one clean line of at most 4 KiB, no reply grows with the
//! input, the process's own log gets no forged line, and a stalled body gets 408.

use std::time::Duration;

use cmk_guard_blackbox::{Handler, Reply, envelope, fixtures_dir, read_json, timer_envelope};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
/// No `Logs` line, reason or other string of a reply may be longer.
const MAX_LINE_BYTES: usize = 4096;
/// Replies to the hostile inputs here (up to half a megabyte each) stay under this.
const MAX_REPLY_BYTES: usize = 16 * 1024;
/// The text that follows a line break in the hostile strings: no log line may start with it.
const MARKER: &str = "INJECTED";
/// Only a guard against a hung test, never a measure of speed.
const GUARD: Duration = Duration::from_secs(120);

/// Characters no log line or reason may hold: C0 controls, DEL, C1 controls, the Unicode line
/// and paragraph separators and the bidirectional overrides and isolates.
fn forbidden(c: char) -> bool {
    let code = u32::from(c);
    code < 0x20
        || (0x7f..=0x9f).contains(&code)
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The hostile strings, each placed wherever a case puts outside text.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("newline", format!("e1\n{MARKER} level=ERROR forged line")),
        ("CR LF", format!("e1\r\n{MARKER}: forged\r\n")),
        (
            "ANSI escapes",
            format!("\u{1b}[2J\u{1b}[31m{MARKER}\u{1b}[0m\u{1b}]0;title\u{7}"),
        ),
        ("NUL", format!("e1\0{MARKER}")),
        ("line separators", format!("e1\u{2028}{MARKER}\u{2029}")),
        ("C1 and DEL", format!("e1\u{85}{MARKER}\u{9b}31m\u{7f}")),
        ("bidi override", "e1\u{202e}DETCEJNI\u{2066}".to_owned()),
        ("500 KB", "x".repeat(500 * 1024)),
        ("500 KB of line breaks", "\n\r".repeat(250 * 1024)),
    ]
}

fn key_expired(schema: &str) -> Value {
    read_json(&fixtures_dir().join(format!(
        "events/{schema}/Microsoft.KeyVault.KeyExpired.json"
    )))
}

fn workspace_write() -> Value {
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    json!({
        "id": "ws-write-1", "topic": format!("/subscriptions/{SUB}"), "subject": ws,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T09:00:00.1234567Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write", "resourceUri": ws,
                 "subscriptionId": SUB, "status": "Succeeded"},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

/// `event` with `pointer` (a JSON pointer) set to `value`.
fn with(mut event: Value, pointer: &str, value: Value) -> Value {
    match event.pointer_mut(pointer) {
        Some(slot) => *slot = value,
        None => panic!("{pointer} is not in the event"),
    }
    event
}

/// Every string in `value`, with its path; JSON text inside a string (the `Outputs.res.body`
/// of `Evaluate`) is walked too.
fn strings(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(text) => {
            if let Ok(inner @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
                strings(&inner, format!("{path}(JSON)"), out);
            }
            out.push((path, text.clone()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                out.push((format!("{path}.{key} (key)"), key.clone()));
                strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// The reply is small and every string in it — `Logs` lines, `reason`, the event fields,
/// `error` — is one clean line of at most 4 KiB.
fn assert_contained(case: &str, reply: &Reply) {
    assert!(
        reply.status < 500,
        "{case}: status {}: {}",
        reply.status,
        reply.body
    );
    let size = reply.body.to_string().len();
    assert!(
        size <= MAX_REPLY_BYTES,
        "{case}: a reply of {size} bytes echoes the input"
    );
    let mut all = Vec::new();
    strings(&reply.body, String::new(), &mut all);
    for (path, text) in all {
        assert!(
            text.len() <= MAX_LINE_BYTES,
            "{case}: {path} is {} bytes",
            text.len()
        );
        assert!(
            !text.chars().any(forbidden),
            "{case}: {path} holds a control character: {text:?}"
        );
    }
}

/// The handler's own log (stderr, and stdout for JSON logs) has no forged line, no control
/// character and no line longer than 4 KiB.
fn assert_process_log_clean(handler: &Handler) {
    let lines = handler
        .stderr
        .snapshot()
        .into_iter()
        .chain(handler.stdout.snapshot());
    for line in lines {
        assert!(
            !line.chars().any(forbidden),
            "log line with a control character: {line:?}"
        );
        assert!(
            line.len() <= MAX_LINE_BYTES,
            "log line of {} bytes",
            line.len()
        );
        let start = line.trim_start();
        assert!(
            !start.starts_with(MARKER) && !start.starts_with(": forged"),
            "forged log line: {line:?}"
        );
    }
}

/// Sends each body to `function` and checks each reply.
async fn send_all(handler: &Handler, cases: Vec<(String, &str, Vec<u8>)>) {
    for (case, function, body) in cases {
        let reply = handler.invoke(function, body).await;
        assert_contained(&case, &reply);
    }
}

#[tokio::test]
async fn event_fields_with_controls_or_500_kb_stay_bounded_and_clean() {
    let mut cases = Vec::new();
    for (name, h) in hostile() {
        let h = json!(h);
        let events = [
            (
                "event id",
                with(key_expired("eventgrid-schema"), "/id", h.clone()),
            ),
            (
                "event type",
                with(key_expired("eventgrid-schema"), "/eventType", h.clone()),
            ),
            (
                "Key Vault event type",
                with(
                    key_expired("eventgrid-schema"),
                    "/eventType",
                    json!(format!(
                        "Microsoft.KeyVault.{}",
                        h.as_str().unwrap_or_default()
                    )),
                ),
            ),
            (
                "ML event type",
                with(
                    key_expired("eventgrid-schema"),
                    "/eventType",
                    json!(format!(
                        "Microsoft.MachineLearningServices.{}",
                        h.as_str().unwrap_or_default()
                    )),
                ),
            ),
            (
                "subject",
                with(key_expired("eventgrid-schema"), "/subject", h.clone()),
            ),
            (
                "topic",
                with(key_expired("eventgrid-schema"), "/topic", h.clone()),
            ),
            (
                "data.Id",
                with(key_expired("eventgrid-schema"), "/data/Id", h.clone()),
            ),
            (
                "eventTime",
                with(key_expired("eventgrid-schema"), "/eventTime", h.clone()),
            ),
            (
                "CloudEvents id",
                with(key_expired("cloudevents"), "/id", h.clone()),
            ),
            (
                "CloudEvents type",
                with(key_expired("cloudevents"), "/type", h.clone()),
            ),
            (
                "CloudEvents source",
                with(key_expired("cloudevents"), "/source", h.clone()),
            ),
            (
                "CloudEvents subject",
                with(key_expired("cloudevents"), "/subject", h.clone()),
            ),
            ("ARM event id", with(workspace_write(), "/id", h.clone())),
            (
                "ARM event type",
                with(
                    workspace_write(),
                    "/eventType",
                    json!(format!(
                        "Microsoft.Resources.Resource{}",
                        h.as_str().unwrap_or_default()
                    )),
                ),
            ),
            (
                "ARM operationName",
                with(workspace_write(), "/data/operationName", h.clone()),
            ),
            (
                "ARM resourceUri",
                with(workspace_write(), "/data/resourceUri", h.clone()),
            ),
            (
                "ARM workspace name",
                with(
                    workspace_write(),
                    "/data/resourceUri",
                    json!(format!(
                        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{}",
                        h.as_str().unwrap_or_default()
                    )),
                ),
            ),
            (
                "vault resource group in the topic",
                with(
                    key_expired("eventgrid-schema"),
                    "/topic",
                    json!(format!(
                        "/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/kv-mlw-cmk-prod",
                        h.as_str().unwrap_or_default()
                    )),
                ),
            ),
            (
                "ARM subject without resourceUri",
                with(
                    with(workspace_write(), "/data/resourceUri", Value::Null),
                    "/subject",
                    h.clone(),
                ),
            ),
        ];
        for (field, event) in events {
            for function in ["OnKeyVaultEvent", "OnSubscriptionEvent"] {
                cases.push((
                    format!("{function}: {field} ({name})"),
                    function,
                    envelope("event", &event, function),
                ));
            }
        }
    }
    // Built first: the harness's pooled connection must not sit idle while they are made.
    let handler = Handler::start(&[("CMKGUARD_LOG", "debug")]).await;
    send_all(&handler, cases).await;
    assert_process_log_clean(&handler);
}

#[tokio::test]
async fn deserializer_messages_and_binding_names_do_not_echo_input() {
    let mut cases = Vec::new();
    // `data` as a 450 KB string: the deserializer's message would quote all of it.
    let big = "y".repeat(450 * 1024);
    for hostile_value in hostile().into_iter().chain([("450 KB data", big)]) {
        let (name, h) = hostile_value;
        let value = json!(h);
        let bodies = [
            (
                "data as a string",
                envelope(
                    "event",
                    &with(workspace_write(), "/data", value.clone()),
                    "OnSubscriptionEvent",
                ),
            ),
            (
                "Key Vault data as a string",
                envelope(
                    "event",
                    &with(key_expired("eventgrid-schema"), "/data", value.clone()),
                    "OnKeyVaultEvent",
                ),
            ),
            (
                "EXP",
                envelope(
                    "event",
                    &with(key_expired("eventgrid-schema"), "/data/EXP", value.clone()),
                    "OnKeyVaultEvent",
                ),
            ),
            ("claims", {
                let mut event = workspace_write();
                event["data"]["claims"] = value.clone();
                envelope("event", &event, "OnSubscriptionEvent")
            }),
            (
                "specversion",
                envelope(
                    "event",
                    &with(key_expired("cloudevents"), "/specversion", value.clone()),
                    "OnKeyVaultEvent",
                ),
            ),
            (
                "event id of the wrong type",
                envelope(
                    "event",
                    &with(key_expired("eventgrid-schema"), "/id", json!([h.clone()])),
                    "OnKeyVaultEvent",
                ),
            ),
            (
                "binding value as text",
                envelope("event", &value, "OnKeyVaultEvent"),
            ),
            (
                "the only binding, misnamed",
                json!({"Data": {h.clone(): key_expired("eventgrid-schema")}, "Metadata": {}})
                    .to_string()
                    .into_bytes(),
            ),
            (
                "several bindings, none named",
                json!({"Data": {h.clone(): 1, format!("{h}2"): 2, "a": 3, "b": 4, "c": 5, "d": 6, "e": 7}, "Metadata": {}})
                    .to_string()
                    .into_bytes(),
            ),
            (
                "RetryCount",
                json!({"Data": {"event": key_expired("eventgrid-schema")},
                       "Metadata": {"RetryContext": {"RetryCount": h.clone()}}})
                .to_string()
                .into_bytes(),
            ),
            (
                "sys",
                json!({"Data": {"event": key_expired("eventgrid-schema")},
                       "Metadata": {"sys": {"MethodName": [h.clone()], "RandGuid": h.clone()}}})
                .to_string()
                .into_bytes(),
            ),
        ];
        for (field, body) in bodies {
            for function in ["OnKeyVaultEvent", "OnSubscriptionEvent"] {
                cases.push((
                    format!("{function}: {field} ({name})"),
                    function,
                    body.clone(),
                ));
            }
        }
    }
    // Built first: the harness's pooled connection must not sit idle while they are made.
    let handler = Handler::start(&[("CMKGUARD_LOG", "debug")]).await;
    send_all(&handler, cases).await;
    assert_process_log_clean(&handler);
}

#[tokio::test]
async fn the_sweep_timer_envelope_is_contained() {
    let handler = Handler::start(&[("CMKGUARD_LOG", "debug")]).await;
    let mut cases = Vec::new();
    for (name, h) in hostile() {
        let mut rand_guid: Value =
            serde_json::from_slice(&timer_envelope("timer")).unwrap_or_default();
        rand_guid["Metadata"]["sys"]["RandGuid"] = json!(h);
        let mut past_due = rand_guid.clone();
        past_due["Data"]["timer"]["IsPastDue"] = json!(h);
        let misnamed =
            json!({"Data": {h.clone(): rand_guid["Data"]["timer"].clone()}, "Metadata": {}});
        for (field, body) in [
            ("RandGuid", rand_guid),
            ("IsPastDue", past_due),
            ("binding name", misnamed),
        ] {
            cases.push((
                format!("Sweep: {field} ({name})"),
                "Sweep",
                body.to_string().into_bytes(),
            ));
        }
    }
    send_all(&handler, cases).await;
    assert_process_log_clean(&handler);
}

#[tokio::test]
async fn evaluate_requests_forwarded_or_enveloped_are_contained() {
    let handler = Handler::start(&[("CMKGUARD_LOG", "debug")]).await;
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    for (name, h) in hostile() {
        let requests = [
            ("resource", json!({"resource": h}).to_string()),
            ("unknown field", json!({h.clone(): 1}).to_string()),
            (
                "resource group",
                json!({"resource": format!("/subscriptions/{SUB}/resourceGroups/{h}")}).to_string(),
            ),
            (
                "workspace name",
                json!({"resource": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{h}")}).to_string(),
            ),
            (
                "key name",
                json!({"resource": format!("https://kv1.vault.azure.net/keys/{h}")}).to_string(),
            ),
            (
                "key host",
                json!({"resource": format!("https://{h}.vault.azure.net/keys/k")}).to_string(),
            ),
            ("apply", json!({"resource": ws, "apply": h}).to_string()),
            ("body", h.clone()),
        ];
        for (field, body) in requests {
            let forwarded = handler
                .post_chunked("/api/evaluate", body.clone().into_bytes())
                .await;
            assert_contained(&format!("/api/evaluate: {field} ({name})"), &forwarded);
            let request = json!({"Url": "https://app/api/evaluate", "Method": "POST", "Query": {},
                                 "Headers": {}, "Params": {}, "Identities": [], "Body": body});
            let enveloped = handler
                .invoke(
                    "Evaluate",
                    json!({"Data": {"req": request}, "Metadata": {}})
                        .to_string()
                        .into_bytes(),
                )
                .await;
            assert_contained(&format!("Evaluate: {field} ({name})"), &enveloped);
        }
    }
    assert_process_log_clean(&handler);
}

#[tokio::test]
async fn unknown_function_names_and_invocation_ids_are_contained() {
    let handler = Handler::start(&[("CMKGUARD_LOG", "debug")]).await;
    for (name, h) in hostile()
        .into_iter()
        .filter(|(_, h)| h.len() < 1024)
        .chain([("8 KB", "x".repeat(8 * 1024))])
    {
        let path: String = url::form_urlencoded::byte_serialize(h.as_bytes()).collect();
        let reply = handler.invoke(&path, b"{}".to_vec()).await;
        assert_eq!(reply.status, 404, "{name}");
        assert_contained(&format!("function name ({name})"), &reply);
    }
    // A tab is the one control character a header value may hold.
    let mut stream = connect(&handler).await;
    let body = envelope("event", &json!("not an event"), "OnKeyVaultEvent");
    let head = format!(
        "POST /OnKeyVaultEvent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Azure-Functions-InvocationId: id\t{MARKER}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&body).await.expect("write");
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    // The rejection is logged (JSON lines on stdout); its line is the signal that the log has it.
    let logged = tokio::time::timeout(GUARD, async {
        loop {
            let lines = handler.stdout.snapshot();
            if lines.iter().any(|l| l.contains("Invocation handled")) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the invocation is logged");
    assert!(!logged.iter().any(|l| l.contains(MARKER)), "{logged:?}");
    assert_process_log_clean(&handler);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_before_the_body_is_sent() {
    let handler = Handler::start(&[]).await;
    let mut stream = connect(&handler).await;
    // No body follows: had the server waited for it, the answer would be a 408.
    stream
        .write_all(b"POST /OnKeyVaultEvent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n")
        .await
        .expect("write");
    let (status, body) = tokio::time::timeout(GUARD, read_response(&mut stream))
        .await
        .expect("an answer");
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeds the limit")),
        "{body}"
    );
    still_serving(&handler).await;
}

/// How a stalling client frames its body.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// `Content-Length` of the whole body, then only this many bytes of it.
    Length(usize),
    /// Chunked, then only this many bytes in one chunk and no end.
    Chunked(usize),
}

#[tokio::test]
async fn stalled_and_trickling_bodies_get_408_and_slow_steady_ones_are_served() {
    let handler = Handler::start(&[]).await;
    let body = envelope("event", &key_expired("eventgrid-schema"), "OnKeyVaultEvent");
    let stalls = [
        Stall::Length(body.len() / 2),
        Stall::Length(0),
        Stall::Chunked(100),
        Stall::Chunked(0),
    ];
    let stalled =
        futures_util::future::join_all(stalls.map(|stall| stalled_request(&handler, &body, stall)));
    let (stalled, trickled, steady) = tokio::join!(
        stalled,
        trickling_request(&handler, &body, None),
        // A chunk a second for longer than the idle timeout (12 sleeps of 1 s make at least
        // 12 s), and complete before the 30 s deadline with as much room as that leaves.
        trickling_request(&handler, &body, Some(12)),
    );
    for ((status, reply), stall) in stalled.into_iter().zip(stalls) {
        assert_eq!(status, 408, "{stall:?}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .is_some_and(|e| e.contains("nothing received for 10 s")),
            "{stall:?}: {reply}"
        );
    }
    let (status, reply) = trickled;
    assert_eq!(status, 408, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("not complete after 30 s")),
        "{reply}"
    );
    let (status, reply) = steady;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ReturnValue"]["disposition"], "evaluated", "{reply}");
    still_serving(&handler).await;
}

/// Sends the head and part of the body, then nothing; returns the answer.
async fn stalled_request(handler: &Handler, body: &[u8], stall: Stall) -> (u16, Value) {
    let mut stream = connect(handler).await;
    let (framing, sent) = match stall {
        Stall::Length(sent) => (
            format!("Content-Length: {}", body.len()),
            body[..sent].to_vec(),
        ),
        Stall::Chunked(0) => ("Transfer-Encoding: chunked".to_owned(), Vec::new()),
        Stall::Chunked(sent) => (
            "Transfer-Encoding: chunked".to_owned(),
            chunk(&body[..sent]),
        ),
    };
    let head = format!(
        "POST /OnKeyVaultEvent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&sent).await.expect("write");
    let answer = tokio::time::timeout(GUARD, read_response(&mut stream))
        .await
        .expect("an answer");
    // The server is done with the connection: it closes it rather than wait for the rest.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(GUARD, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "{stall:?}: the connection stays open after the 408"
    );
    answer
}

/// Sends the body one small chunk a second: `Some(n)` spreads it over `n` chunks and ends it,
/// `None` never ends. Returns the answer, which may come while chunks are still being sent.
async fn trickling_request(handler: &Handler, body: &[u8], chunks: Option<usize>) -> (u16, Value) {
    let stream = connect(handler).await;
    let (mut reader, mut writer) = stream.into_split();
    let head = "POST /OnKeyVaultEvent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    writer.write_all(head.as_bytes()).await.expect("write");
    let pieces: Vec<Vec<u8>> = match chunks {
        Some(n) => body
            .chunks(body.len().div_ceil(n))
            .map(<[u8]>::to_vec)
            .collect(),
        None => Vec::new(),
    };
    let send = async move {
        let mut pieces = pieces.into_iter();
        loop {
            let piece = match (chunks, pieces.next()) {
                (Some(_), Some(piece)) => piece,
                (Some(_), None) => {
                    let _ = writer.write_all(b"0\r\n\r\n").await;
                    break;
                }
                (None, _) => b" ".to_vec(),
            };
            if writer.write_all(&chunk(&piece)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Keep the write half open until the answer is read.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        answer = tokio::time::timeout(GUARD, read_response(&mut reader)) => answer.expect("an answer"),
        () = send => unreachable!("the sender never finishes"),
    }
}

async fn connect(handler: &Handler) -> TcpStream {
    TcpStream::connect(("127.0.0.1", handler.port()))
        .await
        .expect("connect")
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: the status and the JSON body.
async fn read_response(reader: &mut (impl AsyncReadExt + Unpin)) -> (u16, Value) {
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut buffer = [0u8; 4096];
        let read = reader.read(&mut buffer).await.expect("read");
        assert!(
            read > 0,
            "connection closed before an answer: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let mut buffer = [0u8; 4096];
        let read = reader.read(&mut buffer).await.expect("read");
        assert!(read > 0, "connection closed inside the body");
        body.extend_from_slice(&buffer[..read]);
    }
    let value = serde_json::from_slice(&body[..length])
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

async fn still_serving(handler: &Handler) {
    assert_eq!(handler.get("/").await.status, 200);
    let mut event = key_expired("eventgrid-schema");
    event["id"] = json!(uuid::Uuid::new_v4().to_string());
    let replies = handler.deliver("OnKeyVaultEvent", "event", &[event]).await;
    assert_eq!(replies[0].outcome()["disposition"], "evaluated");
}
