//! The simulated tenants and the events the benchmark sends: `n` compliant CMK workspaces, each
//! with its own vault and RSA-3072 key, and the host envelopes of the events about them.

use azure_sim::{KeySpec, Tenant, VaultSpec, WorkspaceSpec};
use serde_json::{Value, json};

/// The one subscription of the benchmark tenants.
pub const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
/// Resource groups the workspaces are spread over.
const GROUPS: usize = 10;
/// The person whose writes the events report.
const USER: &str = "5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a10";
/// Any 32-hex key version: the event is only a hint, the handler reads the key again.
const KEY_VERSION: &str = "4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9";

fn group(i: usize) -> String {
    format!("rg-bench-{:02}", i % GROUPS)
}

fn vault_name(i: usize) -> String {
    format!("kv-bench-{i:05}")
}

/// `n` compliant CMK workspaces `ws-bench-00000…`, each with its own vault and key.
pub fn tenant(n: usize) -> Result<Tenant, String> {
    let mut builder = Tenant::builder().subscription(SUB);
    for i in 0..n {
        builder = builder
            .vault(VaultSpec::new(SUB, &group(i), &vault_name(i)).key(KeySpec::rsa("cmk", 3072)))
            .workspace(
                WorkspaceSpec::new(SUB, &group(i), &format!("ws-bench-{i:05}"))
                    .cmk(&vault_name(i), "cmk"),
            );
    }
    builder.build().map_err(|e| format!("tenant: {e}"))
}

/// The `s`-th subscription of a multi-subscription tenant (`0` is [`SUB`]).
pub fn subscription(s: usize) -> String {
    if s == 0 {
        SUB.to_owned()
    } else {
        format!("3f7b2c1d-8e4a-4b6f-9c2d-{s:012x}")
    }
}

/// `subscriptions` subscriptions of `per_subscription` compliant CMK workspaces each, every
/// `per_vault` consecutive workspaces of a subscription sharing one vault and key
/// (`per_vault` 1: each its own). Workspace `i` of subscription `s` is
/// `ws-bench-{s:02}-{i:05}`, its vault `kv-b{s:02}-{i / per_vault:05}`.
pub fn tenant_sharing(
    subscriptions: usize,
    per_subscription: usize,
    per_vault: usize,
) -> Result<Tenant, String> {
    let per_vault = per_vault.max(1);
    let mut builder = Tenant::builder();
    for s in 0..subscriptions {
        let sub = subscription(s);
        builder = builder.subscription(&sub);
        for v in 0..per_subscription.div_ceil(per_vault) {
            let vault = format!("kv-b{s:02}-{v:05}");
            builder = builder
                .vault(VaultSpec::new(&sub, &group(v), &vault).key(KeySpec::rsa("cmk", 3072)));
            for i in (v * per_vault)..((v + 1) * per_vault).min(per_subscription) {
                builder = builder.workspace(
                    WorkspaceSpec::new(&sub, &group(v), &format!("ws-bench-{s:02}-{i:05}"))
                        .cmk(&vault, "cmk"),
                );
            }
        }
    }
    builder.build().map_err(|e| format!("tenant: {e}"))
}

/// The ARM id of workspace `i`.
pub fn workspace_id(i: usize) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/ws-bench-{i:05}",
        group(i)
    )
}

/// What Azure emits when a person writes workspace `i`: relevant.
pub fn workspace_write(i: usize, id: &str) -> Value {
    let ws = workspace_id(i);
    json!({
        "id": id, "topic": format!("/subscriptions/{SUB}"), "subject": ws,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00.1234567Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write", "resourceUri": ws,
                 "subscriptionId": SUB, "status": "Succeeded",
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

/// Key Vault's `KeyNearExpiry` for the key of workspace `i`: relevant, resolved through
/// Resource Graph.
pub fn key_near_expiry(i: usize, id: &str) -> Value {
    let vault = vault_name(i);
    json!({
        "id": id,
        "topic": format!("/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{vault}", group(i)),
        "subject": "cmk", "eventType": "Microsoft.KeyVault.KeyNearExpiry", "eventTime": "2026-11-28T09:20:13.0487719Z",
        "data": {"Id": format!("https://{vault}.vault.azure.net/keys/cmk/{KEY_VERSION}"), "VaultName": vault,
                 "ObjectType": "Key", "ObjectName": "cmk", "Version": KEY_VERSION, "NBF": 1766913611, "EXP": 1798449611},
        "dataVersion": "1", "metadataVersion": "1"
    })
}

/// A storage account write in the same subscription: what most of a subscription topic's
/// traffic looks like, and irrelevant to CMK.
pub fn irrelevant(id: &str) -> Value {
    let st = format!(
        "/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stdata01"
    );
    json!({
        "id": id, "topic": format!("/subscriptions/{SUB}"), "subject": st,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00.1234567Z",
        "data": {"operationName": "Microsoft.Storage/storageAccounts/write", "resourceUri": st,
                 "subscriptionId": SUB, "status": "Succeeded",
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

/// The host envelope of an Event Grid trigger invocation (binding `event`).
pub fn envelope(event: &Value, function: &str) -> Vec<u8> {
    json!({
        "Data": {"event": event},
        "Metadata": {
            "data": event.get("data").cloned().unwrap_or(Value::Null),
            "sys": {"MethodName": function, "UtcNow": "2026-11-28T10:00:01.0131455Z", "RandGuid": uuid::Uuid::new_v4().to_string()}
        }
    })
    .to_string()
    .into_bytes()
}

/// Runs `cmk-guard scan --format json` (the release binary `handler`) against `sim` with only
/// the simulator's settings: the outcome it printed, how long it took in seconds, and its
/// exit code.
pub async fn scan_json(
    handler: &std::path::Path,
    sim: &azure_sim::Sim,
) -> Result<(serde_json::Value, f64, Option<i32>), String> {
    let started = std::time::Instant::now();
    let output = tokio::process::Command::new(handler)
        .args(["scan", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(sim.handler_env())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cmk-guard scan: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let outcome = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "cmk-guard scan printed no outcome ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )
    })?;
    Ok((outcome, seconds, output.status.code()))
}
