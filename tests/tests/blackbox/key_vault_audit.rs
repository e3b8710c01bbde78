//! `OnKeyVaultAudit`: Key Vault `AuditEvent` batches delivered the way the Functions host's Event
//! Hub trigger delivers them (`cardinality: many`, one JSON text per message, the partition
//! and sequence numbers in `Metadata`). A change the log reports is checked in the invocation
//! that reports it; a service's failed unwrap raises `key.use-failures` and a later unwrap
//! resolves it; noise costs no Azure read; a redelivered batch is a duplicate; a poison record
//! is answered, not retried.

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::sink::Sink;
use cmk_guard_blackbox::story::{KEY, RG, SUB, TEAMS_ONLY, VAULT, WORKSPACE, tenant, workspace_id};
use cmk_guard_blackbox::{Handler, Reply, event_hub_envelope, fixtures_dir, read_json};
use serde_json::{Value, json};

const FUNCTION: &str = "OnKeyVaultAudit";
const BINDING: &str = "messages";

/// The vault's ARM id as the audit log writes it: upper-case.
fn vault_resource_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}")
        .to_uppercase()
}

/// One `AuditEvent` record in the logging documentation's shape.
fn record(operation: &str, status: u16, object_id: &str, path: &str) -> Value {
    json!({
        "time": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "resourceId": vault_resource_id(),
        "operationName": operation, "operationVersion": "7.5", "category": "AuditEvent",
        "resultType": if status < 300 { "Success" } else { "Forbidden" },
        "resultSignature": if status < 300 { "OK" } else { "Forbidden" },
        "resultDescription": if status < 300 { "" } else { "Operation unwrapKey is not permitted on this key." },
        "durationMs": "9", "callerIpAddress": "10.20.30.40", "correlationId": "",
        "identity": {"claim": {
            "http://schemas.microsoft.com/identity/claims/objectidentifier": object_id,
            "appid": "3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d"}},
        "properties": {
            "clientInfo": "Azure-Storage/1.0",
            "requestUri": format!("https://{VAULT}.vault.azure.net{path}?api-version=7.5"),
            "id": format!("https://{VAULT}.vault.azure.net{path}"),
            "httpStatusCode": status
        }
    })
}

fn key_path() -> String {
    format!("/keys/{KEY}")
}

/// The workspace's CMK identity (its system-assigned principal).
fn workspace_principal(handler: &Handler) -> String {
    handler
        .sim
        .tenant(|t| t.workspace(WORKSPACE).and_then(|w| w.cmk_principal_id()))
        .expect("the workspace has an identity")
}

async fn deliver(handler: &Handler, messages: &[Value], first_sequence: u64) -> Reply {
    let body = event_hub_envelope(BINDING, messages, first_sequence, FUNCTION);
    handler.invoke(FUNCTION, body).await
}

fn findings<'a>(reply: &'a Reply, rule: &str) -> Vec<&'a Value> {
    reply.outcome()["findings"]
        .as_array()
        .map(|f| f.iter().filter(|f| f["rule"] == rule).collect())
        .unwrap_or_default()
}

async fn start(sink: &Sink, scratch: &Scratch) -> Handler {
    let policy = scratch
        .write("policy.toml", TEAMS_ONLY)
        .display()
        .to_string();
    let teams = sink.url("teams");
    Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_POLICY_FILE", policy.as_str()),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
        ],
    )
    .await
}

#[tokio::test]
async fn a_disabled_key_is_flagged_critical_in_the_invocation_that_reports_it() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    handler
        .sim
        .admin()
        .patch_key(VAULT, KEY, &json!({"enabled": false}))
        .expect("disable the key");
    let person = "c67593d3-d678-5128-8895-30412b2d1eb3";
    let update = json!({"records": [record("KeyUpdate", 200, person, &key_path())]});
    let reply = deliver(&handler, &[update], 100).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    assert_eq!(outcome["event"]["type"], "Microsoft.KeyVault.AuditEvent");
    assert_eq!(outcome["workspaces"], json!([workspace_id()]));
    let disabled = findings(&reply, "key.enabled");
    assert_eq!(disabled.len(), 1, "{outcome}");
    assert_eq!(disabled[0]["severity"], "critical");
    assert!(
        sink.received("teams")
            .iter()
            .any(|card| card.body.to_string().contains("disabled")),
        "the alert went out in the same invocation"
    );
}

#[tokio::test]
async fn a_failed_unwrap_raises_key_use_failures_and_a_later_unwrap_resolves_it() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    let principal = workspace_principal(&handler);
    let version_path = format!("{}/7c1e5b9a04d34f2c8e6a1b3d5f7a9c0e", key_path());
    let failed = json!({"records": [
        record("KeyUnwrap", 401, &principal, &version_path),
        record("KeyUnwrap", 403, &principal, &version_path),
        record("KeyUnwrap", 403, &principal, &version_path),
    ]});
    let reply = deliver(&handler, &[failed], 200).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let failures = findings(&reply, "key.use-failures");
    assert_eq!(failures.len(), 1, "{}", reply.outcome());
    let finding = failures[0];
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["workspace"], workspace_id());
    let observed = finding["observed"].as_str().unwrap_or_default();
    for part in [
        principal.as_str(),
        "unwrapKey failed 2 times",
        "403 Forbidden",
        "10.20.30.40",
    ] {
        assert!(observed.contains(part), "`{part}` in {observed}");
    }
    let cards = sink.received("teams");
    assert!(
        cards.iter().any(|c| c
            .body
            .to_string()
            .contains("a service failed to use the key")),
        "{cards:?}"
    );

    // Another caller's successful unwrap says nothing about this service: nothing is checked
    // again, nothing resolves.
    let other_service = "0b0b0b0b-0000-4000-8000-00000000000b";
    let other = json!({"records": [record("KeyUnwrap", 200, other_service, &version_path)]});
    let reply = deliver(&handler, &[other], 250).await;
    assert_eq!(
        reply.outcome()["disposition"],
        "ignored",
        "{}",
        reply.outcome()
    );
    assert_eq!(sink.received("teams").len(), cards.len());

    // A later successful unwrap by the service: the finding resolves and people are told.
    let recovered = json!({"records": [record("KeyUnwrap", 200, &principal, &version_path)]});
    let reply = deliver(&handler, &[recovered], 300).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.outcome()["disposition"], "evaluated");
    assert!(
        findings(&reply, "key.use-failures").is_empty(),
        "{}",
        reply.outcome()
    );
    assert!(
        sink.received("teams")
            .iter()
            .skip(cards.len())
            .any(|c| c.body.to_string().contains("Resolved: ")),
        "the resolution is announced"
    );

    // Successful unwraps when nothing is open cost no Azure read.
    handler.sim.reset_counters();
    let routine = json!({"records": [record("KeyUnwrap", 200, &principal, &version_path)]});
    let reply = deliver(&handler, &[routine], 400).await;
    assert_eq!(
        reply.outcome()["disposition"],
        "ignored",
        "{}",
        reply.outcome()
    );
    assert_eq!(handler.sim.counters().total, 0);
}

#[tokio::test]
async fn noise_is_ignored_without_azure_reads_and_a_redelivery_is_a_duplicate() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    handler.sim.reset_counters();
    let person = "c67593d3-d678-5128-8895-30412b2d1eb3";
    let noise = json!({"records": [
        record("SecretGet", 200, person, "/secrets/db-password/0a1b2c3d4e5f"),
        record("KeyGet", 200, person, &key_path()),
        record("KeyList", 200, person, "/keys"),
    ]});
    let reply = deliver(&handler, &[noise], 500).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(outcome["disposition"], "ignored", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("SecretGet ×1"), "{reason}");
    assert_eq!(handler.sim.counters().total, 0, "no Azure read");

    let change = json!({"records": [record("VaultPatch", 200, person, "/")]});
    let first = deliver(&handler, std::slice::from_ref(&change), 600).await;
    assert_eq!(first.outcome()["disposition"], "evaluated");
    let again = deliver(&handler, &[change], 600).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.outcome()["disposition"],
        "duplicate",
        "{}",
        again.outcome()
    );
}

#[tokio::test]
async fn a_poison_record_is_answered_and_the_rest_of_the_batch_is_checked() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    let person = "c67593d3-d678-5128-8895-30412b2d1eb3";
    let mut foreign = record("KeyUpdate", 200, person, &key_path());
    foreign["properties"]["id"] = json!("https://kv-cmk.vault.evil.example/keys/cmk");
    let good = json!({"records": [foreign, record("KeyUpdate", 200, person, &key_path())]});
    let reply = deliver(&handler, &[json!("{not json"), good], 700).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("2 refused"), "{reason}");
    assert!(
        reason.contains("not under the Key Vault DNS suffix"),
        "{reason}"
    );
    assert_eq!(outcome["workspaces"], json!([workspace_id()]));

    let only_poison = deliver(&handler, &[json!("{not json")], 800).await;
    assert_eq!(only_poison.status, 200);
    assert_eq!(only_poison.outcome()["disposition"], "rejected");
}

#[tokio::test]
async fn the_documented_host_request_is_answered() {
    let handler = Handler::start(&[]).await;
    let request =
        read_json(&fixtures_dir().join("keyvault-audit/host-request.eventHubTrigger.many.json"));
    let reply = handler
        .invoke(FUNCTION, serde_json::to_vec(&request).unwrap())
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    // The fixture's vault is not in the simulated tenant: no workspace uses it.
    assert_eq!(outcome["disposition"], "evaluated", "{outcome}");
    assert_eq!(outcome["workspaces"], json!([]));
    assert_eq!(
        outcome["event"]["id"],
        "eventhub:evhns-cmkguard.servicebus.windows.net/kv-audit/cmk-guard/0:59-60@2026-11-20T09:14:05.25"
    );
}

/// The simulator logs what Key Vault would: a person disables the key, then the workspace's
/// service fails to unwrap with it. Its own records, delivered as Azure Monitor streams them,
/// raise both problems in one invocation.
#[tokio::test]
async fn the_simulators_own_log_of_a_disabled_key_and_a_refused_unwrap_raises_both() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    let principal = workspace_principal(&handler);
    let admin = handler.sim.admin();
    assert_eq!(
        admin.use_key(VAULT, KEY, "unwrapKey", &principal).unwrap(),
        200
    );
    handler.sim.drain_audit();
    admin
        .patch_key(VAULT, KEY, &json!({"enabled": false}))
        .expect("disable the key");
    assert_eq!(
        admin.use_key(VAULT, KEY, "unwrapKey", &principal).unwrap(),
        403
    );
    let messages: Vec<Value> = handler.sim.audit_messages(1);
    assert_eq!(messages.len(), 2, "{messages:?}");
    let reply = deliver(&handler, &messages, 900).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let disabled = findings(&reply, "key.enabled");
    assert_eq!(disabled.len(), 1, "{} {messages:?}", reply.outcome());
    assert_eq!(disabled[0]["severity"], "critical");
    let failures = findings(&reply, "key.use-failures");
    assert_eq!(failures.len(), 1, "{}", reply.outcome());
    let observed = failures[0]["observed"].as_str().unwrap_or_default();
    assert!(
        observed.contains("unwrapKey failed once (403") && observed.contains("disabled"),
        "{observed}"
    );
}

/// cmk-guard's own failed key read (it reads a key's modulus on the data plane, and Reader
/// alone is refused there) is no outage: re-checking on it would read and fail again, round
/// and round.
#[tokio::test]
async fn cmk_guards_own_failed_key_reads_raise_nothing() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let handler = start(&sink, &scratch).await;
    let own = handler
        .sim
        .tenant(|t| t.app.principal_id.clone())
        .expect("the app has a system identity");
    let own_read = json!({"records": [record("KeyGet", 403, &own, &key_path())]});
    let reply = deliver(&handler, &[own_read], 1000).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let outcome = reply.outcome();
    assert_eq!(outcome["disposition"], "ignored", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cmk-guard's own key calls ×1"), "{reason}");
}

/// A full batch — host.json's `maxEventBatchSize` messages of about 1 MiB each, sent as JSON
/// text — is read, not refused as an oversized Event Grid event; past the batch limit it is 413.
#[tokio::test]
async fn a_full_batch_of_large_messages_is_read_and_a_larger_one_refused() {
    let host = read_json(&cmk_guard_blackbox::repo_root().join("host.json"));
    let batch_size = host["extensions"]["eventHubs"]["maxEventBatchSize"]
        .as_u64()
        .expect("host.json caps the Event Hub batch") as usize;
    let handler = Handler::start(&[]).await;
    let person = "c67593d3-d678-5128-8895-30412b2d1eb3";
    // About 1 MiB of records per message, quotes and all: the JSON text grows when escaped.
    let one = record("SecretGet", 200, person, "/secrets/s/0a1b2c3d4e5f");
    let per_message = 1024 * 1024 / one.to_string().len();
    let message = json!({ "records": vec![one; per_message] });
    let messages = vec![message; batch_size];
    let reply = deliver(&handler, &messages, 1100).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.outcome()["disposition"], "ignored");
    let reason = reply.outcome()["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("in {batch_size} message(s)")),
        "{reason}"
    );

    let too_many = vec![messages[0].clone(); 2 * batch_size];
    let reply = deliver(&handler, &too_many, 1200).await;
    assert_eq!(reply.status, 413, "{:?}", reply.body);
    let error = reply.body["error"].as_str().unwrap_or_default();
    assert!(error.contains("Event Hub batch"), "{error}");
}

/// The loop guard leaves alone what may be cmk-guard's own write — but a person's change that
/// lands in the same batch as cmk-guard's own fix is the person's, and is acted on.
#[tokio::test]
async fn a_change_beside_cmk_guards_own_fix_is_acted_on() {
    let (sink, scratch) = (Sink::start().await, Scratch::new("audit"));
    let policy = scratch
        .write(
            "policy.toml",
            format!("{TEAMS_ONLY}[remediation.\"key.enabled\"]\nenabled = true\n"),
        )
        .display()
        .to_string();
    let teams = sink.url("teams");
    let handler = Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_POLICY_FILE", policy.as_str()),
            ("CMKGUARD_TEAMS_WEBHOOK_URL", teams.as_str()),
        ],
    )
    .await;
    let remediations = |reply: &Reply| -> Vec<String> {
        reply.outcome()["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["kind"] == "remediate" && a["rule"] == "key.enabled")
            .map(|a| a["result"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let admin = handler.sim.admin();

    // A person disables the key; the audit log says so; cmk-guard enables it again.
    admin
        .patch_key(VAULT, KEY, &json!({"enabled": false}))
        .expect("disable the key");
    let reply = deliver(&handler, &handler.sim.audit_messages(100), 1300).await;
    assert_eq!(remediations(&reply), ["applied"], "{}", reply.outcome());

    // Within the hour the person disables it again: that record and cmk-guard's own
    // (its key update) reach cmk-guard in one batch. The person's change is not suppressed.
    admin
        .patch_key(VAULT, KEY, &json!({"enabled": false}))
        .expect("disable the key again");
    let messages = handler.sim.audit_messages(100);
    let text = serde_json::to_string(&messages).unwrap_or_default();
    assert!(
        text.matches("\"KeyUpdate\"").count() >= 2,
        "cmk-guard's and the person's updates: {text}"
    );
    let reply = deliver(&handler, &messages, 1400).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(remediations(&reply), ["applied"], "{}", reply.outcome());
}
