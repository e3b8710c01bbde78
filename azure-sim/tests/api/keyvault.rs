//! Key Vault data plane: the challenge, real key material, 403 without access, rotation,
//! attribute updates and rotation policies.

use crate::helpers::{VAULT_AUDIENCE, spawn};
use azure_sim::scenario::{DEFAULT_KEY, DEFAULT_VAULT, DEFAULT_WORKSPACE};
use azure_sim::{KeySpec, Tenant};
use base64::Engine;
use reqwest::Method;
use serde_json::json;

const API: &str = "api-version=2025-07-01";

#[tokio::test]
async fn answers_the_challenge_exactly_like_key_vault_then_serves_real_keys() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let url = t.kv_url(DEFAULT_VAULT, &format!("/keys/{DEFAULT_KEY}?{API}"));
    let challenge = t.send(Method::GET, &url, None, None).await;
    assert_eq!(challenge.status, 401);
    let tenant_id = t.sim.info().tenant_id.clone();
    assert_eq!(
        challenge.headers["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer authorization=\"https://login.windows.net/{tenant_id}\", resource=\"https://vault.azure.net\""
        )
    );
    assert_eq!(
        challenge.body,
        json!({"error": {"code": "Unauthorized", "message": "Request is missing a Bearer or PoP token."}})
    );
    let arm_token = t.sim.app_token("https://management.azure.com");
    assert_eq!(
        t.send(Method::GET, &url, Some(&arm_token), None)
            .await
            .status,
        401
    );

    let r = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}?{API}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(r.body["key"]["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(azure_sim::material::modulus_bits(&n), 3072);
    assert_eq!(r.body["key"]["e"], "AQAB");
    assert!(
        r.body["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with("https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/")
    );
    assert!(r.body["attributes"]["exp"].is_i64());
    assert_eq!(r.headers["x-ms-keyvault-region"], "westeurope");
    let c = t.sim.counters();
    assert_eq!(c.operation_status("GetKey", 401), 2);
    assert_eq!(c.operation_status("GetKey", 200), 1);
    t.stop().await;
}

#[tokio::test]
async fn ec_keys_and_missing_keys() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| {
            v.keys.push(KeySpec::ec("ec-key", "P-384"))
        })
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let ec = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/ec-key?{API}"),
            None,
        )
        .await;
    assert_eq!(ec.body["key"]["crv"], "P-384");
    assert!(ec.body["key"].get("n").is_none());
    let missing = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/nope?{API}"),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "KeyNotFound");
    let no_version = t.kv(Method::GET, DEFAULT_VAULT, "/keys/ec-key", None).await;
    assert_eq!(no_version.status, 400);
    t.stop().await;
}

#[tokio::test]
async fn forbids_callers_without_access_under_both_permission_models() {
    let tenant = Tenant::compliant_builder()
        .with_workspace(DEFAULT_WORKSPACE, |_| {})
        .vault(
            azure_sim::VaultSpec::new(azure_sim::scenario::DEFAULT_SUBSCRIPTION, "rg-ap", "kv-ap")
                .access_policy_model()
                .access_policy("22222222-2222-4222-8222-222222222222", &["get", "wrapKey"])
                .key(KeySpec::rsa("k", 2048)),
        )
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let stranger = t
        .sim
        .token_for("33333333-3333-4333-8333-333333333333", VAULT_AUDIENCE);
    let rbac = t
        .send(
            Method::GET,
            &t.kv_url(DEFAULT_VAULT, &format!("/keys/{DEFAULT_KEY}?{API}")),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(rbac.status, 403);
    assert_eq!(rbac.body["error"]["innererror"]["code"], "ForbiddenByRbac");

    let limited = t
        .sim
        .token_for("22222222-2222-4222-8222-222222222222", VAULT_AUDIENCE);
    let get = t
        .send(
            Method::GET,
            &t.kv_url("kv-ap", &format!("/keys/k?{API}")),
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(get.status, 200);
    let rotate = t
        .send(
            Method::POST,
            &t.kv_url("kv-ap", &format!("/keys/k/rotate?{API}")),
            Some(&limited),
            None,
        )
        .await;
    assert_eq!(rotate.status, 403);
    assert_eq!(rotate.body["error"]["innererror"]["code"], "AccessDenied");
    assert!(
        rotate.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not have keys rotate permission")
    );
    t.stop().await;
}

#[tokio::test]
async fn rotate_update_and_rotation_policy() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let before = t.sim.tenant(|tn| {
        tn.vault(DEFAULT_VAULT)
            .unwrap()
            .key(DEFAULT_KEY)
            .unwrap()
            .versions
            .len()
    });
    let rotated = t
        .kv(
            Method::POST,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotate?{API}"),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let kid = rotated.body["key"]["kid"].as_str().unwrap().to_owned();
    let version = kid.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        t.sim.tenant(|tn| tn
            .vault(DEFAULT_VAULT)
            .unwrap()
            .key(DEFAULT_KEY)
            .unwrap()
            .versions
            .len()),
        before + 1
    );
    let event = t.sim.events().pop().unwrap();
    assert_eq!(
        event["eventType"],
        "Microsoft.KeyVault.KeyNewVersionCreated"
    );
    assert_eq!(event["data"]["Version"], version.as_str());
    assert_eq!(event["subject"], DEFAULT_KEY);

    let patch = json!({"attributes": {"enabled": false, "exp": 662716800}});
    let updated = t
        .kv(
            Method::PATCH,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/{version}?{API}"),
            Some(patch),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["attributes"]["enabled"], false);
    assert_eq!(updated.body["attributes"]["exp"], 662716800);
    let disabled = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/{version}?{API}"),
            None,
        )
        .await;
    assert_eq!(disabled.status, 403);

    let policy = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "rotate"}}], "attributes": {"expiryTime": "P2Y"}});
    let put = t
        .kv(
            Method::PUT,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotationpolicy?{API}"),
            Some(policy),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["lifetimeActions"][0]["action"]["type"], "Rotate");
    let get = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotationpolicy?{API}"),
            None,
        )
        .await;
    assert_eq!(get.body["attributes"]["expiryTime"], "P2Y");
    let too_short = json!({"lifetimeActions": [], "attributes": {"expiryTime": "P7D"}});
    assert_eq!(
        t.kv(
            Method::PUT,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotationpolicy?{API}"),
            Some(too_short)
        )
        .await
        .status,
        400
    );

    let versions = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/versions?{API}&maxresults=1"),
            None,
        )
        .await;
    assert_eq!(versions.body["value"].as_array().unwrap().len(), 1);
    let next = versions.body["nextLink"].as_str().unwrap();
    assert!(next.contains(":443/keys/"), "{next}");
    t.stop().await;
}

#[tokio::test]
async fn missing_or_deleted_vault_hosts_answer_404() {
    let tenant = Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| v.deleted = true)
        .build()
        .unwrap();
    let t = spawn(tenant).await;
    let r = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}?{API}"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "VaultNotFound");
    t.stop().await;
}
