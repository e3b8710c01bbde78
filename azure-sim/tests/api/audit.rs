//! Key Vault `AuditEvent` records: what the data plane, ARM vault writes, the operator's changes
//! and services' key uses log, in the shape of `tests/fixtures/keyvault-audit/`.

use crate::helpers::{TestSim, spawn};
use azure_sim::scenario::{DEFAULT_KEY, DEFAULT_VAULT, DEFAULT_WORKSPACE};
use azure_sim::{Tenant, audit};
use reqwest::Method;
use serde_json::{Value, json};

const API: &str = "api-version=2025-07-01";
const OID: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
const UPN: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";

/// The fields every record has, with their JSON types, as in the fixtures.
fn assert_record_shape(record: &Value) {
    for field in [
        "time",
        "resourceId",
        "operationName",
        "operationVersion",
        "category",
        "resultType",
        "resultSignature",
        "resultDescription",
        "durationMs",
        "callerIpAddress",
        "correlationId",
    ] {
        assert!(record[field].is_string(), "{field} in {record}");
    }
    assert!(record["identity"]["claim"].is_object(), "{record}");
    for field in ["clientInfo", "requestUri", "id"] {
        assert!(
            record["properties"][field].is_string(),
            "{field} in {record}"
        );
    }
    assert!(record["properties"]["httpStatusCode"].is_u64(), "{record}");
    assert_eq!(record["category"], "AuditEvent");
    let resource = record["resourceId"].as_str().unwrap();
    assert_eq!(resource, resource.to_ascii_uppercase());
}

/// `(operationName, httpStatusCode)` of each record.
fn summary(records: &[Value]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|r| {
            (
                r["operationName"].as_str().unwrap_or_default().to_owned(),
                r["properties"]["httpStatusCode"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn workspace_principal(t: &TestSim) -> String {
    t.sim.tenant(|tenant| {
        tenant
            .workspace(DEFAULT_WORKSPACE)
            .and_then(|w| w.system_principal_id.clone())
            .expect("the default workspace has a system identity")
    })
}

#[tokio::test]
async fn the_data_plane_logs_the_challenge_and_each_call_with_its_status() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let url = t.kv_url(DEFAULT_VAULT, &format!("/keys/{DEFAULT_KEY}?{API}"));
    assert_eq!(t.send(Method::GET, &url, None, None).await.status, 401);
    let key = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}?{API}"),
            None,
        )
        .await;
    assert_eq!(key.status, 200, "{}", key.body);
    let list = t
        .kv(Method::GET, DEFAULT_VAULT, &format!("/keys?{API}"), None)
        .await;
    assert_eq!(list.status, 200);
    let missing = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/nope?{API}"),
            None,
        )
        .await;

    let records = t.sim.drain_audit();
    assert_eq!(
        summary(&records),
        [
            ("KeyGet".to_owned(), 401),
            ("KeyGet".to_owned(), 200),
            ("KeyList".to_owned(), 200),
            ("KeyGet".to_owned(), u64::from(missing.status.as_u16())),
        ]
    );
    records.iter().for_each(assert_record_shape);
    let challenge = &records[0];
    assert_eq!(challenge["resultSignature"], "Unauthorized");
    assert_eq!(challenge["identity"]["claim"], json!({}));
    assert_eq!(
        challenge["resultDescription"],
        "Request is missing a Bearer or PoP token."
    );
    let get = &records[1];
    let app = t
        .sim
        .tenant(|tenant| tenant.app.principal_id.clone().unwrap());
    assert_eq!(get["identity"]["claim"][OID], app.as_str());
    assert_eq!(get["properties"]["id"], key.body["key"]["kid"]);
    assert_eq!(get["operationVersion"], "2025-07-01");
    assert_eq!(
        (get["resultType"].as_str(), get["resultSignature"].as_str()),
        (Some("Success"), Some("OK"))
    );
    let vault_id = t
        .sim
        .tenant(|tenant| tenant.vault(DEFAULT_VAULT).unwrap().id());
    assert_eq!(get["resourceId"], vault_id.to_ascii_uppercase().as_str());
    assert!(
        get["properties"]["requestUri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/keys/{DEFAULT_KEY}?{API}"))
    );
    assert!(t.sim.audit_records().is_empty(), "drained");
    t.stop().await;
}

#[tokio::test]
async fn a_service_use_fails_once_its_role_assignment_is_removed() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let principal = workspace_principal(&t);
    let admin = t.sim.admin();
    let unwrap = || {
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "unwrapKey", &principal)
            .unwrap()
    };
    assert_eq!(unwrap(), 200);
    let assignment = t.sim.tenant(|tenant| {
        tenant
            .role_assignments
            .iter()
            .find(|a| a.principal_id == principal)
            .map(|a| a.name.clone())
            .expect("the workspace identity holds a role on the vault")
    });
    admin.remove_role_assignment(&assignment).unwrap();
    assert_eq!(unwrap(), 403);

    let records = t.sim.drain_audit();
    assert_eq!(
        summary(&records),
        [("KeyUnwrap".to_owned(), 200), ("KeyUnwrap".to_owned(), 403)]
    );
    records.iter().for_each(assert_record_shape);
    let (ok, refused) = (&records[0], &records[1]);
    assert_eq!(refused["identity"]["claim"][OID], principal.as_str());
    assert!(
        refused["identity"]["claim"].get(UPN).is_none(),
        "a service, not a person"
    );
    assert_eq!(refused["properties"]["clientInfo"], audit::SERVICE_CLIENT);
    assert_eq!(refused["resultSignature"], "Forbidden");
    let why = refused["resultDescription"].as_str().unwrap();
    assert!(
        why.contains("Microsoft.KeyVault/vaults/keys/unwrap/action"),
        "{why}"
    );
    // Both name the version in use, as the workspace's key identifier does.
    let version = t.sim.tenant(|tenant| {
        tenant
            .vault(DEFAULT_VAULT)
            .unwrap()
            .key(DEFAULT_KEY)
            .unwrap()
            .latest()
            .unwrap()
            .version
            .clone()
    });
    let kid = format!("https://{DEFAULT_VAULT}.vault.azure.net/keys/{DEFAULT_KEY}/{version}");
    assert_eq!(ok["properties"]["id"], kid.as_str());
    assert_eq!(refused["properties"]["id"], kid.as_str());
    assert_eq!(
        refused["properties"]["requestUri"],
        format!("{kid}/unwrapkey?api-version={}", audit::DATA_PLANE_VERSION).as_str()
    );
    t.stop().await;
}

#[tokio::test]
async fn on_an_access_policy_vault_removing_the_policy_refuses_the_use_and_logs_the_change() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| v.rbac = Some(false))
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let principal = workspace_principal(&t);
    let admin = t.sim.admin();
    assert_eq!(
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "wrapKey", &principal)
            .unwrap(),
        200
    );
    admin
        .set_access_policy(DEFAULT_VAULT, &principal, &["get".to_owned()])
        .unwrap();
    assert_eq!(
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "wrapKey", &principal)
            .unwrap(),
        403
    );
    assert_eq!(
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "get", &principal)
            .unwrap(),
        200
    );

    let records = t.sim.drain_audit();
    assert_eq!(
        summary(&records),
        [
            ("KeyWrap".to_owned(), 200),
            ("VaultPatch".to_owned(), 200),
            (
                "VaultAccessPolicyChangedEventGridNotification".to_owned(),
                200
            ),
            ("KeyWrap".to_owned(), 403),
            ("KeyGet".to_owned(), 200),
        ]
    );
    records.iter().for_each(assert_record_shape);
    let change = &records[1];
    let operator = t.sim.operator();
    assert_eq!(
        change["identity"]["claim"][OID],
        operator.object_id.as_str()
    );
    assert_eq!(change["identity"]["claim"][UPN], audit::OPERATOR_UPN);
    assert_eq!(
        change["properties"]["id"],
        format!("https://{DEFAULT_VAULT}.vault.azure.net/").as_str()
    );
    let why = records[3]["resultDescription"].as_str().unwrap();
    assert!(
        why.contains("does not have keys wrapKey permission"),
        "{why}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_disabled_or_missing_version_fails_and_the_operator_change_is_logged() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let principal = workspace_principal(&t);
    let admin = t.sim.admin();
    admin
        .patch_key(DEFAULT_VAULT, DEFAULT_KEY, &json!({"enabled": false}))
        .unwrap();
    assert_eq!(
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "unwrapKey", &principal)
            .unwrap(),
        403
    );
    let missing = format!("{DEFAULT_KEY}/00000000000000000000000000000000");
    assert_eq!(
        admin
            .use_key(DEFAULT_VAULT, &missing, "unwrapKey", &principal)
            .unwrap(),
        404
    );
    assert!(
        admin
            .use_key(DEFAULT_VAULT, DEFAULT_KEY, "sign", &principal)
            .is_err()
    );
    assert!(
        admin
            .use_key("kv-nowhere", DEFAULT_KEY, "get", &principal)
            .is_err()
    );

    let records = t.sim.drain_audit();
    assert_eq!(
        summary(&records),
        [
            ("KeyUpdate".to_owned(), 200),
            ("KeyUnwrap".to_owned(), 403),
            ("KeyUnwrap".to_owned(), 404),
        ]
    );
    records.iter().for_each(assert_record_shape);
    assert_eq!(records[0]["identity"]["claim"][UPN], audit::OPERATOR_UPN);
    assert_eq!(
        records[1]["resultDescription"],
        "Operation unwrapKey is not allowed on a disabled key."
    );
    assert!(
        records[2]["properties"]["id"]
            .as_str()
            .unwrap()
            .ends_with(&missing)
    );
    t.stop().await;
}

#[tokio::test]
async fn the_admin_http_api_uses_keys_and_drains_the_log_as_event_hub_messages() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let principal = workspace_principal(&t);
    let path = format!("/vaults/{DEFAULT_VAULT}/keys/{DEFAULT_KEY}/use");
    for operation in ["wrapKey", "unwrapKey", "get"] {
        let r = t
            .admin(
                Method::POST,
                &path,
                Some(json!({"operation": operation, "principalId": principal})),
            )
            .await;
        assert_eq!(r.body, json!({"status": 200}), "{operation}");
    }
    let bad = t
        .admin(
            Method::POST,
            &path,
            Some(json!({"operation": "sign", "principalId": principal})),
        )
        .await;
    assert_eq!(bad.status, 400);

    let peek = t.admin(Method::GET, "/audit", None).await;
    assert_eq!(peek.body.as_array().map(Vec::len), Some(3));
    let messages = t.sim.audit_messages(2);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(messages[1]["records"][0]["operationName"], "KeyGet");
    assert!(t.sim.audit_records().is_empty(), "audit_messages drains");

    t.sim
        .admin()
        .use_key(DEFAULT_VAULT, DEFAULT_KEY, "get", &principal)
        .unwrap();
    let drained = t.admin(Method::GET, "/audit?drain=true", None).await;
    assert_eq!(drained.body.as_array().map(Vec::len), Some(1));
    assert_eq!(t.admin(Method::GET, "/audit", None).await.body, json!([]));
    t.stop().await;
}

#[tokio::test]
async fn every_change_of_the_operator_and_through_arm_is_logged_by_its_caller() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let admin = t.sim.admin();
    let version = admin.rotate_key(DEFAULT_VAULT, DEFAULT_KEY).unwrap();
    let policy = json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]});
    admin
        .set_rotation_policy(DEFAULT_VAULT, DEFAULT_KEY, &policy)
        .unwrap();
    admin
        .patch_vault(DEFAULT_VAULT, &json!({"publicNetworkAccess": "Enabled"}))
        .unwrap();
    let vault_id = t
        .sim
        .tenant(|tenant| tenant.vault(DEFAULT_VAULT).unwrap().id());
    let patched = t
        .arm(
            Method::PATCH,
            &format!("{vault_id}?api-version=2026-02-01"),
            Some(json!({"tags": {"owner": "ml-platform"}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    admin.delete_key(DEFAULT_VAULT, DEFAULT_KEY).unwrap();
    admin.delete_vault(DEFAULT_VAULT).unwrap();
    admin.recover_vault(DEFAULT_VAULT).unwrap();

    let records = t.sim.drain_audit();
    let operations: Vec<String> = summary(&records).into_iter().map(|(op, _)| op).collect();
    assert_eq!(
        operations,
        [
            "KeyRotate",
            "KeyRotationPolicySet",
            "VaultPatch",
            "VaultPatch",
            "KeyDelete",
            "VaultDelete",
            "VaultRecover"
        ]
    );
    records.iter().for_each(assert_record_shape);
    let operator = t.sim.operator().object_id;
    let app = t
        .sim
        .tenant(|tenant| tenant.app.principal_id.clone().unwrap());
    let callers: Vec<&str> = records
        .iter()
        .map(|r| r["identity"]["claim"][OID].as_str().unwrap())
        .collect();
    let by_operator = operator.as_str();
    assert_eq!(
        callers,
        [
            by_operator,
            by_operator,
            by_operator,
            app.as_str(),
            by_operator,
            by_operator,
            by_operator
        ]
    );
    let kv = format!("https://{DEFAULT_VAULT}.vault.azure.net");
    assert_eq!(
        records[0]["properties"]["id"],
        format!("{kv}/keys/{DEFAULT_KEY}/{version}").as_str()
    );
    assert_eq!(
        records[1]["properties"]["id"],
        format!("{kv}/keys/{DEFAULT_KEY}/rotationpolicy").as_str()
    );
    assert_eq!(records[3]["properties"]["id"], format!("{kv}/").as_str());
    assert_eq!(
        records[3]["properties"]["clientInfo"],
        "azure-resource-manager/2.0"
    );
    assert_eq!(records[3]["operationVersion"], "2026-02-01");
    assert!(
        records
            .iter()
            .all(|r| r["properties"]["httpStatusCode"] == 200)
    );
    t.stop().await;
}
