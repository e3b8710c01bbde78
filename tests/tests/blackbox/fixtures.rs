//! Every file under `tests/fixtures/events` and `tests/fixtures/host-invocations` is a test
//! case with an asserted Outcome. A fixture without an expectation here fails the suite.

use std::path::Path;

use cmk_guard_blackbox::{Handler, Reply, fixtures_dir, read_json};
use serde_json::Value;

/// What the Outcome of a fixture must say.
enum Expect {
    /// Ignored, with a reason containing this text.
    Ignored(&'static str),
    /// Evaluated, with this resource.
    Evaluated(&'static str),
    /// Rejected, with a reason containing this text.
    Rejected(&'static str),
    /// A complete sweep of the (compliant) tenant.
    Swept,
}

const VAULT: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg-mlw-prod/providers/Microsoft.KeyVault/vaults/kv-mlw-cmk-prod";
/// The simulator's default CMK workspace, which uses that vault and its key `mlw-cmk-key`.
const WORKSPACE: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg-mlw-prod/providers/Microsoft.MachineLearningServices/workspaces/mlw-prod";

/// Expectations for the event fixtures, by file name (both schemas share them).
fn event_expectation(file: &str) -> Expect {
    match file {
        "Microsoft.Resources.ResourceWriteSuccess.json"
        | "Microsoft.Resources.ResourceDeleteSuccess.json"
        | "Microsoft.Resources.ResourceActionSuccess.json" => {
            Expect::Ignored("cannot change a CMK chain")
        }
        "Microsoft.Resources.ResourceWriteFailure.json"
        | "Microsoft.Resources.ResourceDeleteFailure.json"
        | "Microsoft.Resources.ResourceActionFailure.json" => {
            Expect::Ignored("the operation failed; nothing changed")
        }
        "Microsoft.Resources.ResourceWriteCancel.json"
        | "Microsoft.Resources.ResourceDeleteCancel.json"
        | "Microsoft.Resources.ResourceActionCancel.json" => {
            Expect::Ignored("cancelled; nothing changed")
        }
        "Microsoft.KeyVault.SecretNewVersionCreated.json"
        | "Microsoft.KeyVault.CertificateNearExpiry.json" => {
            Expect::Ignored("secrets and certificates are not customer-managed keys")
        }
        "Microsoft.MachineLearningServices.ModelRegistered.json" => {
            Expect::Ignored("models and runs")
        }
        "Microsoft.KeyVault.KeyNewVersionCreated.json"
        | "Microsoft.KeyVault.KeyNearExpiry.json" => Expect::Evaluated(
            "https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9",
        ),
        "Microsoft.KeyVault.KeyExpired.json" => Expect::Evaluated(
            "https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/9c1e4f7a2b3d4e5f8a6b7c8d9e0f1a2b",
        ),
        "Microsoft.KeyVault.VaultAccessPolicyChanged.json" => Expect::Evaluated(VAULT),
        "Microsoft.EventGrid.SubscriptionValidationEvent.json" => {
            Expect::Ignored("answered by the Functions host's Event Grid extension")
        }
        "SubscriptionValidationResponse.json" => Expect::Rejected("neither `eventType`"),
        other => panic!("fixture {other} has no expectation: add one"),
    }
}

fn check(reply: &Reply, expect: &Expect, source: &str) {
    assert_eq!(reply.status, 200, "{source}: {:?}", reply.body);
    assert!(
        reply.content_type.starts_with("application/json"),
        "{source}"
    );
    let outcome = reply.outcome();
    let reason = outcome["reason"].as_str().unwrap_or_default();
    match expect {
        Expect::Ignored(text) => {
            assert_eq!(outcome["disposition"], "ignored", "{source}: {outcome}");
            assert!(reason.contains(text), "{source}: {reason}");
        }
        Expect::Rejected(text) => {
            assert_eq!(outcome["disposition"], "rejected", "{source}: {outcome}");
            assert!(reason.contains(text), "{source}: {reason}");
        }
        Expect::Swept => {
            assert_eq!(outcome["disposition"], "evaluated", "{source}: {outcome}");
            assert!(
                outcome.get("reason").is_none(),
                "{source}: a complete sweep"
            );
            assert_eq!(
                outcome["workspaces"].as_array().map(Vec::len),
                Some(1),
                "{source}"
            );
            assert_eq!(outcome["findings"], serde_json::json!([]), "{source}");
        }
        Expect::Evaluated(resource) => {
            assert_eq!(outcome["disposition"], "evaluated", "{source}: {outcome}");
            assert!(outcome.get("reason").is_none(), "{source}");
            assert_eq!(outcome["resource"], *resource, "{source}");
            let workspaces: Vec<String> = outcome["workspaces"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                workspaces,
                vec![WORKSPACE.to_ascii_lowercase()],
                "{source}: resolved through Resource Graph"
            );
            assert_eq!(outcome["findings"], serde_json::json!([]), "{source}");
            assert_eq!(outcome["actions"], serde_json::json!([]), "{source}");
        }
    }
    // One human-readable line per decision, ending the Logs.
    let logs = reply.logs();
    let last = logs.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with(outcome["disposition"].as_str().unwrap_or("?")),
        "{source}: {logs:?}"
    );
}

fn json_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Which function the host would invoke for an event type.
fn function_for(event: &Value) -> &'static str {
    let event_type = event
        .get("eventType")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if event_type.starts_with("Microsoft.KeyVault.") {
        "OnKeyVaultEvent"
    } else {
        "OnSubscriptionEvent"
    }
}

#[tokio::test]
async fn every_event_fixture_through_the_real_binary() {
    let mut count = 0;
    for folder in ["eventgrid-schema", "cloudevents", "webhook-delivery"] {
        // The two schemas carry the same event ids: each folder gets a fresh handler and state,
        // or the second would rightly be a duplicate.
        let handler = Handler::start(&[]).await;
        for path in json_files(&fixtures_dir().join("events").join(folder)) {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let expect = event_expectation(&file);
            let source = format!("{folder}/{file}");
            // Event Grid delivers arrays; the extension invokes once per element, concurrently.
            let events = match read_json(&path) {
                Value::Array(events) => events,
                event => vec![event],
            };
            let function = function_for(&events[0]);
            for reply in handler.deliver(function, "event", &events).await {
                check(&reply, &expect, &source);
                count += 1;
            }
        }
    }
    assert!(count >= 33, "only {count} event fixtures ran");
}

#[tokio::test]
async fn every_host_invocation_fixture_through_the_real_binary() {
    let handler = Handler::start(&[]).await;
    let dir = fixtures_dir().join("host-invocations");
    let mut count = 0;
    for path in json_files(&dir) {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let body = std::fs::read(&path).expect("fixture");
        // The fixtures were captured from other apps (functions OnArmWrite, OnKeyVault, Reconcile;
        // bindings eventGridEvent, myTimer): post them to our equivalent function unchanged.
        let (function, expect, renamed_binding) = match file.as_str() {
            "eventGridTrigger.OnArmWrite.ResourceWriteSuccess.request.json" => (
                "OnSubscriptionEvent",
                Expect::Ignored("cannot change a CMK chain"),
                Some("eventGridEvent"),
            ),
            "eventGridTrigger.OnKeyVault.SecretNewVersionCreated.request.json" => (
                "OnKeyVaultEvent",
                Expect::Ignored("secrets and certificates"),
                None,
            ),
            "eventGridTrigger.OnKeyVaultEvent.KeyNearExpiry.request.json" => (
                "OnKeyVaultEvent",
                Expect::Evaluated(
                    "https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9",
                ),
                None,
            ),
            "timerTrigger.Reconcile.request.json"
            | "timerTrigger.Reconcile.noScheduleStatus.request.json" => {
                ("Sweep", Expect::Swept, Some("myTimer"))
            }
            "response.ok.json" => {
                // A handler reply, not a request: ours must have the same three keys.
                let sample = read_json(&path);
                let reply = handler
                    .deliver(
                        "OnKeyVaultEvent",
                        "event",
                        &[read_json(&fixtures_dir().join(
                            "events/eventgrid-schema/Microsoft.KeyVault.KeyExpired.json",
                        ))],
                    )
                    .await;
                let keys = |v: &Value| {
                    v.as_object()
                        .map(|o| {
                            let mut k: Vec<_> = o.keys().cloned().collect();
                            k.sort();
                            k
                        })
                        .unwrap_or_default()
                };
                assert_eq!(keys(&reply[0].body), keys(&sample));
                count += 1;
                continue;
            }
            other => panic!("host-invocation fixture {other} has no expectation: add one"),
        };
        let reply = handler.invoke(function, body).await;
        check(&reply, &expect, &file);
        let warned = reply.logs().iter().any(|l| l.contains("used `"));
        match renamed_binding {
            Some(name) => assert!(
                reply
                    .logs()
                    .iter()
                    .any(|l| l.contains(&format!("used `{name}`"))),
                "{file}: {:?}",
                reply.logs()
            ),
            None => assert!(!warned, "{file}: {:?}", reply.logs()),
        }
        count += 1;
    }
    assert_eq!(count, 6);
}

#[tokio::test]
async fn a_function_name_from_another_app_is_not_found() {
    let handler = Handler::start(&[]).await;
    let body = std::fs::read(
        fixtures_dir()
            .join("host-invocations/eventGridTrigger.OnArmWrite.ResourceWriteSuccess.request.json"),
    )
    .expect("fixture");
    let reply = handler.invoke("OnArmWrite", body).await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("OnArmWrite")
    );
}
