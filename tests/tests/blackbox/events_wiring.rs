//! Self-wiring (`vault.events-wired`) through the real binary: a sweep over a tenant with one
//! unwired CMK vault, one half-wired (audit log only) and one wired reports exactly the two
//! that miss something; in `remediate` mode with consent it wires them with exactly the missing
//! PUTs, and the next sweep finds them wired and writes nothing; `observe` and `alert` write
//! nothing; a wiring read that fails is a `guard.visibility` finding, never a verdict. A
//! subscription to cmk-guard that delivers nothing (a subject filter) is no wiring, and the
//! remediation rewrites it; a same-named subscription or setting of someone else's stays, and
//! cmk-guard's goes under the next free name.

use azure_sim::{Fault, KeySpec, RecordFilter, Tenant, VaultSpec, WiringSpec, WorkspaceSpec};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{Handler, story, timer_envelope};
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const RG: &str = "rg-wiring";
const FUNCTION: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg-cmkguard/providers/Microsoft.Web/sites/cmkguard-app/functions/OnKeyVaultEvent";
const HUB_RULE: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg-cmkguard/providers/Microsoft.EventHub/namespaces/cmkguard-ns/authorizationRules/keyvault-audit-send";
const HUB: &str = "keyvault-audit";
const RULE: &str = "vault.events-wired";

fn vault_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{name}")
}

/// Three CMK workspaces, each on its own vault: `kv-unwired` (nothing), `kv-audit-only` (the
/// diagnostic setting but no system topic), `kv-wired` (both; the ARM ids in other casings),
/// and a fourth workspace sharing `kv-wired`.
fn tenant() -> Tenant {
    let audit_only = VaultSpec {
        wiring: Some(WiringSpec {
            events_target: None,
            audit_rule_id: Some(HUB_RULE.to_owned()),
            audit_hub: Some(HUB.to_owned()),
        }),
        ..VaultSpec::new(SUB, RG, "kv-audit-only")
    };
    let mut builder = Tenant::builder().subscription(SUB);
    for vault in [
        VaultSpec::new(SUB, RG, "kv-unwired"),
        audit_only,
        VaultSpec::new(SUB, RG, "kv-wired").wired(
            &FUNCTION.to_lowercase(),
            &HUB_RULE.to_uppercase(),
            HUB,
        ),
    ] {
        let name = vault.name.clone();
        builder = builder
            .vault(vault.key(KeySpec::rsa("key", 3072)))
            .workspace(WorkspaceSpec::new(SUB, RG, &name.replace("kv-", "ws-")).cmk(&name, "key"));
    }
    builder
        .workspace(WorkspaceSpec::new(SUB, RG, "ws-wired-2").cmk("kv-wired", "key"))
        .build()
        .expect("tenant")
}

/// How many requests of `operation` the simulator answered.
fn count(handler: &Handler, operation: &str) -> usize {
    handler
        .sim
        .requests(&RecordFilter {
            operation: Some(operation.to_owned()),
            ..RecordFilter::default()
        })
        .len()
}

async fn start(mode: &str, scratch: &Scratch) -> Handler {
    let policy = scratch
        .write(
            "policy.toml",
            "[remediation.\"vault.events-wired\"]\nenabled = true\n",
        )
        .display()
        .to_string();
    Handler::start_with(
        tenant(),
        &[
            ("CMKGUARD_MODE", mode),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_KEYVAULT_EVENTS_TARGET", FUNCTION),
            ("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", HUB_RULE),
            ("CMKGUARD_AUDIT_EVENTHUB_NAME", HUB),
        ],
    )
    .await
}

async fn sweep(handler: &Handler) -> Value {
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.outcome().clone()
}

/// The open findings of the rule, as (vault name, observed).
fn wiring_findings(outcome: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == RULE)
        .map(|f| {
            assert_eq!(f["severity"], "medium", "{f}");
            let resource = f["resource"].as_str().unwrap_or_default();
            (
                resource.rsplit('/').next().unwrap_or_default().to_owned(),
                f["observed"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_sweep_reports_exactly_the_vaults_missing_wiring_and_observe_and_alert_write_nothing() {
    for mode in ["observe", "alert"] {
        let scratch = Scratch::new("events-wiring");
        let handler = start(mode, &scratch).await;
        let outcome = sweep(&handler).await;
        assert_eq!(
            wiring_findings(&outcome),
            [
                (
                    "kv-audit-only".to_owned(),
                    "the vault has no Event Grid system topic".to_owned()
                ),
                (
                    "kv-unwired".to_owned(),
                    format!(
                        "the vault has no Event Grid system topic; no diagnostic setting streams AuditEvent to cmk-guard's Event Hub {HUB}"
                    )
                ),
            ],
            "{mode}: {outcome}"
        );
        let others: Vec<&Value> = outcome["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["rule"] != RULE)
            .collect();
        assert!(others.is_empty(), "{mode}: {others:?}");
        // One listing of the subscription's system topics; each vault read once, the shared
        // one included.
        assert_eq!(count(&handler, "SystemTopics_ListBySubscription"), 1);
        assert_eq!(count(&handler, "DiagnosticSettings_List"), 3);
        assert_eq!(
            count(&handler, "SystemTopicEventSubscriptions_ListBySystemTopic"),
            1
        );
        assert_eq!(story::writes(&handler.sim), Vec::<String>::new(), "{mode}");
    }
}

#[tokio::test]
async fn remediate_wires_with_exactly_the_missing_writes_and_the_next_sweep_writes_nothing() {
    let scratch = Scratch::new("events-wiring");
    let handler = start("remediate", &scratch).await;
    let outcome = sweep(&handler).await;
    assert_eq!(wiring_findings(&outcome).len(), 2, "{outcome}");
    let remediations: Vec<(&str, &str)> = outcome["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "remediate")
        .map(|a| {
            (
                a["target"].as_str().unwrap_or_default(),
                a["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let unwired = vault_id("kv-unwired");
    let audit_only = vault_id("kv-audit-only");
    let mut expected_actions = vec![
        (audit_only.as_str(), "applied"),
        (unwired.as_str(), "applied"),
    ];
    expected_actions.sort();
    let mut remediations = remediations;
    remediations.sort();
    assert_eq!(remediations, expected_actions, "{outcome}");

    let topic = |vault: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.EventGrid/systemTopics/{vault}-cmk-guard"
        )
    };
    let mut writes = story::writes(&handler.sim);
    writes.sort();
    let mut expected = vec![
        format!("SystemTopics_CreateOrUpdate PUT {}", topic("kv-audit-only")),
        format!(
            "SystemTopicEventSubscriptions_CreateOrUpdate PUT {}/eventSubscriptions/cmk-guard",
            topic("kv-audit-only")
        ),
        format!("SystemTopics_CreateOrUpdate PUT {}", topic("kv-unwired")),
        format!(
            "SystemTopicEventSubscriptions_CreateOrUpdate PUT {}/eventSubscriptions/cmk-guard",
            topic("kv-unwired")
        ),
        format!(
            "DiagnosticSettings_CreateOrUpdate PUT {unwired}/providers/Microsoft.Insights/diagnosticSettings/cmk-guard-audit"
        ),
    ];
    expected.sort();
    assert_eq!(writes, expected);

    // What the sim now holds is what the rule asks for: the next sweep finds every vault
    // wired, and writes nothing.
    handler.sim.reset_counters();
    let outcome = sweep(&handler).await;
    assert_eq!(wiring_findings(&outcome), [], "{outcome}");
    assert_eq!(story::writes(&handler.sim), Vec::<String>::new());
}

#[tokio::test]
async fn a_wiring_read_that_fails_is_a_visibility_finding_not_a_verdict() {
    let scratch = Scratch::new("events-wiring");
    let handler = start("remediate", &scratch).await;
    handler
        .sim
        .add_fault(Fault::on_operation("DiagnosticSettings_List").status(403));
    let outcome = sweep(&handler).await;
    assert_eq!(wiring_findings(&outcome), [], "{outcome}");
    let unreadable: Vec<&str> = outcome["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "guard.visibility")
        .filter_map(|f| f["resource"].as_str())
        .collect();
    assert!(
        unreadable
            .iter()
            .any(|r| r
                .ends_with("/vaults/kv-unwired/providers/Microsoft.Insights/diagnosticSettings")),
        "{outcome}"
    );
    assert_eq!(story::writes(&handler.sim), Vec::<String>::new());
}

/// A PUT to the simulator's ARM, as someone other than cmk-guard (a story's seed).
async fn seed(handler: &Handler, path: &str, api_version: &str, body: Value) {
    let sim = &handler.sim;
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA parses");
    let client = cmk_guard_blackbox::http_client()
        .tls_certs_only([ca])
        .resolve(
            "management.azure.com",
            ([127, 0, 0, 1], sim.https_port()).into(),
        )
        .build()
        .expect("client builds");
    let response = client
        .put(format!(
            "https://management.azure.com:{}{path}?api-version={api_version}",
            sim.https_port()
        ))
        .bearer_auth(sim.app_token("https://management.azure.com"))
        .json(&body)
        .send()
        .await
        .expect("the simulator answers");
    assert!(
        response.status().is_success(),
        "{path}: {:?}",
        response.text().await
    );
}

#[tokio::test]
async fn a_subscription_that_delivers_nothing_is_rewritten_and_same_named_ones_of_others_are_spared()
 {
    const EG: &str = "2022-06-15";
    let scratch = Scratch::new("events-wiring");
    let handler = start("remediate", &scratch).await;
    let topic = |name: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.EventGrid/systemTopics/{name}"
        )
    };
    let every_type = [
        "Microsoft.KeyVault.KeyNewVersionCreated",
        "Microsoft.KeyVault.KeyNearExpiry",
        "Microsoft.KeyVault.KeyExpired",
        "Microsoft.KeyVault.VaultAccessPolicyChanged",
    ];
    // kv-wired: cmk-guard's own subscription, narrowed to subjects no event has.
    let narrowed = format!("{}/eventSubscriptions/cmk-guard", topic("kv-wired-events"));
    seed(&handler, &narrowed, EG, json!({"properties": {
        "destination": {"endpointType": "AzureFunction", "properties": {"resourceId": FUNCTION, "maxEventsPerBatch": 1}},
        "filter": {"includedEventTypes": every_type, "subjectBeginsWith": "/nothing"}
    }}))
    .await;
    // kv-audit-only: a topic whose `cmk-guard` subscription is someone else's web hook.
    seed(&handler, &topic("kv-audit-only-events"), EG, json!({
        "location": "westeurope",
        "properties": {"source": vault_id("kv-audit-only"), "topicType": "Microsoft.KeyVault.vaults"}
    }))
    .await;
    let webhook = format!(
        "{}/eventSubscriptions/cmk-guard",
        topic("kv-audit-only-events")
    );
    seed(&handler, &webhook, EG, json!({"properties": {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "https://example.org/hook"}}
    }}))
    .await;
    // kv-unwired: a `cmk-guard-audit` setting that sends AuditEvent to Log Analytics only.
    let log_analytics = format!(
        "{}/providers/Microsoft.Insights/diagnosticSettings/cmk-guard-audit",
        vault_id("kv-unwired")
    );
    let workspace = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/logs"
    );
    seed(
        &handler,
        &log_analytics,
        "2021-05-01-preview",
        json!({"properties": {
            "workspaceId": workspace,
            "logs": [{"category": "AuditEvent", "enabled": true}]
        }}),
    )
    .await;
    handler.sim.reset_counters();

    let outcome = sweep(&handler).await;
    let narrowed_finding = "the event subscription cmk-guard on the system topic kv-wired-events filters subjects (subjectBeginsWith /nothing)".to_owned();
    assert_eq!(
        wiring_findings(&outcome),
        [
            (
                "kv-audit-only".to_owned(),
                "the system topic kv-audit-only-events has no event subscription to cmk-guard's function".to_owned()
            ),
            (
                "kv-unwired".to_owned(),
                format!(
                    "the vault has no Event Grid system topic; no diagnostic setting streams AuditEvent to cmk-guard's Event Hub {HUB}"
                )
            ),
            (
                "kv-wired".to_owned(),
                narrowed_finding.clone()
            ),
            // ws-wired-2 shares the vault.
            ("kv-wired".to_owned(), narrowed_finding),
        ],
        "{outcome}"
    );
    let mut writes = story::writes(&handler.sim);
    writes.sort();
    let mut expected = vec![
        format!("SystemTopicEventSubscriptions_CreateOrUpdate PUT {narrowed}"),
        format!(
            "SystemTopicEventSubscriptions_CreateOrUpdate PUT {}/eventSubscriptions/cmk-guard-2",
            topic("kv-audit-only-events")
        ),
        format!(
            "SystemTopics_CreateOrUpdate PUT {}",
            topic("kv-unwired-cmk-guard")
        ),
        format!(
            "SystemTopicEventSubscriptions_CreateOrUpdate PUT {}/eventSubscriptions/cmk-guard",
            topic("kv-unwired-cmk-guard")
        ),
        format!("DiagnosticSettings_CreateOrUpdate PUT {log_analytics}-2"),
    ];
    expected.sort();
    assert_eq!(writes, expected, "{outcome}");

    // The others' resources are as they were; the next sweep finds every vault wired.
    let subscription = |id: &str| {
        handler.sim.tenant(|t| {
            t.event_subscriptions
                .iter()
                .find(|r| r.id.eq_ignore_ascii_case(id))
                .map(|r| r.body.clone())
        })
    };
    let setting = |id: &str| {
        handler.sim.tenant(|t| {
            t.diagnostic_settings
                .iter()
                .find(|r| r.id.eq_ignore_ascii_case(id))
                .map(|r| r.body.clone())
        })
    };
    let kept = subscription(&webhook).expect("the web hook stays");
    assert_eq!(kept["properties"]["destination"]["endpointType"], "WebHook");
    let kept = setting(&log_analytics).expect("the setting stays");
    assert_eq!(kept["properties"]["workspaceId"], workspace.as_str());
    assert_eq!(kept["properties"].get("eventHubName"), None);
    let rewritten = subscription(&narrowed).expect("ours stays");
    assert_eq!(
        rewritten["properties"]["filter"].get("subjectBeginsWith"),
        None
    );
    handler.sim.reset_counters();
    let outcome = sweep(&handler).await;
    assert_eq!(wiring_findings(&outcome), [], "{outcome}");
    assert_eq!(story::writes(&handler.sim), Vec::<String>::new());
}
