//! The generic webhook, through the real binary: a finding change reaches the receiver as a
//! CloudEvents 1.0 structured event, signed per Standard Webhooks with `CMKGUARD_WEBHOOK_SECRET`;
//! the signature verifies with that secret (computed here with the `hmac` crate, as a receiver
//! would) and not with another, and the secret shows nowhere. A malformed secret stops `serve`.
//!
//! The story's tenant (`cmk_guard_blackbox::story`: one CMK workspace whose vault lacks purge
//! protection) in `alert` mode, every severity routed to the webhook, a local sink as receiver.

use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::{Received, Sink};
use cmk_guard_blackbox::story::{FINDING, tenant, workspace_id, workspace_write};
use cmk_guard_blackbox::{Handler, free_port, spawn};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// 32 random bytes, `whsec_`-prefixed as the spec gives them out.
const SECRET: &str = "whsec_q1Xc3mVnZ8bGf0R2tY6uWp4sLkJhDa9eCo7iNvMxQzE=";
/// Another well-formed secret: a signature made with it must not match.
const OTHER_SECRET: &str = "whsec_dGhpcyBpcyBhbm90aGVyIGtleSBvZiAzMiBieXRlcyE=";

const POLICY: &str = r#"
[notify]
teams = []
email = []
webhook = ["critical", "high", "medium", "low"]
"#;

/// `v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the
/// secret's bytes: the Standard Webhooks signature, as a receiver computes it.
fn signature(secret: &str, request: &Received) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request.header("webhook-timestamp").expect("timestamp");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.raw);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_finding_reaches_the_webhook_as_a_signed_cloudevent() {
    let scratch = Scratch::new("webhook");
    let policy = scratch.write("policy.toml", POLICY).display().to_string();
    let sink = Sink::start().await;
    let url = sink.url("hook");
    let sim = azure_sim::Sim::start(tenant(), azure_sim::SimOptions::default())
        .await
        .expect("sim");
    let handler = Handler::launch(
        sim,
        &[
            ("CMKGUARD_MODE", "alert"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_WEBHOOK_URL", &url),
            ("CMKGUARD_WEBHOOK_SECRET", SECRET),
            ("WEBSITE_SITE_NAME", "func-cmk-guard-test"),
        ],
    )
    .await;

    let reply = handler
        .deliver("OnSubscriptionEvent", "event", &[workspace_write()])
        .await
        .remove(0);

    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let received = sink.received("hook");
    let request = received
        .iter()
        .find(|r| r.body["data"]["finding"]["rule"] == FINDING)
        .unwrap_or_else(|| panic!("no event for {FINDING}: {received:?}"));
    assert_eq!(
        request.header("content-type"),
        Some("application/cloudevents+json")
    );
    let event = &request.body;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "com.cmk-guard.finding.opened");
    assert_eq!(event["source"], "/cmk-guard/func-cmk-guard-test");
    assert_eq!(event["subject"], workspace_id());
    assert_eq!(event["datacontenttype"], "application/json");
    assert!(
        time::OffsetDateTime::parse(
            event["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{event}"
    );
    assert_eq!(event["data"]["change"]["kind"], "new");
    let finding = &event["data"]["finding"];
    assert_eq!(finding["workspace"], workspace_id());
    assert_eq!(finding["state"], "open");
    assert!(
        ["critical", "high", "medium", "low"].contains(&finding["severity"].as_str().unwrap()),
        "{finding}"
    );
    assert!(finding["resource"].as_str().unwrap().contains("/vaults/"));
    assert!(finding["observed"].is_string() && finding["expected"].is_string());
    assert_eq!(request.header("webhook-id"), event["id"].as_str());
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - timestamp;
    assert!((0..300).contains(&age), "webhook-timestamp {timestamp}");

    let signed = request.header("webhook-signature").expect("signed");
    assert_eq!(
        signed,
        signature(SECRET, request),
        "verifies with the secret"
    );
    assert_ne!(
        signed,
        signature(OTHER_SECRET, request),
        "does not verify with another secret"
    );

    let key = SECRET.strip_prefix("whsec_").unwrap();
    assert!(
        !reply.outcome().to_string().contains(key),
        "the secret is in the Outcome"
    );
    assert!(
        reply.logs().iter().all(|line| !line.contains(key)),
        "the secret is in the host logs"
    );
    assert!(
        received
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.raw).contains(key)),
        "the secret is in an event"
    );
}

#[test]
fn a_malformed_secret_stops_serve_naming_the_variable_not_the_value() {
    let scratch = Scratch::new("webhook");
    let state = scratch.sqlite_state("state.db");
    let mut child = spawn(
        free_port(),
        &[
            ("CMKGUARD_STATE", state.as_str()),
            ("CMKGUARD_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
            (
                "CMKGUARD_WEBHOOK_SECRET",
                "q1Xc3mVnZ8bGf0R2tY6uWp4sLkJhDa9eCo7iNvMxQzE=",
            ),
        ],
        &["serve"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a malformed webhook secret");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("cmk-guard: invalid configuration: CMKGUARD_WEBHOOK_SECRET: "),
        "{stderr}"
    );
    assert!(stderr.contains("whsec_"), "says what is expected: {stderr}");
    assert!(
        !stderr.contains("q1Xc3mVnZ8"),
        "never echoes the value: {stderr}"
    );
}
