//! The Functions host contract: readiness, invocation replies, forwarded HTTP, startup errors,
//! concurrency and a graceful stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{Handler, envelope, fixtures_dir, read_json, timer_envelope};
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

fn key_expired() -> Value {
    read_json(&fixtures_dir().join("events/eventgrid-schema/Microsoft.KeyVault.KeyExpired.json"))
}

fn workspace_write(subscription: &str) -> Value {
    let ws = format!(
        "/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    json!({
        "id": "ws-write-1", "topic": format!("/subscriptions/{subscription}"), "subject": ws,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T09:00:00.1234567Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write", "resourceUri": ws,
                 "subscriptionId": subscription, "status": "Succeeded",
                 "claims": "{\"http://schemas.microsoft.com/identity/claims/objectidentifier\":\"u1\"}"},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

#[tokio::test]
async fn readiness_answers_json() {
    let handler = Handler::start(&[]).await;
    let reply = handler.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["status"], "ready");
}

#[tokio::test]
async fn a_workspace_write_resolves_to_the_workspace() {
    let handler = Handler::start(&[]).await;
    let replies = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write(SUB)])
        .await;
    let outcome = replies[0].outcome();
    assert_eq!(outcome["disposition"], "evaluated");
    assert_eq!(outcome["workspaces"][0], outcome["resource"]);
    assert_eq!(outcome["event"]["id"], "ws-write-1");
}

#[tokio::test]
async fn a_redelivered_event_is_a_duplicate() {
    let handler = Handler::start(&[]).await;
    let first = handler
        .deliver("OnKeyVaultEvent", "event", &[key_expired()])
        .await
        .remove(0);
    assert_eq!(first.outcome()["disposition"], "evaluated");
    let reads = handler.sim.counters().total;
    let again = handler
        .deliver("OnKeyVaultEvent", "event", &[key_expired()])
        .await
        .remove(0);
    assert_eq!(again.status, 200);
    assert_eq!(again.outcome()["disposition"], "duplicate");
    assert_eq!(
        handler.sim.counters().total,
        reads,
        "a duplicate costs no Azure read"
    );
}

#[tokio::test]
async fn events_outside_the_subscription_allowlist_are_rejected() {
    let handler = Handler::start(&[(
        "CMKGUARD_SUBSCRIPTIONS",
        "00000000-0000-0000-0000-000000000001",
    )])
    .await;
    let replies = handler
        .deliver(
            "OnSubscriptionEvent",
            "event",
            &[workspace_write(SUB), key_expired()],
        )
        .await;
    for reply in replies {
        assert_eq!(reply.status, 200, "poison messages are acknowledged");
        assert_eq!(reply.outcome()["disposition"], "rejected");
        assert!(
            reply.outcome()["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("not in CMKGUARD_SUBSCRIPTIONS")
        );
    }
}

#[tokio::test]
async fn a_batch_is_handled_as_concurrent_invocations() {
    let handler = Handler::start(&[]).await;
    let events: Vec<Value> = (0..64)
        .map(|i| {
            let mut event = if i % 2 == 0 {
                key_expired()
            } else {
                workspace_write(SUB)
            };
            event["id"] = json!(format!("batch-{i}"));
            event
        })
        .collect();
    let replies = handler.deliver("OnKeyVaultEvent", "event", &events).await;
    assert_eq!(replies.len(), 64);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.outcome()["event"]["id"], format!("batch-{i}"));
        assert_eq!(reply.outcome()["disposition"], "evaluated");
    }
}

#[tokio::test]
async fn the_sweep_checks_the_tenant() {
    let handler = Handler::start(&[]).await;
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.outcome()["disposition"], "evaluated");
    assert_eq!(reply.outcome()["event"]["subject"], "Sweep");
    assert_eq!(
        reply.outcome()["workspaces"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(reply.outcome()["findings"], json!([]));
}

#[tokio::test]
async fn forwarded_evaluate_answers_the_outcome_or_400() {
    let handler = Handler::start(&[]).await;
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    let ok = handler
        .post_chunked(
            "/api/evaluate",
            json!({"resource": ws}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["disposition"], "evaluated");
    assert_eq!(ok.body["workspaces"][0], ws.as_str());

    for body in ["{\"resource\":\"not-an-id\"}", "{}", "nope"] {
        let bad = handler
            .post_chunked("/api/evaluate", body.as_bytes().to_vec())
            .await;
        assert_eq!(bad.status, 400, "{body}");
        assert!(
            bad.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn evaluate_without_forwarding_uses_the_http_output_binding() {
    let handler = Handler::start(&[]).await;
    let ws = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
    );
    let request = json!({"Url": "https://app/api/evaluate", "Method": "POST", "Query": {}, "Headers": {}, "Params": {},
                         "Identities": [], "Body": json!({"resource": ws}).to_string()});
    let body = json!({"Data": {"req": request}, "Metadata": {}})
        .to_string()
        .into_bytes();
    let reply = handler.invoke("Evaluate", body).await;
    assert_eq!(reply.status, 200);
    let res = &reply.body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200);
    let outcome: Value =
        serde_json::from_str(res["body"].as_str().unwrap_or_default()).expect("body is JSON text");
    assert_eq!(outcome["disposition"], "evaluated");
}

#[tokio::test]
async fn unknown_paths_get_404_with_a_json_reason() {
    let handler = Handler::start(&[]).await;
    let reply = handler.invoke("NoSuchFunction", b"{}".to_vec()).await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("NoSuchFunction")
    );
    let functions: Vec<&str> = reply.body["functions"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        functions,
        [
            "OnSubscriptionEvent",
            "OnKeyVaultEvent",
            "OnKeyVaultAudit",
            "Sweep",
            "SweepSubscription",
            "Evaluate",
            "WhoUses"
        ],
        "{:?}",
        reply.body
    );
}

#[test]
fn startup_fails_clearly_without_a_valid_port_or_configuration() {
    // A policy file with a string where a number belongs, on line 3.
    let scratch = Scratch::new("bad-policy");
    let bad_policy = scratch
        .write(
            "policy.toml",
            "[rules.\"key.expiry\"]\ncritical_days = 7\nwarn_days = \"thirty\"\n",
        )
        .display()
        .to_string();
    for (port, extra, expected) in [
        (None, vec![], "FUNCTIONS_CUSTOMHANDLER_PORT"),
        (
            Some("seventy"),
            vec![],
            "FUNCTIONS_CUSTOMHANDLER_PORT: `seventy` is not a TCP port",
        ),
        (Some("0"), vec![], "is not a TCP port"),
        (
            Some("7071"),
            vec![("CMKGUARD_MODE", "yolo")],
            "CMKGUARD_MODE",
        ),
        (
            Some("7071"),
            vec![("CMKGUARD_SUBSCRIPTIONS", "abc")],
            "CMKGUARD_SUBSCRIPTIONS",
        ),
        (
            Some("7071"),
            vec![("CMKGUARD_POLICY_FILE", bad_policy.as_str())],
            "line 3, key `rules.\"key.expiry\".warn_days`",
        ),
    ] {
        let mut env = extra.clone();
        let mut command = std::process::Command::new(cmk_guard_blackbox::binary());
        command.arg("serve").env_clear();
        if let Some(port) = port {
            env.push(("FUNCTIONS_CUSTOMHANDLER_PORT", port));
        }
        for (k, v) in &env {
            command.env(k, v);
        }
        let output = command.output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{expected}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test]
async fn sigterm_drains_the_invocation_in_flight_then_exits() {
    let mut handler = Handler::start(&[]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", handler.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // A first request on the connection proves a worker is serving it.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let head = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Start an invocation, send half of its chunked body, stop the process, send the rest.
    let body = envelope("event", &key_expired(), "OnKeyVaultEvent");
    let (first, second) = body.split_at(body.len() / 2);
    // `Expect: 100-continue` makes the server say when it has taken the request on: the stop
    // signal must not come before that, or the connection is merely idle and is closed.
    let headers = "POST /OnKeyVaultEvent HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json; charset=utf-8\r\nExpect: 100-continue\r\nX-Azure-Functions-InvocationId: 2b6d3e4f-0000-4000-8000-000000000001\r\n\r\n";
    stream.write_all(headers.as_bytes()).expect("write");
    let interim = read_response(&mut reader);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(&chunk(first)).expect("write");
    stream.flush().expect("flush");
    handler.terminate();
    // New connections are refused once the listener is closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", handler.port())).is_ok()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        TcpStream::connect(("127.0.0.1", handler.port())).is_err(),
        "listener still open after SIGTERM"
    );
    // The invocation is still being received well after the stop signal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(&chunk(second)).expect("write");
    stream.write_all(b"0\r\n\r\n").expect("write");
    let response = read_response(&mut reader);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"disposition\":\"evaluated\""),
        "{response}"
    );
    let status = handler
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after draining");
    assert!(status.success(), "{status}");
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads one HTTP/1.1 response (status line, headers and a Content-Length body) as text.
fn read_response(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    head + &String::from_utf8_lossy(&body)
}

#[tokio::test]
async fn a_function_is_found_by_its_name_in_any_case() {
    let handler = Handler::start(&[]).await;
    for name in [
        "OnSubscriptionEvent",
        "onsubscriptionevent",
        "ONSUBSCRIPTIONEVENT",
    ] {
        let body = envelope("event", &workspace_write(SUB), "OnSubscriptionEvent");
        let reply = handler.invoke(name, body).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.outcome()["event"]["id"], "ws-write-1", "{name}");
    }
    let not_a_post = handler.get("/OnSubscriptionEvent").await;
    assert!(not_a_post.status >= 400, "{}", not_a_post.status);
}
