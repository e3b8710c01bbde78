use super::*;
use serde_json::json;

const SUB: &str = "5f9a3c2e-1b7d-4e8a-9c6f-2d4b8e1a7c30";

fn settings(subscriptions: Option<&[&str]>) -> IntakeSettings {
    crate::intake::test_settings(subscriptions)
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keyvault-audit")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn record(operation: &str, status: Value, id: &str) -> Value {
    json!({
        "time": "2026-11-20T09:14:03.5518231Z",
        "resourceId": format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-KEYS-PROD/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-CMK-PROD", SUB.to_uppercase()),
        "operationName": operation, "category": "AuditEvent",
        "resultType": "Success", "resultSignature": "Forbidden", "resultDescription": "",
        "callerIpAddress": "10.20.30.40",
        "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "9c9bc070-ce9d-5288-a5d0-f9dc49f2955e", "appid": "3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d"}},
        "properties": {"id": id, "httpStatusCode": status}
    })
}

const KEY: &str =
    "https://kv-cmk-prod.vault.azure.net/keys/cmk-mlw/7c1e5b9a04d34f2c8e6a1b3d5f7a9c0e";

fn batch(records: Vec<Value>) -> AuditBatch {
    AuditBatch::parse(json!([{"records": records}]), &settings(None)).unwrap()
}

#[test]
fn the_host_request_fixture_reads_as_one_vault_with_two_changes_and_a_wrap() {
    let request = fixture("host-request.eventHubTrigger.many.json");
    let batch =
        AuditBatch::parse(request["Data"]["messages"].clone(), &settings(Some(&[SUB]))).unwrap();
    assert_eq!((batch.messages, batch.records), (2, 6));
    assert_eq!(batch.vaults.len(), 1);
    let vault = &batch.vaults[0];
    assert_eq!(vault.vault.name(), "KV-CMK-PROD");
    let changes: Vec<&str> = vault.changes.iter().map(|c| c.operation.as_str()).collect();
    assert_eq!(changes, ["KeyUpdate", "KeyRotationPolicySet", "VaultPatch"]);
    assert_eq!(vault.changes[1].key.as_ref().unwrap().name(), "cmk-mlw");
    assert_eq!(vault.changes[2].key, None);
    assert_eq!(
        vault.uses.len(),
        1,
        "the wrap is a use; the successful KeyGet is not"
    );
    assert_eq!(vault.uses[0].operation, UseOperation::Wrap);
    assert!(!vault.has_failures());
    assert_eq!(vault.only_key(), None, "the vault patch names no key");
    assert_eq!(batch.ignored.get("SecretList"), Some(&1));
    assert_eq!(batch.ignored.get("KeyGet"), Some(&1));
    assert_eq!(batch.rejected_count, 0);
}

#[test]
fn a_forbidden_unwrap_is_a_failed_use_naming_caller_operation_and_result() {
    let message = fixture("derived.KeyUnwrap.forbidden.json");
    let batch = AuditBatch::parse(json!([message.to_string()]), &settings(None)).unwrap();
    let vault = &batch.vaults[0];
    assert!(vault.changes.is_empty());
    let key_use = &vault.uses[0];
    assert!(key_use.failed());
    assert_eq!(key_use.status, 403);
    assert_eq!(key_use.operation.as_str(), "unwrapKey");
    assert_eq!(key_use.key.name(), "cmk-mlw");
    assert!(
        key_use.result.contains("not permitted"),
        "{}",
        key_use.result
    );
    let caller = key_use.caller.to_string();
    assert!(
        caller.contains("application 3a1b5c7d-9e2f-4a6b-8c0d-1e3f5a7b9c2d")
            && caller.contains("from 10.20.30.40"),
        "{caller}"
    );
    assert_eq!(vault.only_key().map(KeyUrl::name), Some("cmk-mlw"));
}

#[test]
fn noise_is_counted_and_nothing_else() {
    for name in ["derived.SecretGet.json", "documented-example.VaultGet.json"] {
        let batch = AuditBatch::parse(json!([fixture(name)]), &settings(None)).unwrap();
        assert!(batch.vaults.is_empty(), "{name}");
        assert_eq!(batch.ignored.values().sum::<usize>(), 1, "{name}");
        assert!(
            batch.summary().contains("cannot change a CMK chain"),
            "{name}"
        );
    }
}

#[test]
fn what_counts_as_a_failed_use() {
    for (status, failed) in [
        (json!(403), true),
        (json!("404"), true),
        (json!(400), true),
        (json!(401), false),
        (json!(429), false),
        (json!(500), false),
        (json!(200), false),
    ] {
        let batch = batch(vec![record("KeyUnwrap", status.clone(), KEY)]);
        assert_eq!(batch.vaults[0].uses[0].failed(), failed, "{status}");
    }
}

#[test]
fn failed_changes_changed_nothing_and_odd_status_forms_are_read() {
    let batch = batch(vec![
        record("KeyUpdate", json!(403), KEY),
        record("keyupdate", json!("200"), KEY),
    ]);
    assert_eq!(batch.vaults[0].changes.len(), 1);
    assert_eq!(batch.ignored.get("KeyUpdate (failed)"), Some(&1));
}

#[test]
fn hostile_records_are_refused_one_by_one_and_the_batch_goes_on() {
    let mut bad_status = record("KeyUnwrap", json!(70000), KEY);
    bad_status["category"] = json!("AuditEvent");
    let batch = AuditBatch::parse(
        json!([
            "not json",
            {"no": "records"},
            {"records": [
                "a string",
                {"operationName": "KeyUpdate", "properties": {"httpStatusCode": 200}},
                record("KeyUnwrap", json!(403), "https://kv-cmk-prod.vault.evil.example/keys/cmk-mlw"),
                record("KeyUnwrap", json!(403), "https://other-kv.vault.azure.net/keys/cmk-mlw"),
                record("KeyUnwrap", json!(403), "https://kv-cmk-prod.vault.azure.net/secrets/s"),
                bad_status,
                record("KeyUnwrap", json!(403), KEY),
            ]}
        ]),
        &settings(None),
    )
    .unwrap();
    assert_eq!(batch.rejected_count, 8);
    assert_eq!(batch.rejected.len(), 5, "only the first few are named");
    assert_eq!(batch.vaults.len(), 1, "the good record still counts");
    let summary = batch.summary();
    assert!(summary.contains("8 refused"), "{summary}");
    assert!(!summary.contains('\n'));
}

#[test]
fn records_of_other_subscriptions_are_refused() {
    let batch = AuditBatch::parse(
        json!([{"records": [record("KeyUpdate", json!(200), KEY)]}]),
        &settings(Some(&["00000000-0000-0000-0000-000000000001"])),
    )
    .unwrap();
    assert!(batch.vaults.is_empty());
    assert!(batch.rejected[0].contains("not in CMKGUARD_SUBSCRIPTIONS"));
}

#[test]
fn a_batch_is_bounded() {
    let too_many = Value::Array(vec![json!({"records": []}); MAX_MESSAGES + 1]);
    assert!(AuditBatch::parse(too_many, &settings(None)).is_err());
    assert!(AuditBatch::parse(Value::Null, &settings(None)).is_err());
    let records = vec![record("KeyUpdate", json!(200), KEY); MAX_RECORDS + 3];
    let batch = batch(records);
    assert_eq!(batch.records, MAX_RECORDS);
    assert_eq!(batch.skipped, 3);
}

#[test]
fn key_paths_of_every_key_operation() {
    for (uri, expected) in [
        (
            "https://kv.vault.azure.net/keys/k?api-version=7.5",
            Some("https://kv.vault.azure.net/keys/k"),
        ),
        (
            "https://kv.vault.azure.net/keys/k/rotationpolicy?api-version=7.5",
            Some("https://kv.vault.azure.net/keys/k"),
        ),
        (
            "https://kv.vault.azure.net/keys/k/rotate",
            Some("https://kv.vault.azure.net/keys/k"),
        ),
        (
            "https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef/unwrapkey",
            Some("https://kv.vault.azure.net/keys/k/0123456789abcdef0123456789abcdef"),
        ),
        (
            "https://kv.vault.azure.net/keys/k/wrapkey?api-version=7.5",
            Some("https://kv.vault.azure.net/keys/k"),
        ),
        (
            "https://kv.vault.azure.net/keys/k/create",
            Some("https://kv.vault.azure.net/keys/k"),
        ),
        ("https://kv.vault.azure.net/keys/restore", None),
        ("https://kv.vault.azure.net/", None),
        ("https://kv.vault.azure.net/secrets/s", None),
        ("http://kv.vault.azure.net/keys/k", None),
    ] {
        assert_eq!(key_path(uri).as_deref(), expected, "{uri}");
    }
}

#[test]
fn one_caller_and_one_key() {
    let batch = batch(vec![
        record("KeyUpdate", json!(200), KEY),
        record("KeyUnwrap", json!(403), KEY),
    ]);
    let vault = &batch.vaults[0];
    assert_eq!(
        vault.only_caller(),
        Some("9c9bc070-ce9d-5288-a5d0-f9dc49f2955e")
    );
    assert_eq!(vault.only_key().map(KeyUrl::name), Some("cmk-mlw"));
    assert!(vault.latest().is_some());
}

#[test]
fn a_message_encoded_as_text_twice_is_read_and_deeper_nesting_is_refused() {
    let message = json!({"records": [record("KeyUpdate", json!(200), KEY)]});
    let twice = Value::String(Value::String(message.to_string()).to_string());
    let batch = AuditBatch::parse(json!([twice]), &settings(None)).unwrap();
    assert_eq!(batch.vaults.len(), 1);
    let mut deep = message;
    for _ in 0..4 {
        deep = Value::String(deep.to_string());
    }
    let batch = AuditBatch::parse(json!([deep]), &settings(None)).unwrap();
    assert_eq!(batch.rejected_count, 1);
}

#[test]
fn uses_by_cmk_guard_itself_can_be_left_out() {
    let mut batch = batch(vec![record("KeyUnwrap", json!(403), KEY)]);
    batch.drop_uses_by("9C9BC070-CE9D-5288-A5D0-F9DC49F2955E");
    assert!(batch.vaults.is_empty());
    assert_eq!(batch.ignored.get("cmk-guard's own key calls"), Some(&1));
    let mut other = self::batch(vec![record("KeyUnwrap", json!(403), KEY)]);
    other.drop_uses_by("00000000-0000-0000-0000-000000000000");
    assert_eq!(other.vaults.len(), 1);
}

#[test]
fn many_vaults_in_one_batch_are_merged_in_linear_time_and_kept_apart() {
    let records: Vec<Value> = (0..3000)
        .map(|i| {
            let mut r = record("KeyUpdate", json!(200), KEY);
            r["resourceId"] = json!(format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-{}",
                i % 1500
            ));
            r["properties"]["id"] =
                json!(format!("https://kv-{}.vault.azure.net/keys/k", i % 1500));
            r
        })
        .collect();
    let batch = batch(records);
    assert_eq!(batch.vaults.len(), 1500);
    assert!(batch.vaults.iter().all(|a| a.changes.len() == 2));
}
