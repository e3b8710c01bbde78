//! `host.json` and `function-definitions/` agree with what the handler serves and reads.

use cmk_guard_blackbox::{Handler, fixtures_dir, read_json, repo_root};
use serde_json::{Value, json};

fn definitions() -> Vec<(String, Value)> {
    let dir = repo_root().join("function-definitions");
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("function-definitions")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                read_json(&e.path().join("function.json")),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn trigger_binding(definition: &Value) -> (String, String) {
    let binding = definition["bindings"]
        .as_array()
        .and_then(|b| {
            b.iter().find(|b| {
                b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger"))
            })
        })
        .expect("one trigger binding");
    (
        binding["type"].as_str().unwrap_or_default().to_owned(),
        binding["name"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn host_json_runs_the_packaged_binary_with_forwarding() {
    let host = read_json(&repo_root().join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "cmk-guard"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert!(
        host["functionTimeout"]
            .as_str()
            .is_some_and(|t| t.starts_with("00:"))
    );
}

#[test]
fn the_seven_functions_are_defined_as_documented() {
    let definitions = definitions();
    let names: Vec<&str> = definitions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Evaluate",
            "OnKeyVaultAudit",
            "OnKeyVaultEvent",
            "OnSubscriptionEvent",
            "Sweep",
            "SweepSubscription",
            "WhoUses"
        ]
    );
    for (name, definition) in &definitions {
        let (kind, binding) = trigger_binding(definition);
        match name.as_str() {
            "OnSubscriptionEvent" | "OnKeyVaultEvent" => {
                assert_eq!(
                    (kind.as_str(), binding.as_str()),
                    ("eventGridTrigger", "event")
                );
                // `cardinality: many` would turn the event into JSON text holding an array.
                assert!(definition["bindings"][0].get("cardinality").is_none());
            }
            "OnKeyVaultAudit" => {
                assert_eq!(
                    (kind.as_str(), binding.as_str()),
                    ("eventHubTrigger", "messages")
                );
                let trigger = &definition["bindings"][0];
                // A batch per invocation, each message as the JSON text Azure Monitor wrote.
                assert_eq!(trigger["cardinality"], "many");
                assert_eq!(trigger["dataType"], "string");
                assert_eq!(trigger["eventHubName"], "%CMKGUARD_AUDIT_EVENTHUB_NAME%");
                assert_eq!(trigger["connection"], "CMKGUARD_AUDIT_EVENTHUB");
                assert_eq!(trigger["consumerGroup"], "cmk-guard");
                // A failed batch is retried before the host checkpoints past it.
                assert_eq!(definition["retry"]["strategy"], "exponentialBackoff");
                assert!(definition["retry"]["maxRetryCount"].as_u64() > Some(0));
            }
            "Sweep" => {
                assert_eq!((kind.as_str(), binding.as_str()), ("timerTrigger", "timer"));
                assert_eq!(
                    definition["bindings"][0]["schedule"],
                    "%CMKGUARD_SWEEP_SCHEDULE%"
                );
            }
            "SweepSubscription" => {
                assert_eq!(
                    (kind.as_str(), binding.as_str()),
                    ("queueTrigger", "message")
                );
                let trigger = &definition["bindings"][0];
                assert_eq!(trigger["queueName"], "%CMKGUARD_SWEEP_QUEUE%");
                // The Function app's own storage, identity-based in Azure.
                assert_eq!(trigger["connection"], "AzureWebJobsStorage");
                // cmk-guard writes messages base64-encoded, as the trigger reads them, and a
                // failing subscription is retried before it goes to the poison queue.
                let queues = &read_json(&repo_root().join("host.json"))["extensions"]["queues"];
                assert_eq!(queues["messageEncoding"], "base64");
                assert!(queues["maxDequeueCount"].as_u64() > Some(1));
            }
            "Evaluate" | "WhoUses" => {
                assert_eq!((kind.as_str(), binding.as_str()), ("httpTrigger", "req"));
                let trigger = &definition["bindings"][0];
                assert_eq!(trigger["authLevel"], "function");
                assert_eq!(trigger["methods"], json!(["post"]));
                let route = if name == "Evaluate" {
                    "evaluate"
                } else {
                    "who-uses"
                };
                assert_eq!(trigger["route"], route);
                // Forwarding applies only to functions with exactly one http in and one http out.
                let bindings = definition["bindings"].as_array().map(Vec::len);
                assert_eq!(bindings, Some(2));
                assert_eq!(
                    definition["bindings"][1],
                    json!({"type": "http", "name": "res", "direction": "out"})
                );
            }
            other => panic!("unexpected function {other}"),
        }
    }
}

#[tokio::test]
async fn every_function_has_a_route_that_reads_its_binding() {
    let handler = Handler::start(&[]).await;
    let served: Vec<String> =
        handler.invoke("NoSuchFunction", b"{}".to_vec()).await.body["functions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    let mut served_sorted = served.clone();
    served_sorted.sort();
    let defined: Vec<String> = definitions().into_iter().map(|(n, _)| n).collect();
    assert_eq!(served_sorted, defined);

    let event = read_json(
        &fixtures_dir().join("events/eventgrid-schema/Microsoft.KeyVault.KeyExpired.json"),
    );
    for (name, definition) in definitions() {
        let (kind, binding) = trigger_binding(&definition);
        // A decoy entry disables the single-binding fallback, so only the exact name can match.
        let value = match kind.as_str() {
            "eventGridTrigger" => event.clone(),
            "eventHubTrigger" => json!([json!({"records": []}).to_string()]),
            "timerTrigger" => {
                json!({"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false})
            }
            // The message's text as JSON text in a string, as the host passes a queue message.
            "queueTrigger" => json!(
                json!({"run": "r", "subscription": "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34", "index": 0, "of": 1})
                    .to_string()
            ),
            _ if name == "WhoUses" => {
                json!({"Url": "http://localhost/api/who-uses", "Method": "POST", "Body": "{\"target\":\"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.KeyVault\"}"})
            }
            _ => {
                json!({"Url": "http://localhost/api/evaluate", "Method": "POST", "Body": "{\"resource\":\"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/providers/Microsoft.KeyVault\"}"})
            }
        };
        let body = json!({"Data": {binding.clone(): value, "decoy": {}}, "Metadata": {}})
            .to_string()
            .into_bytes();
        let reply = handler.invoke(&name, body).await;
        assert_eq!(reply.status, 200, "{name}");
        let text = reply.body.to_string();
        assert!(
            !text.contains("no binding named"),
            "{name} does not read `{binding}`: {text}"
        );
        if name == "WhoUses" {
            // Reached the who-uses logic: a provider id is a valid ARM id but not a vault's.
            assert!(text.contains("is not a key vault"), "{text}");
        } else if kind == "httpTrigger" {
            // Reached the evaluate logic: a provider id is a valid ARM id but not a checkable type.
            assert!(text.contains("expected an ML workspace"), "{text}");
        } else {
            assert_ne!(reply.outcome()["disposition"], "rejected", "{name}: {text}");
        }
    }
}
