//! Malformed, oversized, truncated and hostile input gets a clear reason and never a panic;
//! the process keeps serving afterwards.

use cmk_guard_blackbox::{Handler, Reply, envelope, fixtures_dir, read_json};
use serde_json::{Value, json};

/// The KeyExpired fixture with a fresh event id, so repeated deliveries are not duplicates.
fn key_expired() -> Value {
    let mut event = read_json(
        &fixtures_dir().join("events/eventgrid-schema/Microsoft.KeyVault.KeyExpired.json"),
    );
    event["id"] = json!(uuid::Uuid::new_v4().to_string());
    event
}

fn rejected(reply: &Reply, expected: &str) {
    assert_eq!(
        reply.status, 200,
        "rejections are acknowledged: {:?}",
        reply.body
    );
    assert_eq!(
        reply.outcome()["disposition"],
        "rejected",
        "{:?}",
        reply.body
    );
    let reason = reply.outcome()["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(expected),
        "expected {expected:?} in {reason:?}"
    );
}

async fn still_serving(handler: &Handler) {
    assert_eq!(handler.get("/").await.status, 200);
    let replies = handler
        .deliver("OnKeyVaultEvent", "event", &[key_expired()])
        .await;
    assert_eq!(replies[0].outcome()["disposition"], "evaluated");
}

#[tokio::test]
async fn malformed_bodies_are_rejected_with_the_reason() {
    let handler = Handler::start(&[]).await;
    let valid = envelope("event", &key_expired(), "OnKeyVaultEvent");
    let mut wrong_type = key_expired();
    wrong_type["eventType"] = json!(42);
    let mut wrong_data = key_expired();
    wrong_data["data"]["EXP"] = json!({"when": "later"});
    let deep = format!(
        "{{\"Data\":{{\"event\":{}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let mut invalid_utf8 = b"{\"Data\":{\"event\":{\"id\":\"".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    invalid_utf8.extend_from_slice(b"\"}}}");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (valid[..valid.len() / 2].to_vec(), "body: not valid JSON"),
        (Vec::new(), "body: not valid JSON"),
        (b"[]".to_vec(), "expected the host envelope object"),
        (
            b"{\"Data\":{\"event\":7}}".to_vec(),
            "event: expected an Event Grid or CloudEvents event object, got a number",
        ),
        (
            envelope("event", &wrong_type, "OnKeyVaultEvent"),
            "event.eventType: invalid type: integer `42`, expected a string",
        ),
        (
            envelope("event", &wrong_data, "OnKeyVaultEvent"),
            "data.EXP: expected seconds since 1970",
        ),
        (deep.into_bytes(), "recursion limit exceeded"),
        (invalid_utf8, "not valid JSON"),
        (
            envelope("event", &json!("{\"id\": truncated"), "OnKeyVaultEvent"),
            "not JSON text holding an event",
        ),
        (
            b"{\"Data\":{\"a\":1,\"b\":2}}".to_vec(),
            "no binding named `event`",
        ),
    ];
    for (body, expected) in cases {
        let reply = handler.invoke("OnKeyVaultEvent", body).await;
        rejected(&reply, expected);
    }
    still_serving(&handler).await;
}

#[tokio::test]
async fn an_event_as_json_text_even_double_encoded_is_accepted() {
    let handler = Handler::start(&[]).await;
    let object = handler
        .deliver("OnKeyVaultEvent", "event", &[key_expired()])
        .await
        .remove(0);
    let once = Value::String(key_expired().to_string());
    let twice = Value::String(Value::String(key_expired().to_string()).to_string());
    for form in [once, twice] {
        let reply = handler
            .deliver("OnKeyVaultEvent", "event", &[form])
            .await
            .remove(0);
        for field in ["disposition", "resource", "workspaces", "findings"] {
            assert_eq!(reply.outcome()[field], object.outcome()[field], "{field}");
        }
    }
}

#[tokio::test]
async fn a_2_mib_body_gets_413_with_a_reason() {
    let handler = Handler::start(&[]).await;
    let mut event = key_expired();
    event["data"]["padding"] = json!("x".repeat(2 * 1024 * 1024));
    let reply = handler
        .invoke(
            "OnKeyVaultEvent",
            envelope("event", &event, "OnKeyVaultEvent"),
        )
        .await;
    assert_eq!(reply.status, 413);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exceeds the limit"),
        "{:?}",
        reply.body
    );
    still_serving(&handler).await;
}

#[tokio::test]
async fn a_large_event_within_the_limit_is_processed() {
    let handler = Handler::start(&[]).await;
    let mut event = key_expired();
    event["data"]["padding"] = json!("x".repeat(400 * 1024));
    let reply = handler
        .invoke(
            "OnKeyVaultEvent",
            envelope("event", &event, "OnKeyVaultEvent"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.outcome()["disposition"], "evaluated");
}
