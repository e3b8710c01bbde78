//! The `azure-sim` binary: loads a scenario, prints one JSON ready line, serves until killed.

use crate::helpers::client_builder;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_prints_a_ready_line_and_serves_the_scenario() {
    // Removed with everything in it when the test ends, even when it fails.
    let scratch = tempfile::Builder::new()
        .prefix("azure-sim-bin-test-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let scenario = dir.join("scenario.json");
    std::fs::write(
        &scenario,
        r#"{"vaults": [{"name": "kv-bin", "purgeProtection": null, "keys": [{"name": "k", "size": 2048}]}],
            "workspaces": [{"name": "ws-bin", "cmk": {"vault": "kv-bin", "key": "k"}}]}"#,
    )
    .unwrap();
    let ca = dir.join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_azure-sim"))
        .args([
            "--scenario",
            scenario.to_str().unwrap(),
            "--ca-out",
            ca.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["caPath"], ca.to_str().unwrap());
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let port = ready["httpsPort"].as_u64().unwrap();
    assert_eq!(
        ready["connectTo"],
        format!("management.azure.com=127.0.0.1:{port},vault.azure.net=127.0.0.1:{port}")
    );
    let token: Value = client_builder()
        .build()
        .unwrap()
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://management.azure.com/",
            ready["identityEndpoint"].as_str().unwrap()
        ))
        .header(
            "X-IDENTITY-HEADER",
            ready["identityHeader"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .resolve("management.azure.com", ([127, 0, 0, 1], port as u16).into())
        .build()
        .unwrap();
    let vault: Value = client
        .get(format!(
            "https://management.azure.com:{port}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/kv-bin?api-version=2026-02-01",
            azure_sim::scenario::DEFAULT_SUBSCRIPTION,
            azure_sim::scenario::DEFAULT_RESOURCE_GROUP
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vault["name"], "kv-bin");
    assert!(vault["properties"].get("enablePurgeProtection").is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}
