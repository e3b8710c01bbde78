//! Scenario tests: one simulated tenant holding a workspace in every state the CMK rules know,
//! each evaluated through the real binary (`POST /api/evaluate`) with exactly the expected rule
//! ids open — and none on the compliant workspace.

use std::collections::BTreeSet;

use azure_sim::{
    Fault, Grant, KeySpec, KeyVersionSpec, RoleAssignmentSpec, Tenant, TenantBuilder,
    UserAssignedSpec, VaultSpec, VersionPin, WorkspaceSpec,
};
use cmk_guard_blackbox::Handler;
use cmk_guard_blackbox::story;
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const OTHER_SUB: &str = "6a1e9c4b-2f7d-4e8a-b3c5-0d9f8e7a6b21";
const PROVIDERS_SUB: &str = "9d2c7b1e-4a6f-4c3d-8e5b-1f0a2b3c4d5e";
const RG: &str = "rg-scenarios";

/// A compliant vault `kv-{name}` with one compliant key `key`, changed by `vault` and `key`.
fn chain(
    builder: TenantBuilder,
    name: &str,
    vault: impl FnOnce(VaultSpec) -> VaultSpec,
    key: impl FnOnce(KeySpec) -> KeySpec,
    workspace: impl FnOnce(WorkspaceSpec) -> WorkspaceSpec,
) -> TenantBuilder {
    let vault_name = format!("kv-{name}");
    builder
        .vault(vault(VaultSpec::new(SUB, RG, &vault_name)).key(key(KeySpec::rsa("key", 3072))))
        .workspace(workspace(
            WorkspaceSpec::new(SUB, RG, &format!("ws-{name}")).cmk(&vault_name, "key"),
        ))
}

fn same<T>(value: T) -> T {
    value
}

pub(super) fn tenant() -> Tenant {
    let mut b = Tenant::builder().subscription(SUB).subscription(OTHER_SUB);
    b = chain(b, "ok", same, same, same);
    b = chain(b, "purge", |v| v.purge_protection(None), same, same);
    b = chain(b, "softdelete", |v| v.soft_delete(Some(false)), same, same);
    b = chain(b, "expired", same, |k| k.expires_in_days(-3), same);
    b = chain(b, "expiring", same, |k| k.expires_in_days(5), same);
    b = chain(b, "disabled", same, KeySpec::disabled, same);
    b = chain(b, "rsa2048", same, |_| KeySpec::rsa("key", 2048), same);
    b = chain(b, "ec", same, |_| KeySpec::ec("key", "P-256"), same);
    b = chain(b, "noexpiry", same, KeySpec::no_expiry, same);
    b = chain(b, "norotation", same, KeySpec::no_rotation_policy, same);
    b = chain(
        b,
        "pinned",
        same,
        |k| k.older_version(KeyVersionSpec::expiring_in_days(3)),
        |w| w.with_cmk(|c| c.version = VersionPin::Named("oldest".into())),
    );
    b = chain(b, "apnounwrap", VaultSpec::access_policy_model, same, |w| {
        w.with_cmk(|c| c.grant_key_permissions = Some(vec!["get".into(), "wrapKey".into()]))
    });
    b = chain(b, "apok", VaultSpec::access_policy_model, same, same);
    b = chain(b, "norole", same, same, |w| {
        w.with_cmk(|c| c.grant = Grant::None)
    });
    b = chain(b, "group", same, same, |w| {
        w.with_cmk(|c| c.grant = Grant::ViaGroup)
    });
    b = chain(b, "subscriptionrole", same, same, |w| {
        w.with_cmk(|c| c.grant = Grant::SubscriptionScope)
    });
    b = chain(b, "hsm", same, |k| k.hsm(), same);
    b = chain(b, "endpoints", same, same, |w| {
        w.online_endpoint("score").batch_endpoint("nightly")
    });
    b = chain(b, "deletedvault", VaultSpec::deleted, same, same);
    b = chain(b, "forbidden", same, same, same);
    // The encryption identity (a user-assigned identity) lacks access; the system identity has it.
    let uai = UserAssignedSpec::new(SUB, RG, "uai-cmk");
    b = chain(b, "uai", same, same, |w| {
        w.with_cmk(|c| c.grant = Grant::None)
            .user_assigned_encryption_identity(uai.clone())
    });
    let system = WorkspaceSpec::new(SUB, RG, "ws-uai").system_principal_id();
    let vault_id = VaultSpec::new(SUB, RG, "kv-uai").id();
    b = b.role_assignment(RoleAssignmentSpec::new(
        &vault_id,
        "Key Vault Crypto Service Encryption User",
        &system,
    ));
    // A vault in another subscription.
    b = b
        .vault(VaultSpec::new(OTHER_SUB, RG, "kv-othersub").key(KeySpec::rsa("key", 3072)))
        .workspace(
            WorkspaceSpec::new(SUB, RG, "ws-othersub")
                .cmk(&VaultSpec::new(OTHER_SUB, RG, "kv-othersub").id(), "key"),
        );
    // The key the workspace names does not exist.
    b = b
        .vault(VaultSpec::new(SUB, RG, "kv-nokey").key(KeySpec::rsa("other", 3072)))
        .workspace(WorkspaceSpec::new(SUB, RG, "ws-nokey").cmk("kv-nokey", "key"));
    // No CMK at all.
    b = b.workspace(WorkspaceSpec::new(SUB, RG, "ws-nocmk"));
    // A subscription where a required provider is not registered.
    b = b
        .unregistered_provider(PROVIDERS_SUB, "Microsoft.Search")
        .vault(VaultSpec::new(PROVIDERS_SUB, RG, "kv-providers").key(KeySpec::rsa("key", 3072)))
        .workspace(
            WorkspaceSpec::new(PROVIDERS_SUB, RG, "ws-providers").cmk("kv-providers", "key"),
        );
    b.build().expect("scenario tenant")
}

fn workspace_id(subscription: &str, name: &str) -> String {
    story::workspace_id_of(subscription, RG, name)
}

async fn open_rules(
    handler: &Handler,
    subscription: &str,
    name: &str,
) -> (BTreeSet<String>, Value) {
    let body = json!({ "resource": workspace_id(subscription, name) })
        .to_string()
        .into_bytes();
    let reply = handler.post_chunked("/api/evaluate", body).await;
    assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
    let rules = reply.body["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (rules, reply.body)
}

fn set(rules: &[&str]) -> BTreeSet<String> {
    rules.iter().map(|r| (*r).to_owned()).collect()
}

#[tokio::test]
async fn every_state_yields_exactly_its_findings() {
    let handler = Handler::start_with(tenant(), &[]).await;
    handler.sim.add_fault(
        Fault::on_path(
            "GET",
            "/subscriptions/*/resourceGroups/*/providers/Microsoft.KeyVault/vaults/kv-forbidden",
        )
        .status(403),
    );
    let cases: &[(&str, &str, &[&str])] = &[
        (SUB, "ws-ok", &[]),
        (SUB, "ws-apok", &[]),
        (SUB, "ws-group", &[]),
        (SUB, "ws-subscriptionrole", &[]),
        (SUB, "ws-hsm", &[]),
        (SUB, "ws-purge", &["vault.purge-protection"]),
        // Purge protection has no effect without soft delete, so both are open.
        (
            SUB,
            "ws-softdelete",
            &["vault.soft-delete", "vault.purge-protection"],
        ),
        (SUB, "ws-expired", &["key.expiry"]),
        (SUB, "ws-expiring", &["key.expiry"]),
        (SUB, "ws-disabled", &["key.enabled"]),
        (SUB, "ws-rsa2048", &["key.type-size"]),
        (SUB, "ws-ec", &["key.type-size"]),
        (SUB, "ws-noexpiry", &["key.expiry-set"]),
        (SUB, "ws-norotation", &["key.rotation-policy"]),
        (SUB, "ws-pinned", &["key.expiry"]),
        (SUB, "ws-apnounwrap", &["workspace.key-access"]),
        (SUB, "ws-norole", &["workspace.key-access"]),
        (SUB, "ws-uai", &["workspace.key-access"]),
        (SUB, "ws-endpoints", &["workspace.unsupported-endpoints"]),
        (SUB, "ws-othersub", &["workspace.vault-same-subscription"]),
        (SUB, "ws-nokey", &["key.exists"]),
        (SUB, "ws-deletedvault", &["vault.exists"]),
        (SUB, "ws-nocmk", &["workspace.cmk-enabled"]),
        (SUB, "ws-forbidden", &["guard.visibility"]),
        (PROVIDERS_SUB, "ws-providers", &["subscription.providers"]),
    ];
    let mut failures = Vec::new();
    for (subscription, name, expected) in cases {
        let (open, outcome) = open_rules(&handler, subscription, name).await;
        if open != set(expected) {
            failures.push(format!(
                "{name}: expected {expected:?}, got {open:?}\n  {}",
                outcome["findings"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn severities_follow_the_expiry_thresholds() {
    let handler = Handler::start_with(tenant(), &[]).await;
    for (name, severity) in [
        ("ws-expired", "critical"),
        ("ws-expiring", "high"),
        ("ws-pinned", "high"),
    ] {
        let (_, outcome) = open_rules(&handler, SUB, name).await;
        let finding = &outcome["findings"][0];
        assert_eq!(finding["severity"], severity, "{name}: {finding}");
        assert_eq!(finding["state"], "open");
        assert!(
            finding["workspace"]
                .as_str()
                .unwrap_or_default()
                .ends_with(name)
        );
    }
}

#[tokio::test]
async fn a_vault_event_reaches_every_workspace_that_uses_the_vault() {
    let handler = Handler::start_with(tenant(), &[]).await;
    let vault = VaultSpec::new(SUB, RG, "kv-purge").id();
    let event = json!({
        "id": "vault-write-1", "topic": format!("/subscriptions/{SUB}"), "subject": vault,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00Z",
        "data": {"operationName": "Microsoft.KeyVault/vaults/write", "resourceUri": vault, "subscriptionId": SUB},
        "dataVersion": "2", "metadataVersion": "1"
    });
    let reply = handler
        .deliver("OnSubscriptionEvent", "event", &[event])
        .await
        .remove(0);
    let outcome = reply.outcome();
    assert_eq!(
        outcome["workspaces"],
        json!([workspace_id(SUB, "ws-purge")])
    );
    assert_eq!(outcome["findings"][0]["rule"], "vault.purge-protection");
}
