//! The story most black-box tests tell: one CMK workspace whose vault lacks purge protection
//! (one high finding, `vault.purge-protection`, that a policy may consent to remediate), a
//! person writing the workspace, and the remediation policy that consents. Modes, the loop
//! guard, reliability and telemetry all need exactly this tenant and these events; they live
//! here once so that the tests agree on what "the finding" is, and a change to the simulator's
//! tenant model or to the event's shape is made in one place.
//!
//! The id and event builders also take any subscription, resource group and workspace, for the
//! tests whose tenants hold several workspaces (actions, a deleted workspace, scenarios).

use azure_sim::scenario::TenantBuilder;
use azure_sim::{KeySpec, RecordFilter, Sim, Tenant, VaultSpec, WorkspaceSpec};
use serde_json::{Value, json};

use crate::scratch::Scratch;

/// The subscription of the story (the simulator's default one).
pub const SUB: &str = azure_sim::scenario::DEFAULT_SUBSCRIPTION;
/// Its resource group.
pub const RG: &str = "rg-cmk";
/// The vault without purge protection.
pub const VAULT: &str = "kv-cmk";
/// The workspace's key in that vault (RSA 3072, compliant itself).
pub const KEY: &str = "cmk";
/// The CMK workspace.
pub const WORKSPACE: &str = "ws-cmk";
/// The person who writes the workspace (the caller's object id in the event's claims).
pub const USER: &str = "5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a10";
/// The one finding of the story's tenant: its vault has no purge protection.
pub const FINDING: &str = "vault.purge-protection";

/// Consent to the story's remediation (purge protection, irreversible, hence `irreversible_ok`)
/// and every severity to Teams, none by email: a test that remediates and counts cards needs
/// nothing more.
pub const POLICY: &str = r#"
[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// Writes [`POLICY`] to `policy.toml` in `scratch` and answers its path, for
/// `CMKGUARD_POLICY_FILE` (the handler reads it at start).
pub fn policy_file(scratch: &Scratch) -> String {
    scratch.write("policy.toml", POLICY).display().to_string()
}

/// One CMK workspace whose vault lacks purge protection; everything else complies.
pub fn tenant() -> Tenant {
    Tenant::builder()
        .subscription(SUB)
        .vault(
            VaultSpec::new(SUB, RG, VAULT)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 3072)),
        )
        .workspace(WorkspaceSpec::new(SUB, RG, WORKSPACE).cmk(VAULT, KEY))
        .build()
        .expect("tenant")
}

/// Every severity to Teams, nothing by email, no remediation: for tests that read what alerts say.
pub const TEAMS_ONLY: &str = r#"
[notify]
teams = ["critical", "high", "medium", "low"]
email = []
"#;

/// A CMK workspace with several problems at once: its vault lacks purge protection and its key
/// is too small (RSA 2048).
pub fn several_problems(
    builder: TenantBuilder,
    resource_group: &str,
    vault: &str,
    workspace: &str,
) -> TenantBuilder {
    builder
        .vault(
            VaultSpec::new(SUB, resource_group, vault)
                .purge_protection(None)
                .key(KeySpec::rsa(KEY, 2048)),
        )
        .workspace(WorkspaceSpec::new(SUB, resource_group, workspace).cmk(vault, KEY))
}

/// The story's workspace with [`several_problems`].
pub fn several_problems_tenant() -> Tenant {
    several_problems(Tenant::builder().subscription(SUB), RG, VAULT, WORKSPACE)
        .build()
        .expect("tenant")
}

/// The ARM id of the story's workspace.
pub fn workspace_id() -> String {
    workspace_id_of(SUB, RG, WORKSPACE)
}

/// What Azure emits when a person ([`USER`]) writes the story's workspace.
pub fn workspace_write() -> Value {
    workspace_write_of(SUB, RG, WORKSPACE)
}

/// The ARM id of workspace `name` in `subscription` and `resource_group`.
pub fn workspace_id_of(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
    )
}

/// What Azure emits when a person ([`USER`]) writes workspace `name`: a
/// `ResourceWriteSuccess` with a fresh event id, the caller in the claims.
pub fn workspace_write_of(subscription: &str, resource_group: &str, name: &str) -> Value {
    let ws = workspace_id_of(subscription, resource_group, name);
    json!({
        "id": uuid::Uuid::new_v4().to_string(), "topic": format!("/subscriptions/{subscription}"), "subject": ws,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00Z",
        "data": {"operationName": "Microsoft.MachineLearningServices/workspaces/write", "resourceUri": ws,
                 "subscriptionId": subscription,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": USER}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

/// Key Vault's `KeyNearExpiry` for the story's key. It names no caller and no workspace, so
/// the handler resolves the workspaces through Resource Graph: it exercises every kind of read.
pub fn key_near_expiry() -> Value {
    let version = "4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9";
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}"),
        "subject": KEY, "eventType": "Microsoft.KeyVault.KeyNearExpiry", "eventTime": "2026-11-28T09:20:13.0487719Z",
        "data": {"Id": format!("https://{VAULT}.vault.azure.net/keys/{KEY}/{version}"), "VaultName": VAULT,
                 "ObjectType": "Key", "ObjectName": KEY, "Version": version, "NBF": 1766913611, "EXP": 1798449611},
        "dataVersion": "1", "metadataVersion": "1"
    })
}

/// The writes the handler sent to the simulator, as `operation method path`: anything but
/// reads, Resource Graph queries and token requests (which are POSTs but change nothing). The
/// tests' measure of "Azure was (not) changed".
pub fn writes(sim: &Sim) -> Vec<String> {
    sim.requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| {
            r.method != "GET"
                && r.operation != "ResourceGraph_Resources"
                && r.operation != "Identity_GetToken"
        })
        .map(|r| format!("{} {} {}", r.operation, r.method, r.path))
        .collect()
}
