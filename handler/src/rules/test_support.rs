//! A compliant CMK chain that each rule's tests bend one way or another.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::macros::datetime;

use super::{Check, Context, Rule, Status};
use crate::ids::ArmResourceId;
use crate::outcome::Severity;
use crate::policy::Policy;
use crate::snapshot::*;

pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
pub const WORKSPACE_ID: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";
pub const VAULT_ID: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ml-rg/providers/Microsoft.KeyVault/vaults/kv1";
pub const KEY_URL: &str = "https://kv1.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef";
pub const PRINCIPAL: &str = "aaaaaaaa-0000-0000-0000-000000000001";
pub const TENANT: &str = "bbbbbbbb-0000-0000-0000-000000000001";
pub const MANAGED_RG: &str = "azureml-rg-ws1_0123";
pub const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);
pub const DAY: i64 = 86_400;

/// A workspace whose whole chain meets every rule: system identity, access-policy vault with
/// soft delete and purge protection, an enabled RSA-3072 key expiring in a year with a rotation
/// policy, no endpoints, every provider registered.
pub fn compliant_snapshot() -> Snapshot {
    let key = KeyVersion {
        id: format!("{VAULT_ID}/keys/cmk/versions/0123456789abcdef0123456789abcdef"),
        key_name: "cmk".into(),
        version: Some("0123456789abcdef0123456789abcdef".into()),
        kty: Some("RSA".into()),
        key_size: Some(3072),
        enabled: Some(true),
        expires: Some(NOW.unix_timestamp() + 365 * DAY),
        created: Some(NOW.unix_timestamp() - 30 * DAY),
        key_ops: vec!["wrapKey".into(), "unwrapKey".into()],
        key_uri: Some("https://kv1.vault.azure.net/keys/cmk".into()),
        key_uri_with_version: Some(KEY_URL.into()),
        ..KeyVersion::default()
    };
    Snapshot {
        workspace_id: ArmResourceId::parse(WORKSPACE_ID).unwrap(),
        workspace: Read::Found(Workspace {
            id: WORKSPACE_ID.into(),
            name: "ws1".into(),
            kind: Some("Default".into()),
            tags: BTreeMap::new(),
            identity: Some(ManagedIdentity {
                identity_type: Some("SystemAssigned".into()),
                principal_id: Some(PRINCIPAL.into()),
                tenant_id: Some(TENANT.into()),
                user_assigned: Vec::new(),
            }),
            encryption: Some(Encryption {
                status: Some("Enabled".into()),
                key_vault_arm_id: Some(VAULT_ID.into()),
                key_identifier: Some(KEY_URL.into()),
                user_assigned_identity: None,
            }),
            service_provisioned_resource_group: Some(MANAGED_RG.into()),
            ..Workspace::default()
        }),
        vault: Some(Read::Found(Vault {
            id: VAULT_ID.into(),
            name: "kv1".into(),
            tenant_id: Some(TENANT.into()),
            vault_uri: Some("https://kv1.vault.azure.net".into()),
            enable_soft_delete: Some(true),
            soft_delete_retention_days: Some(90),
            enable_purge_protection: Some(true),
            enable_rbac_authorization: Some(false),
            access_policies: vec![AccessPolicy {
                tenant_id: Some(TENANT.into()),
                object_id: PRINCIPAL.into(),
                application_id: None,
                key_permissions: vec!["get".into(), "wrapKey".into(), "unwrapKey".into()],
            }],
            ..Vault::default()
        })),
        deleted_vault: None,
        key: Some(Read::Found(key.clone())),
        latest_key: Some(Read::Found(key)),
        rotation_policy: Some(Read::Found(Some(RotationPolicy {
            expiry_time: Some("P2Y".into()),
            lifetime_actions: vec![LifetimeAction {
                action: "rotate".into(),
                time_after_create: Some("P90D".into()),
                time_before_expiry: None,
            }],
        }))),
        role_assignments: None,
        endpoints: Some(Read::Found(Vec::new())),
        providers: Some(Read::Found(
            REQUIRED_PROVIDERS
                .iter()
                .map(|namespace| ProviderRegistration {
                    namespace: (*namespace).into(),
                    registration_state: Some("Registered".into()),
                })
                .collect(),
        )),
        wiring: None,
    }
}

pub fn context<'a>(snapshot: &'a Snapshot, policy: &'a Policy) -> Context<'a> {
    Context {
        snapshot,
        now: NOW,
        policy,
        trigger: None,
    }
}

/// Runs one rule on a snapshot with the built-in policy.
pub fn run(rule: &Rule, snapshot: &Snapshot) -> Vec<Check> {
    rule.check(&context(snapshot, &Policy::default()))
}

/// The statuses of one rule's checks after bending the compliant snapshot.
pub fn statuses(rule: &Rule, bend: impl Fn(&mut Snapshot)) -> Vec<Status> {
    let mut snapshot = compliant_snapshot();
    bend(&mut snapshot);
    run(rule, &snapshot).into_iter().map(|c| c.status).collect()
}

pub fn failed_read<T>(what: &str, resource: &str) -> Read<T> {
    Read::Failed(ReadFailure {
        what: what.into(),
        resource: resource.into(),
        status: Some(403),
        code: Some("Forbidden".into()),
        message: "access denied".into(),
        transient: false,
    })
}

pub fn workspace_mut(snapshot: &mut Snapshot) -> &mut Workspace {
    match &mut snapshot.workspace {
        Read::Found(workspace) => workspace,
        _ => panic!("the workspace is not found"),
    }
}

pub fn encryption_mut(snapshot: &mut Snapshot) -> &mut Encryption {
    workspace_mut(snapshot).encryption.as_mut().unwrap()
}

pub fn vault_mut(snapshot: &mut Snapshot) -> &mut Vault {
    match &mut snapshot.vault {
        Some(Read::Found(vault)) => vault,
        _ => panic!("the vault is not found"),
    }
}

pub fn key_mut(snapshot: &mut Snapshot) -> &mut KeyVersion {
    match &mut snapshot.key {
        Some(Read::Found(key)) => key,
        _ => panic!("the key is not found"),
    }
}

pub fn no_cmk(snapshot: &mut Snapshot) {
    encryption_mut(snapshot).status = Some("Disabled".into());
}

pub const PASS: Status = Status::Pass;
pub const NA: Status = Status::NotApplicable;
pub const UNKNOWN: Status = Status::Unknown;
pub const CRITICAL: Status = Status::Fail(Severity::Critical);
pub const HIGH: Status = Status::Fail(Severity::High);
pub const MEDIUM: Status = Status::Fail(Severity::Medium);
pub const LOW: Status = Status::Fail(Severity::Low);

/// Bends the compliant snapshot into one test case.
pub type Bend = fn(&mut Snapshot);

/// Table-driven rule tests: each case bends the compliant snapshot and names the statuses the
/// rule must answer, in order.
pub fn assert_cases(rule: &Rule, cases: &[(&str, Bend, &[Status])]) {
    for (name, bend, expected) in cases {
        assert_eq!(statuses(rule, bend), *expected, "case: {name}");
    }
}
