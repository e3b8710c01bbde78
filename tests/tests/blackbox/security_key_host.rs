//! A workspace whose `keyIdentifier` names a key in another vault than its `keyVaultArmId`:
//! the vault rules would judge the wrong vault, so `guard.visibility` says so — and the other
//! vault, here in a subscription outside the allowlist, gets no request at all (no token).

use azure_sim::scenario::{DEFAULT_SUBSCRIPTION, OTHER_SUBSCRIPTION};
use azure_sim::{Fault, KeySpec, RecordFilter, Tenant, VaultSpec, WorkspaceSpec};
use cmk_guard_blackbox::Handler;
use serde_json::{Value, json};

const RG: &str = "rg-key-host";
const VAULT: &str = "kv-named";
const OTHER_VAULT: &str = "kv-elsewhere";
const KEY: &str = "cmk";
const WORKSPACE: &str = "ws-key-host";

fn workspace_id() -> String {
    format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
    )
}

#[tokio::test]
async fn a_key_in_another_vault_than_key_vault_arm_id_is_a_finding_and_gets_no_request() {
    let tenant = Tenant::builder()
        .subscription(DEFAULT_SUBSCRIPTION)
        .subscription(OTHER_SUBSCRIPTION)
        .vault(VaultSpec::new(DEFAULT_SUBSCRIPTION, RG, VAULT).key(KeySpec::rsa(KEY, 3072)))
        .vault(VaultSpec::new(OTHER_SUBSCRIPTION, RG, OTHER_VAULT).key(KeySpec::rsa(KEY, 3072)))
        .workspace(WorkspaceSpec::new(DEFAULT_SUBSCRIPTION, RG, WORKSPACE).cmk(VAULT, KEY))
        .build()
        .expect("tenant");
    let handler =
        Handler::start_with(tenant, &[("CMKGUARD_SUBSCRIPTIONS", DEFAULT_SUBSCRIPTION)]).await;
    let elsewhere = format!("https://{OTHER_VAULT}.vault.azure.net/keys/{KEY}");
    handler.sim.tenant_mut(|t| {
        let ws = t
            .workspaces
            .iter_mut()
            .find(|w| w.name == WORKSPACE)
            .expect("the workspace");
        ws.encryption
            .as_mut()
            .expect("a CMK workspace")
            .key_identifier = elsewhere.clone();
    });
    // ARM's key without `keySize` (as some api-versions answer): cmk-guard would then ask the
    // data plane for the modulus — but only ever at the vault it read through ARM.
    let named_key = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}/keys/{KEY}"
    );
    let mut sizeless = Fault::on_operation("Keys_Get").status(200);
    sizeless.body = Some(json!({
        "id": named_key, "name": KEY, "type": "Microsoft.KeyVault/vaults/keys",
        "properties": {
            "kty": "RSA", "keyOps": ["wrapKey", "unwrapKey"],
            "attributes": {"enabled": true, "created": 1_700_000_000, "updated": 1_700_000_000,
                           "recoveryLevel": "Recoverable"},
            "keyUri": format!("https://{VAULT}.vault.azure.net/keys/{KEY}"),
            "keyUriWithVersion": format!("https://{VAULT}.vault.azure.net/keys/{KEY}/0123456789abcdef0123456789abcdef")
        }
    }));
    handler.sim.add_fault(sizeless);
    let body = json!({"resource": workspace_id()}).to_string();
    let reply = handler
        .post_chunked("/api/evaluate", body.into_bytes())
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let findings: Vec<Value> = reply.body["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mismatch = findings
        .iter()
        .find(|f| {
            f["rule"] == "guard.visibility"
                && f["observed"]
                    .as_str()
                    .is_some_and(|o| o.contains("is not the key's vault"))
        })
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(mismatch["resource"], elsewhere.as_str());
    let other = OTHER_SUBSCRIPTION.to_ascii_lowercase();
    let reached: Vec<String> = handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| {
            r.host
                .eq_ignore_ascii_case(&format!("{OTHER_VAULT}.vault.azure.net"))
                || r.path.to_ascii_lowercase().contains(&other)
        })
        .map(|r| format!("{} {}{}", r.method, r.host, r.path))
        .collect();
    assert!(reached.is_empty(), "{reached:#?}");
    let faults = handler.sim.faults();
    assert!(
        faults.iter().all(|f| f.hits > 0),
        "the key was read without its size: {faults:?}"
    );
}
