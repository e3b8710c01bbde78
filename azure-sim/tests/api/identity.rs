//! The managed-identity endpoint behaves like App Service's (2019-08-01).

use crate::helpers::spawn;
use azure_sim::{Tenant, UserAssignedSpec, scenario::DEFAULT_SUBSCRIPTION};
use base64::Engine;
use serde_json::Value;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

#[tokio::test]
async fn issues_tokens_for_the_system_identity_with_string_expiry() {
    let uai = UserAssignedSpec::new(DEFAULT_SUBSCRIPTION, "rg-cmk-guard", "id-cmk-guard");
    let tenant = Tenant::compliant_builder()
        .app_user_assigned(uai.clone())
        .build()
        .unwrap();
    let app_principal = tenant.app.principal_id.clone().unwrap();
    let uai_client = tenant.app.user_assigned[0].client_id.clone();
    let t = spawn(tenant).await;
    let info = t.sim.info().clone();
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://vault.azure.net",
        info.identity_endpoint
    );

    let resp = t
        .plain
        .get(&url)
        .header("X-IDENTITY-HEADER", &info.identity_header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["expires_on"].is_string(),
        "expires_on must be a string: {body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://vault.azure.net");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["oid"], app_principal.as_str());
    assert_eq!(c["aud"], "https://vault.azure.net");
    assert_eq!(c["tid"], info.tenant_id.as_str());
    for claim in ["appid", "iat", "nbf", "exp", "iss"] {
        assert!(c.get(claim).is_some(), "missing {claim}");
    }

    let by_client = format!("{url}&client_id={uai_client}");
    let body: Value = t
        .plain
        .get(&by_client)
        .header("X-IDENTITY-HEADER", &info.identity_header)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["oid"],
        uai.principal_id().as_str()
    );
    let by_res = format!("{url}&mi_res_id={}", uai.resource_id);
    let resp = t
        .plain
        .get(&by_res)
        .header("X-IDENTITY-HEADER", &info.identity_header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn rejects_missing_secret_unknown_identity_and_bad_api_version() {
    let t = spawn(Tenant::compliant().unwrap()).await;
    let info = t.sim.info().clone();
    let base = format!(
        "{}?api-version=2019-08-01&resource=https://management.azure.com",
        info.identity_endpoint
    );
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(t.plain.get(&base).send().await.unwrap()), 400);
    assert_eq!(
        status(
            t.plain
                .get(&base)
                .header("X-IDENTITY-HEADER", "wrong")
                .send()
                .await
                .unwrap()
        ),
        401
    );
    let unknown = format!("{base}&client_id=00000000-0000-0000-0000-000000000000");
    assert_eq!(
        status(
            t.plain
                .get(&unknown)
                .header("X-IDENTITY-HEADER", &info.identity_header)
                .send()
                .await
                .unwrap()
        ),
        400
    );
    let old = base.replace("2019-08-01", "2017-09-01");
    assert_eq!(
        status(
            t.plain
                .get(&old)
                .header("X-IDENTITY-HEADER", &info.identity_header)
                .send()
                .await
                .unwrap()
        ),
        400
    );
    let counters = t.sim.counters();
    assert_eq!(counters.operation("Identity_GetToken"), 4);
    t.stop().await;
}
