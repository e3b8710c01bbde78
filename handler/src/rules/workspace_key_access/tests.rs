//! `workspace.key-access` verdicts over both permission models.

use super::super::test_support::*;
use super::*;
use crate::snapshot::{
    AccessPolicy, Permission, RoleAssignment, RoleDefinition, UserAssignedIdentity,
};

const UAI: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/ml-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cmk-uai";
const UAI_PRINCIPAL: &str = "cccccccc-0000-0000-0000-000000000001";

fn role(name: &str, data_actions: &[&str], not_data_actions: &[&str]) -> RoleDefinition {
    RoleDefinition {
        id: format!("/providers/Microsoft.Authorization/roleDefinitions/{name}"),
        role_name: Some(name.into()),
        permissions: vec![Permission {
            data_actions: data_actions.iter().map(|s| (*s).into()).collect(),
            not_data_actions: not_data_actions.iter().map(|s| (*s).into()).collect(),
            ..Permission::default()
        }],
    }
}

fn crypto_service_encryption_user() -> RoleDefinition {
    role(
        "Key Vault Crypto Service Encryption User",
        &DATA_ACTIONS,
        &[],
    )
}

fn assignment(scope: &str, definition: Read<RoleDefinition>) -> RoleAssignment {
    RoleAssignment {
        id: format!("{scope}/providers/Microsoft.Authorization/roleAssignments/1"),
        principal_id: PRINCIPAL.into(),
        principal_type: Some("ServicePrincipal".into()),
        scope: scope.into(),
        role_definition_id: "/providers/Microsoft.Authorization/roleDefinitions/x".into(),
        condition: None,
        definition,
    }
}

/// An RBAC vault with the given assignments of the principal.
fn rbac(snapshot: &mut crate::snapshot::Snapshot, assignments: Vec<RoleAssignment>) {
    let vault = vault_mut(snapshot);
    vault.enable_rbac_authorization = Some(true);
    vault.access_policies.clear();
    snapshot.role_assignments = Some(Read::Found(assignments));
}

fn key_scope() -> String {
    format!("{VAULT_ID}/keys/cmk")
}

fn permissions(snapshot: &mut crate::snapshot::Snapshot, keys: &[&str]) {
    vault_mut(snapshot).access_policies[0].key_permissions =
        keys.iter().map(|s| (*s).into()).collect();
}

#[test]
fn access_policy_vaults() {
    assert_cases(
        &RULE,
        &[
            ("get, wrapKey, unwrapKey", |_| {}, &[PASS]),
            ("all, any case", |s| permissions(s, &["ALL"]), &[PASS]),
            (
                "permissions in another case",
                |s| permissions(s, &["GET", "wrapkey", "UnwrapKey"]),
                &[PASS],
            ),
            (
                "split over two entries",
                |s| {
                    permissions(s, &["get"]);
                    let mut second = vault_mut(s).access_policies[0].clone();
                    second.key_permissions = vec!["wrapKey".into(), "unwrapKey".into()];
                    vault_mut(s).access_policies.push(second);
                },
                &[PASS],
            ),
            ("only get", |s| permissions(s, &["get"]), &[CRITICAL]),
            (
                "no entry for the principal",
                |s| vault_mut(s).access_policies[0].object_id = "someone-else".into(),
                &[CRITICAL],
            ),
            (
                "entry for another tenant",
                |s| vault_mut(s).access_policies[0].tenant_id = Some("other-tenant".into()),
                &[CRITICAL],
            ),
            (
                "compound identity entry",
                |s| vault_mut(s).access_policies[0].application_id = Some("app".into()),
                &[CRITICAL],
            ),
            (
                "key_ops exclude unwrapKey",
                |s| key_mut(s).key_ops = vec!["wrapKey".into(), "encrypt".into()],
                &[CRITICAL],
            ),
            (
                "key_ops not reported",
                |s| key_mut(s).key_ops.clear(),
                &[PASS],
            ),
        ],
    );
}

#[test]
fn the_encryption_identity_wins_over_the_system_identity() {
    fn with_uai(s: &mut crate::snapshot::Snapshot) {
        let workspace = workspace_mut(s);
        let identity = workspace.identity.as_mut().unwrap();
        identity.user_assigned.push(UserAssignedIdentity {
            resource_id: UAI.into(),
            principal_id: Some(UAI_PRINCIPAL.into()),
            client_id: None,
        });
        workspace
            .encryption
            .as_mut()
            .unwrap()
            .user_assigned_identity = Some(UAI.into());
    }
    assert_cases(
        &RULE,
        &[
            (
                "only the system identity has a policy",
                with_uai,
                &[CRITICAL],
            ),
            (
                "the encryption identity has a policy",
                |s| {
                    with_uai(s);
                    vault_mut(s).access_policies[0].object_id = UAI_PRINCIPAL.into();
                },
                &[PASS],
            ),
            (
                "the encryption identity is not assigned to the workspace",
                |s| encryption_mut(s).user_assigned_identity = Some(UAI.into()),
                &[CRITICAL],
            ),
            (
                "no identity at all",
                |s| workspace_mut(s).identity = None,
                &[CRITICAL],
            ),
        ],
    );
}

#[test]
fn rbac_vaults() {
    assert_cases(
        &RULE,
        &[
            (
                "Crypto Service Encryption User at the vault",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            VAULT_ID,
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[PASS],
            ),
            (
                "granted at the subscription, other casing",
                |s| {
                    let scope = format!("/SUBSCRIPTIONS/{SUBSCRIPTION}");
                    rbac(
                        s,
                        vec![assignment(
                            &scope,
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[PASS],
            ),
            (
                "granted at a management group",
                |s| {
                    let scope = "/providers/Microsoft.Management/managementGroups/corp";
                    rbac(
                        s,
                        vec![assignment(
                            scope,
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[PASS],
            ),
            (
                "granted at the key",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            &key_scope(),
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[PASS],
            ),
            (
                "granted through a group",
                |s| {
                    let mut a = assignment(VAULT_ID, Read::Found(crypto_service_encryption_user()));
                    a.principal_type = Some("Group".into());
                    a.principal_id = "group-1".into();
                    rbac(s, vec![a])
                },
                &[PASS],
            ),
            (
                "wildcard role (Crypto Officer)",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            VAULT_ID,
                            Read::Found(role(
                                "Key Vault Crypto Officer",
                                &["Microsoft.KeyVault/vaults/keys/*"],
                                &[],
                            )),
                        )],
                    )
                },
                &[PASS],
            ),
            (
                "wildcard with notDataActions removing unwrap",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            VAULT_ID,
                            Read::Found(role(
                                "custom",
                                &["Microsoft.KeyVault/*"],
                                &["Microsoft.KeyVault/vaults/keys/unwrap/action"],
                            )),
                        )],
                    )
                },
                &[CRITICAL],
            ),
            (
                "read only (Key Vault Reader-like)",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            VAULT_ID,
                            Read::Found(role(
                                "reader",
                                &["Microsoft.KeyVault/vaults/keys/read"],
                                &[],
                            )),
                        )],
                    )
                },
                &[CRITICAL],
            ),
            (
                "two roles add up",
                |s| {
                    rbac(
                        s,
                        vec![
                            assignment(
                                VAULT_ID,
                                Read::Found(role(
                                    "reader",
                                    &["Microsoft.KeyVault/vaults/keys/read"],
                                    &[],
                                )),
                            ),
                            assignment(
                                VAULT_ID,
                                Read::Found(role(
                                    "wrapper",
                                    &[
                                        "Microsoft.KeyVault/vaults/keys/wrap/action",
                                        "Microsoft.KeyVault/vaults/keys/unwrap/action",
                                    ],
                                    &[],
                                )),
                            ),
                        ],
                    )
                },
                &[PASS],
            ),
            (
                "assigned on another key only",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            &format!("{VAULT_ID}/keys/cmk2"),
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[CRITICAL],
            ),
            (
                "assigned on another vault with a common name prefix",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            &format!("{VAULT_ID}0"),
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    )
                },
                &[CRITICAL],
            ),
            ("no assignments", |s| rbac(s, vec![]), &[CRITICAL]),
            (
                "access policies do not count on an RBAC vault",
                |s| {
                    rbac(s, vec![]);
                    let policy = AccessPolicy {
                        tenant_id: Some(TENANT.into()),
                        object_id: PRINCIPAL.into(),
                        application_id: None,
                        key_permissions: vec!["all".into()],
                    };
                    vault_mut(s).access_policies.push(policy);
                },
                &[CRITICAL],
            ),
            (
                "only an ABAC-conditioned grant",
                |s| {
                    let mut a = assignment(VAULT_ID, Read::Found(crypto_service_encryption_user()));
                    a.condition = Some(
                        "@Resource[Microsoft.KeyVault/vaults/keys:KeyName] StringEquals 'cmk'"
                            .into(),
                    );
                    rbac(s, vec![a])
                },
                &[MEDIUM],
            ),
            (
                "role definition unreadable",
                |s| {
                    rbac(
                        s,
                        vec![assignment(VAULT_ID, failed_read("role definition", "x"))],
                    )
                },
                &[UNKNOWN],
            ),
            (
                "unreadable definition beside a clean grant",
                |s| {
                    rbac(
                        s,
                        vec![
                            assignment(VAULT_ID, failed_read("role definition", "x")),
                            assignment(VAULT_ID, Read::Found(crypto_service_encryption_user())),
                        ],
                    )
                },
                &[PASS],
            ),
            (
                "role assignments unreadable",
                |s| {
                    rbac(s, vec![]);
                    s.role_assignments = Some(failed_read("role assignments", VAULT_ID));
                },
                &[UNKNOWN],
            ),
            (
                "permission model not reported: RBAC assumed",
                |s| {
                    rbac(
                        s,
                        vec![assignment(
                            VAULT_ID,
                            Read::Found(crypto_service_encryption_user()),
                        )],
                    );
                    vault_mut(s).enable_rbac_authorization = None;
                },
                &[PASS],
            ),
            (
                "permission model not reported and role assignments not read",
                |s| vault_mut(s).enable_rbac_authorization = None,
                &[UNKNOWN],
            ),
        ],
    );
}

#[test]
fn absent_links() {
    assert_cases(
        &RULE,
        &[
            ("no CMK", no_cmk, &[NA]),
            ("vault gone", |s| s.vault = Some(Read::NotFound), &[NA]),
            (
                "vault unreadable",
                |s| s.vault = Some(failed_read("vault", VAULT_ID)),
                &[UNKNOWN],
            ),
            ("vault not read", |s| s.vault = None, &[UNKNOWN]),
        ],
    );
}

#[test]
fn the_observation_names_the_condition() {
    let mut snapshot = compliant_snapshot();
    let mut a = assignment(VAULT_ID, Read::Found(crypto_service_encryption_user()));
    a.condition = Some("cond-1".into());
    rbac(&mut snapshot, vec![a]);
    let check = &run(&RULE, &snapshot)[0];
    assert!(check.observed.contains("`cond-1`"), "{}", check.observed);
}

#[test]
fn wildcards() {
    let cases = [
        ("*", "Microsoft.KeyVault/vaults/keys/read", true),
        (
            "Microsoft.KeyVault/*",
            "microsoft.keyvault/vaults/keys/wrap/action",
            true,
        ),
        (
            "Microsoft.KeyVault/vaults/keys/*/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            true,
        ),
        (
            "Microsoft.KeyVault/vaults/keys/*/action",
            "Microsoft.KeyVault/vaults/keys/read",
            false,
        ),
        (
            "Microsoft.KeyVault/vaults/secrets/*",
            "Microsoft.KeyVault/vaults/keys/read",
            false,
        ),
        (
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/read",
            true,
        ),
        (
            "Microsoft.KeyVault/vaults/keys/rea",
            "Microsoft.KeyVault/vaults/keys/read",
            false,
        ),
    ];
    for (pattern, action, expected) in cases {
        assert_eq!(
            wildcard_match(pattern, action),
            expected,
            "{pattern} vs {action}"
        );
    }
}

/// The matcher compares bytes in place; it must answer as matching lower-cased copies would,
/// for empty parts, repeated stars, overlaps and non-ASCII text too.
#[test]
fn wildcards_answer_as_lower_cased_copies_would() {
    fn on_copies(pattern: &str, action: &str) -> bool {
        let pattern = pattern.to_ascii_lowercase();
        let action = action.to_ascii_lowercase();
        let mut parts = pattern.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = action.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
    let patterns = [
        "", "*", "**", "a*", "*a", "*A*", "a**b", "ab*ba", "aba*aba", "*/ACTION", "Ä*", "*ä*b",
        "x*y*z", "keys/*/*", "*keys*",
    ];
    let actions = [
        "",
        "a",
        "A",
        "ab",
        "aba",
        "abba",
        "ababa",
        "abaaba",
        "Microsoft.KeyVault/vaults/keys/wrap/action",
        "keys/read/x",
        "äb",
        "Äb",
        "xyz",
        "XzYz",
        "keys//",
    ];
    for pattern in patterns {
        for action in actions {
            assert_eq!(
                wildcard_match(pattern, action),
                on_copies(pattern, action),
                "{pattern:?} vs {action:?}"
            );
        }
    }
}
