//! ARM: authentication, api-version, vaults, keys, workspaces, endpoints, role assignments,
//! role definitions, providers, and the events writes record.

use crate::helpers::{ARM, spawn};
use azure_sim::scenario::{
    DEFAULT_KEY, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT, DEFAULT_WORKSPACE,
    OTHER_SUBSCRIPTION,
};
use azure_sim::{Grant, KeySpec, Tenant, VaultSpec, WorkspaceSpec, ids, roles};
use reqwest::Method;
use serde_json::{Value, json};

const KV_API: &str = "api-version=2026-02-01";

fn vault_path(name: &str) -> String {
    format!(
        "{}?{KV_API}",
        ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, name)
    )
}

#[tokio::test]
async fn arm_requires_a_management_token_and_an_api_version() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let url = t.arm_url(&vault_path(DEFAULT_VAULT));
    let none = t.send(Method::GET, &url, None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["error"]["code"], "AuthenticationFailed");
    assert!(none.headers.contains_key("www-authenticate"));

    let vault_token = t.sim.app_token("https://vault.azure.net");
    let wrong = t.send(Method::GET, &url, Some(&vault_token), None).await;
    assert_eq!(
        wrong.body["error"]["code"],
        "InvalidAuthenticationTokenAudience"
    );

    let forged = t.send(Method::GET, &url, Some("a.b.c"), None).await;
    assert_eq!(forged.body["error"]["code"], "InvalidAuthenticationToken");

    let classic = t.sim.app_token("https://management.core.windows.net/");
    assert_eq!(
        t.send(Method::GET, &url, Some(&classic), None).await.status,
        200
    );

    let no_version = t
        .arm_get(&ids::vault_id(
            DEFAULT_SUBSCRIPTION,
            DEFAULT_RESOURCE_GROUP,
            DEFAULT_VAULT,
        ))
        .await;
    assert_eq!(no_version.status, 400);
    assert_eq!(
        no_version.body["error"]["code"],
        "MissingApiVersionParameter"
    );

    let unknown_sub = t
        .arm_get(&format!(
            "/subscriptions/{OTHER_SUBSCRIPTION}/providers/Microsoft.KeyVault/vaults?{KV_API}"
        ))
        .await;
    assert_eq!(unknown_sub.body["error"]["code"], "SubscriptionNotFound");
    t.stop().await;
}

#[tokio::test]
async fn vault_get_is_case_insensitive_and_reports_absent_flags_as_absent() {
    let tenant = Tenant::compliant_builder()
        .vault(
            VaultSpec::new(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "kv-legacy")
                .purge_protection(None)
                .soft_delete(None)
                .rbac(Some(false)),
        )
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let upper = format!(
        "/SUBSCRIPTIONS/{DEFAULT_SUBSCRIPTION}/resourcegroups/{}/providers/microsoft.keyvault/VAULTS/KV-LEGACY?{KV_API}",
        DEFAULT_RESOURCE_GROUP.to_uppercase()
    );
    let r = t.arm_get(&upper).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "kv-legacy");
    let props = &r.body["properties"];
    assert!(props.get("enablePurgeProtection").is_none());
    assert!(props.get("enableSoftDelete").is_none());
    assert_eq!(props["enableRbacAuthorization"], false);
    assert_eq!(props["vaultUri"], "https://kv-legacy.vault.azure.net");
    let missing = t.arm_get(&vault_path("kv-nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "ResourceNotFound");
    t.stop().await;
}

#[tokio::test]
async fn vault_patch_merges_refuses_disabling_purge_protection_and_records_the_event() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| {
            v.purge_protection = None;
            v.rbac = Some(false);
            v.access_policies
                .push(azure_sim::scenario::AccessPolicySpec {
                    object_id: "11111111-1111-4111-8111-111111111111".into(),
                    keys: vec!["get".into()],
                    ..Default::default()
                });
        })
        .build()
        .unwrap();
    let app = tenant.app.principal_id.clone().unwrap();
    let t = spawn(tenant).await;
    let path = vault_path(DEFAULT_VAULT);
    let refused = t
        .arm(
            Method::PATCH,
            &path,
            Some(json!({"properties": {"enablePurgeProtection": false}})),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("enablePurgeProtection")
    );
    assert!(t.sim.events().is_empty(), "a refused write emits nothing");

    let before = t.arm_get(&path).await.body["properties"]["accessPolicies"]
        .as_array()
        .unwrap()
        .len();
    let ok = t
        .arm(
            Method::PATCH,
            &path,
            Some(json!({"properties": {"enablePurgeProtection": true}})),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["properties"]["enablePurgeProtection"], true);
    assert_eq!(
        ok.body["properties"]["accessPolicies"]
            .as_array()
            .unwrap()
            .len(),
        before,
        "PATCH never wipes access policies"
    );

    let events = t.sim.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["eventType"], "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(
        e["data"]["operationName"],
        "Microsoft.KeyVault/vaults/write"
    );
    assert_eq!(
        e["data"]["claims"]["http://schemas.microsoft.com/identity/claims/objectidentifier"],
        app.as_str()
    );
    assert!(
        e["data"]["resourceUri"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&ids::vault_id(
                DEFAULT_SUBSCRIPTION,
                DEFAULT_RESOURCE_GROUP,
                DEFAULT_VAULT
            ))
    );
    assert_eq!(e["data"]["subscriptionId"], DEFAULT_SUBSCRIPTION);
    assert_eq!(e["topic"], format!("/subscriptions/{DEFAULT_SUBSCRIPTION}"));
    t.stop().await;
}

#[tokio::test]
async fn access_policy_add_merges_and_remove_subtracts() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| v.rbac = Some(false))
        .build()
        .unwrap();
    let principal = tenant
        .workspace(DEFAULT_WORKSPACE)
        .unwrap()
        .cmk_principal_id()
        .unwrap();
    let t = spawn(tenant).await;
    let vault = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT);
    let tenant_id = t.sim.info().tenant_id.clone();
    let entry = |keys: &[&str]| json!({"properties": {"accessPolicies": [{"tenantId": tenant_id, "objectId": principal, "permissions": {"keys": keys}}]}});
    let r = t
        .arm(
            Method::PUT,
            &format!("{vault}/accessPolicies/add?{KV_API}"),
            Some(entry(&["rotate"])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "Microsoft.KeyVault/vaults/accessPolicies");
    let keys = |t: &azure_sim::Sim| {
        t.tenant(|tn| {
            tn.vault(DEFAULT_VAULT)
                .unwrap()
                .access_policies
                .iter()
                .find(|p| p.object_id == principal)
                .unwrap()
                .keys
                .clone()
        })
    };
    assert_eq!(keys(&t.sim), vec!["get", "wrapKey", "unwrapKey", "rotate"]);
    t.arm(
        Method::PUT,
        &format!("{vault}/accessPolicies/remove?{KV_API}"),
        Some(entry(&["unwrapKey"])),
    )
    .await;
    assert_eq!(keys(&t.sim), vec!["get", "wrapKey", "rotate"]);
    let types: Vec<String> = t
        .sim
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.contains(&"Microsoft.KeyVault.VaultAccessPolicyChanged".to_owned()));
    let write = t
        .sim
        .events()
        .into_iter()
        .find(|e| e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess")
        .unwrap();
    assert_eq!(
        write["data"]["operationName"],
        "Microsoft.KeyVault/vaults/accessPolicies/write"
    );
    t.stop().await;
}

#[tokio::test]
async fn keys_through_arm_have_sizes_unix_times_and_rotation_policy() {
    let tenant = Tenant::compliant_builder()
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| {
            k.older_versions
                .push(azure_sim::KeyVersionSpec::expiring_in_days(-3));
        })
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let key = format!(
        "{}/keys/{DEFAULT_KEY}",
        ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT)
    );
    let r = t.arm_get(&format!("{key}?{KV_API}")).await;
    assert_eq!(r.status, 200);
    let p = &r.body["properties"];
    assert_eq!(p["keySize"], 3072);
    assert_eq!(p["kty"], "RSA");
    assert!(p["attributes"]["exp"].is_i64());
    assert_eq!(
        p["rotationPolicy"]["lifetimeActions"][0]["action"]["type"],
        "rotate"
    );
    let versions = t.arm_get(&format!("{key}/versions?{KV_API}")).await;
    let list = versions.body["value"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list[0]["properties"].get("kty").is_none()
            && list[0]["properties"].get("keySize").is_none()
    );
    let old = list[0]["name"].as_str().unwrap();
    let one = t.arm_get(&format!("{key}/versions/{old}?{KV_API}")).await;
    assert_eq!(one.body["type"], "Microsoft.KeyVault/vaults/keys/versions");
    assert!(
        one.body["properties"]["attributes"]["exp"]
            .as_i64()
            .unwrap()
            < azure_sim::clock::now_unix()
    );
    t.stop().await;
}

#[tokio::test]
async fn workspace_get_patch_and_endpoints() {
    let tenant = Tenant::compliant_builder()
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            w.online_endpoints.push("ep-online".into());
            w.batch_endpoints.push("ep-batch".into());
        })
        .vault(
            VaultSpec::new(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "kv-other")
                .key(KeySpec::rsa("k2", 3072)),
        )
        .build()
        .unwrap();
    let new_version = tenant
        .vault(DEFAULT_VAULT)
        .unwrap()
        .key(DEFAULT_KEY)
        .unwrap()
        .latest()
        .unwrap()
        .version
        .clone();
    let t = spawn(tenant).await;
    let ws = format!(
        "{}?api-version=2026-09-01",
        ids::workspace_id(
            DEFAULT_SUBSCRIPTION,
            DEFAULT_RESOURCE_GROUP,
            DEFAULT_WORKSPACE
        )
    );
    let r = t.arm_get(&ws).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["kind"], "Default");
    assert!(r.body["identity"]["principalId"].is_string());
    let enc = &r.body["properties"]["encryption"]["keyVaultProperties"];
    assert!(
        enc["keyIdentifier"]
            .as_str()
            .unwrap()
            .starts_with("https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/")
    );
    assert!(r.body["properties"]["serviceProvisionedResourceGroup"].is_string());

    let other_vault = json!({"properties": {"encryption": {"keyVaultProperties": {"keyIdentifier": "https://kv-other.vault.azure.net/keys/k2"}}}});
    let refused = t.arm(Method::PATCH, &ws, Some(other_vault)).await;
    assert_eq!(refused.status, 400);
    let same = json!({"properties": {"encryption": {"keyVaultProperties": {"keyIdentifier": format!("https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/{new_version}")}}}});
    let ok = t.arm(Method::PATCH, &ws, Some(same)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        t.sim.events()[0]["data"]["operationName"],
        "Microsoft.MachineLearningServices/workspaces/write"
    );

    let base = ids::workspace_id(
        DEFAULT_SUBSCRIPTION,
        DEFAULT_RESOURCE_GROUP,
        DEFAULT_WORKSPACE,
    );
    let online = t
        .arm_get(&format!("{base}/onlineEndpoints?api-version=2026-09-01"))
        .await;
    assert_eq!(online.body["value"][0]["name"], "ep-online");
    let batch = t
        .arm_get(&format!("{base}/batchEndpoints?api-version=2026-09-01"))
        .await;
    assert_eq!(batch.body["value"][0]["name"], "ep-batch");
    t.stop().await;
}

#[tokio::test]
async fn role_assignment_filters_follow_scope_inheritance_and_groups() {
    let tenant = Tenant::compliant_builder()
        .with_workspace(DEFAULT_WORKSPACE, |w| {
            if let Some(c) = w.cmk.as_mut() {
                c.grant = Grant::ViaGroup;
            }
        })
        .workspace(
            WorkspaceSpec::new(DEFAULT_SUBSCRIPTION, "rg-2", "ws-sub-scope")
                .cmk(DEFAULT_VAULT, DEFAULT_KEY)
                .with_cmk(|c| c.grant = Grant::SubscriptionScope),
        )
        .build()
        .unwrap();
    let grouped = tenant
        .workspace(DEFAULT_WORKSPACE)
        .unwrap()
        .cmk_principal_id()
        .unwrap();
    let sub_scoped = tenant
        .workspace("ws-sub-scope")
        .unwrap()
        .cmk_principal_id()
        .unwrap();
    let t = spawn(tenant).await;
    let key_scope = format!(
        "{}/keys/{DEFAULT_KEY}",
        ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT)
    );
    let sim = &t;
    let list = |filter: String| {
        let path = format!(
            "{key_scope}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter={}",
            urlencode(&filter)
        );
        async move { sim.arm_get(&path).await }
    };
    let by_group = list(format!("assignedTo('{grouped}')")).await;
    assert_eq!(by_group.status, 200, "{}", by_group.body);
    let items = by_group.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["properties"]["principalType"], "Group");
    assert!(
        items[0]["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .ends_with(roles::CRYPTO_SERVICE_ENCRYPTION_USER)
    );
    let direct = list(format!("principalId eq '{grouped}'")).await;
    assert!(
        direct.body["value"].as_array().unwrap().is_empty(),
        "the grant is to the group, not the principal"
    );
    let inherited = list(format!("atScope() and assignedTo('{sub_scoped}')")).await;
    assert_eq!(
        inherited.body["value"][0]["properties"]["scope"],
        format!("/subscriptions/{DEFAULT_SUBSCRIPTION}")
    );
    let bad = list("roleDefinitionId eq 'x'".into()).await;
    assert_eq!(bad.status, 400);

    let name = "0d1f7c3a-3c5e-4d6f-9a1b-2c3d4e5f6a7b";
    let body = json!({"properties": {"roleDefinitionId": format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{}", roles::CRYPTO_SERVICE_ENCRYPTION_USER), "principalId": grouped, "principalType": "ServicePrincipal"}});
    let put = t.arm(Method::PUT, &format!("{key_scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version=2022-04-01"), Some(body.clone())).await;
    assert_eq!(put.status, 201, "{}", put.body);
    let dup = t.arm(Method::PUT, &format!("{key_scope}/providers/Microsoft.Authorization/roleAssignments/1d1f7c3a-3c5e-4d6f-9a1b-2c3d4e5f6a7b?api-version=2022-04-01"), Some(body)).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["error"]["code"], "RoleAssignmentExists");
    let event = t.sim.events().pop().unwrap();
    assert_eq!(
        event["data"]["operationName"],
        "Microsoft.Authorization/roleAssignments/write"
    );
    assert!(
        event["data"]["resourceUri"]
            .as_str()
            .unwrap()
            .ends_with(name)
    );
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn role_definitions_providers_deleted_vaults_and_verbatim_resources() {
    let storage_id = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/stcmk"
    );
    let tenant = Tenant::compliant_builder()
        .unregistered_provider(DEFAULT_SUBSCRIPTION, "Microsoft.Search")
        .vault(VaultSpec::new(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "kv-gone").deleted())
        .resource(&storage_id, json!({"location": "westeurope", "properties": {"encryption": {"keySource": "Microsoft.Keyvault"}}}))
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let def = t.arm_get(&format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{}?api-version=2022-04-01", roles::CRYPTO_OFFICER)).await;
    assert_eq!(def.status, 200);
    assert_eq!(
        def.body["properties"]["permissions"][0]["dataActions"][0],
        "Microsoft.KeyVault/vaults/keys/*"
    );
    assert_eq!(
        def.body["properties"]["roleName"],
        "Key Vault Crypto Officer"
    );

    let provider = |ns: &str| {
        format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/{ns}?api-version=2021-04-01")
    };
    assert_eq!(
        t.arm_get(&provider("Microsoft.Search")).await.body["registrationState"],
        "NotRegistered"
    );
    let reg = t.arm(Method::POST, &format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.Search/register?api-version=2021-04-01"), None).await;
    assert_eq!(reg.body["registrationState"], "Registering");
    assert_eq!(
        t.arm_get(&provider("microsoft.search")).await.body["registrationState"],
        "Registered"
    );

    let gone = t.arm_get(&vault_path("kv-gone")).await;
    assert_eq!(gone.status, 404);
    let deleted = t.arm_get(&format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/kv-gone?{KV_API}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["type"], "Microsoft.KeyVault/deletedVaults");

    let storage = t
        .arm_get(&format!("{storage_id}?api-version=2026-09-01"))
        .await;
    assert_eq!(storage.status, 200);
    assert_eq!(storage.body["type"], "Microsoft.Storage/storageAccounts");
    assert_eq!(storage.body["name"], "stcmk");
    let _ = ARM;
    t.stop().await;
}

#[tokio::test]
async fn admin_api_changes_state_and_records_operator_events() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let r = t
        .admin(
            Method::PATCH,
            &format!("/vaults/{DEFAULT_VAULT}"),
            Some(json!({"purgeProtection": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["properties"].get("enablePurgeProtection").is_none());
    let events: Value = t
        .admin(
            Method::GET,
            "/events?type=Microsoft.Resources.ResourceWriteSuccess",
            None,
        )
        .await
        .body;
    let operator = t.sim.tenant(|tn| tn.operator_principal_id.clone());
    assert_eq!(
        events[0]["data"]["claims"]["http://schemas.microsoft.com/identity/claims/objectidentifier"],
        operator.as_str()
    );
    let rotated = t
        .admin(
            Method::POST,
            &format!("/vaults/{DEFAULT_VAULT}/keys/{DEFAULT_KEY}/rotate"),
            None,
        )
        .await;
    assert_eq!(rotated.body["version"].as_str().unwrap().len(), 32);
    let kv_events = t
        .admin(
            Method::GET,
            "/events?type=Microsoft.KeyVault.KeyNewVersionCreated",
            None,
        )
        .await
        .body;
    assert_eq!(kv_events[0]["data"]["Version"], rotated.body["version"]);
    let deleted = t
        .admin(Method::DELETE, &format!("/vaults/{DEFAULT_VAULT}"), None)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(t.arm_get(&vault_path(DEFAULT_VAULT)).await.status, 404);
    let state = t.admin(Method::GET, "/state", None).await.body;
    assert_eq!(state["deletedVaults"].as_array().unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn management_rbac_authorises_reads_writes_and_resource_graph_rows() {
    let tenant = Tenant::compliant_builder()
        .no_app_roles()
        .vault(VaultSpec::new(OTHER_SUBSCRIPTION, "rg-far", "kv-far").key(KeySpec::rsa("k", 2048)))
        .build()
        .unwrap();
    let app = tenant.app.principal_id.clone().unwrap();
    let tenant = {
        let mut t = tenant;
        t.role_assignments.push(azure_sim::model::RoleAssignment {
            name: "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
            scope: format!("/subscriptions/{DEFAULT_SUBSCRIPTION}"),
            role_definition_guid: roles::READER.into(),
            principal_id: app.clone(),
            principal_type: "ServicePrincipal".into(),
            condition: None,
            created: 0,
            created_by: "test".into(),
        });
        t
    };
    let t = spawn(tenant).await;
    let read = t.arm_get(&vault_path(DEFAULT_VAULT)).await;
    assert_eq!(read.status, 200);
    let write = t
        .arm(
            Method::PATCH,
            &vault_path(DEFAULT_VAULT),
            Some(json!({"properties": {"enablePurgeProtection": true}})),
        )
        .await;
    assert_eq!(write.status, 403);
    assert_eq!(write.body["error"]["code"], "AuthorizationFailed");
    assert!(
        write.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.KeyVault/vaults/write")
    );
    let far = t
        .arm_get(&format!(
            "{}?{KV_API}",
            ids::vault_id(OTHER_SUBSCRIPTION, "rg-far", "kv-far")
        ))
        .await;
    assert_eq!(far.status, 403, "no role in the other subscription");
    let graph = t
        .arm(Method::POST, "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01", Some(json!({"query": "resources | where type =~ 'microsoft.keyvault/vaults' | project id, name"})))
        .await;
    let names: Vec<&str> = graph.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![DEFAULT_VAULT],
        "Resource Graph shows only what the caller can read"
    );
    let definition = t
        .arm_get(&format!(
            "/providers/Microsoft.Authorization/roleDefinitions/{}?api-version=2022-04-01",
            roles::READER
        ))
        .await;
    assert_eq!(definition.status, 200);
    t.stop().await;
}

#[tokio::test]
async fn async_workspace_updates_answer_202_with_a_location_to_poll() {
    let mut tenant = Tenant::compliant().unwrap();
    tenant.async_workspace_updates = true;
    let t = spawn(tenant).await;
    let ws = format!(
        "{}?api-version=2026-09-01",
        ids::workspace_id(
            DEFAULT_SUBSCRIPTION,
            DEFAULT_RESOURCE_GROUP,
            DEFAULT_WORKSPACE
        )
    );
    let accepted = t
        .arm(
            Method::PATCH,
            &ws,
            Some(json!({"properties": {"description": "patched"}})),
        )
        .await;
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.headers["retry-after"], "1");
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let path = location.strip_prefix(ARM).unwrap().to_owned();
    assert_eq!(t.arm_get(&path).await.status, 202);
    let done = t.arm_get(&path).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["properties"]["description"], "patched");
    t.stop().await;
}

#[tokio::test]
async fn rust_admin_api_drives_stories() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let admin = t.sim.admin();
    admin
        .patch_workspace(
            DEFAULT_WORKSPACE,
            &json!({"onlineEndpoints": ["ep1", "ep2"]}),
        )
        .unwrap();
    admin
        .set_provider_state(
            DEFAULT_SUBSCRIPTION,
            "Microsoft.DocumentDB",
            "NotRegistered",
        )
        .unwrap();
    let name = admin
        .add_role_assignment(&azure_sim::RoleAssignmentSpec::new(
            &format!("/subscriptions/{DEFAULT_SUBSCRIPTION}"),
            "Key Vault Reader",
            "77777777-7777-4777-8777-777777777777",
        ))
        .unwrap();
    admin.remove_role_assignment(&name).unwrap();
    admin
        .patch_key(
            DEFAULT_VAULT,
            DEFAULT_KEY,
            &json!({"expiresInDays": 3, "enabled": false}),
        )
        .unwrap();
    assert_eq!(
        admin.patch_vault("kv-nope", &json!({})).unwrap_err().status,
        404
    );
    let base = ids::workspace_id(
        DEFAULT_SUBSCRIPTION,
        DEFAULT_RESOURCE_GROUP,
        DEFAULT_WORKSPACE,
    );
    assert_eq!(
        t.arm_get(&format!("{base}/onlineEndpoints?api-version=2026-09-01"))
            .await
            .body["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let provider = t.arm_get(&format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.DocumentDB?api-version=2021-04-01")).await;
    assert_eq!(provider.body["registrationState"], "NotRegistered");
    let key = t.sim.tenant(|tn| {
        tn.vault(DEFAULT_VAULT)
            .unwrap()
            .key(DEFAULT_KEY)
            .unwrap()
            .latest()
            .unwrap()
            .clone()
    });
    assert!(!key.enabled);
    assert!(key.exp.unwrap() - azure_sim::clock::now_unix() <= 3 * azure_sim::clock::DAY);
    let kinds: Vec<String> = t
        .sim
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "Microsoft.Resources.ResourceWriteSuccess",
            "Microsoft.Resources.ResourceActionSuccess",
            "Microsoft.Resources.ResourceWriteSuccess",
            "Microsoft.Resources.ResourceDeleteSuccess",
        ]
    );
    t.stop().await;
}

#[tokio::test]
async fn deleting_a_workspace_removes_it_from_arm_and_resource_graph_and_records_the_event() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let ws = ids::workspace_id(
        DEFAULT_SUBSCRIPTION,
        DEFAULT_RESOURCE_GROUP,
        DEFAULT_WORKSPACE,
    );
    let path = format!("{ws}?api-version=2026-09-01");
    let graph = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01";
    let query = json!({"subscriptions": [DEFAULT_SUBSCRIPTION],
        "query": "resources | where type =~ 'microsoft.machinelearningservices/workspaces' | project id"});
    let listed = |body: &Value| body["totalRecords"].as_u64().unwrap();
    assert_eq!(t.arm_get(&path).await.status, 200);
    assert_eq!(
        listed(&t.arm(Method::POST, graph, Some(query.clone())).await.body),
        1
    );

    let deleted = t
        .admin(
            Method::DELETE,
            &format!("/workspaces/{DEFAULT_WORKSPACE}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let gone = t.arm_get(&path).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["error"]["code"], "ResourceNotFound");
    assert_eq!(
        listed(&t.arm(Method::POST, graph, Some(query)).await.body),
        0
    );
    let events = t.sim.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["eventType"],
        "Microsoft.Resources.ResourceDeleteSuccess"
    );
    assert_eq!(
        events[0]["data"]["operationName"],
        "Microsoft.MachineLearningServices/workspaces/delete"
    );
    assert_eq!(events[0]["subject"], ws.as_str());
    assert_eq!(
        t.admin(
            Method::DELETE,
            &format!("/workspaces/{DEFAULT_WORKSPACE}"),
            None
        )
        .await
        .status,
        404
    );
    t.stop().await;
}
