//! `workspace.key-access`: the workspace's CMK identity can get, wrap and unwrap the key.
//!
//! Requirement: "the managed identity needs Get, Wrap Key and Unwrap Key" on the key — an access
//! policy on access-policy vaults, a role such as *Key Vault Crypto Service Encryption User* on
//! RBAC vaults. The identity is the encryption identity when set, else the system identity
//! (azure-notes Trap T21, [`crate::snapshot::Workspace::cmk_principal`]). Source: Azure ML CMK
//! guide, <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>;
//! the decision follows azure-notes §5.2. Equivalents: none (Azure Policy, Prowler and Checkov do
//! not look at identities; Cloud Custodian's `whitelist` finds excess permissions, not missing
//! ones).
//!
//! - Access-policy vaults (`enableRbacAuthorization: false`): an entry for the principal's object
//!   id and tenant, without an application id (a compound identity does not apply to a managed
//!   identity), whose key permissions include `get`, `wrapKey` and `unwrapKey`, or `all`
//!   (case-insensitive; several entries add up).
//! - RBAC vaults (`true`, and also when the vault does not report the flag: api-version
//!   2026-02-01, which cmk-guard reads with, defaults it to true — azure-notes §0 and Trap T6):
//!   role assignments of the principal listed with `assignedTo()` (so group grants count) whose
//!   scope is at or above the key, judged by their role definitions' `dataActions` (with `*`
//!   wildcards) minus `notDataActions`, never by role GUID. They must add up to
//!   `Microsoft.KeyVault/vaults/keys/read`, `…/keys/wrap/action` and `…/keys/unwrap/action`.
//!   An assignment with an ABAC `condition` is not a clean grant: when only such assignments
//!   complete the set the rule fails at medium severity and names the condition, because
//!   cmk-guard cannot evaluate conditions.
//! - Either way, a key whose `key_ops` exclude `wrapKey` or `unwrapKey` cannot be used.
//!
//! Compliant: access policy `{"objectId": "<principal>", "tenantId": "<tenant>",
//! "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]}}`; or an assignment of *Key Vault
//! Crypto Service Encryption User* to the principal at the vault scope.
//! Non-compliant: the access policy grants only `get`; or the only assignment is *Key Vault
//! Reader* (`…/keys/read` but no wrap or unwrap).

use super::chain::{self, Gate};
use super::{Check, Context, Remediation, Rule, RuleKind, is_at_or_below};
use crate::outcome::Severity;
use crate::snapshot::{CmkPrincipal, Read, RoleAssignment, Snapshot, Vault};

pub(super) const RULE: Rule = Rule {
    id: "workspace.key-access",
    kind: RuleKind::State,
    remediation: Remediation::Reversible,
    check,
};

const EXPECTED: &str = "the workspace's CMK identity can get, wrapKey and unwrapKey the key (access policy or RBAC role)";

/// The access-policy key permissions CMK needs.
const KEY_PERMISSIONS: [&str; 3] = ["get", "wrapKey", "unwrapKey"];

/// The RBAC data actions CMK needs.
const DATA_ACTIONS: [&str; 3] = [
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/keys/wrap/action",
    "Microsoft.KeyVault/vaults/keys/unwrap/action",
];

fn check(context: &Context) -> Vec<Check> {
    let snapshot = context.snapshot;
    let resource = chain::key_resource(snapshot);
    let stop = |gate: Gate| vec![gate.check(RULE.id, resource.clone(), EXPECTED)];
    let vault = match chain::vault(snapshot) {
        Ok(vault) => vault,
        Err(gate) => return stop(gate),
    };
    let workspace = match chain::workspace(snapshot) {
        Ok(workspace) => workspace,
        Err(gate) => return stop(gate),
    };
    let Some(principal) = workspace.cmk_principal() else {
        let observed = missing_identity(workspace);
        return vec![Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            observed,
            EXPECTED,
        )];
    };
    let verdict = if vault.enable_rbac_authorization == Some(false) {
        Ok(access_policy_verdict(vault, &principal))
    } else {
        rbac_verdict(snapshot, vault, &principal)
    };
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(gate) => return stop(gate),
    };
    if let Some(refusal) = key_ops_refusal(snapshot) {
        return vec![Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            refusal,
            EXPECTED,
        )];
    }
    vec![match verdict {
        Verdict::Granted(observed) => Check::pass(RULE.id, resource, observed, EXPECTED),
        Verdict::Denied(severity, observed) => {
            Check::fail(RULE.id, resource, severity, observed, EXPECTED)
        }
    }]
}

/// The access decision before the key's own `key_ops` are considered.
enum Verdict {
    Granted(String),
    Denied(Severity, String),
}

fn missing_identity(workspace: &crate::snapshot::Workspace) -> String {
    match workspace
        .encryption
        .as_ref()
        .and_then(|e| e.user_assigned_identity.as_deref())
    {
        Some(uai) => format!(
            "the encryption identity {uai} is not among the workspace's identities or has no principal id"
        ),
        None => "the workspace has no system-assigned identity to reach the key".to_owned(),
    }
}

fn who(principal: &CmkPrincipal) -> String {
    match &principal.user_assigned_identity {
        Some(uai) => format!(
            "user-assigned identity {uai} (principal {})",
            principal.principal_id
        ),
        None => format!("system identity (principal {})", principal.principal_id),
    }
}

fn access_policy_verdict(vault: &Vault, principal: &CmkPrincipal) -> Verdict {
    let tenant = principal
        .tenant_id
        .as_deref()
        .or(vault.tenant_id.as_deref());
    let same_tenant = |entry_tenant: Option<&str>| match (entry_tenant, tenant) {
        (Some(entry), Some(expected)) => entry.eq_ignore_ascii_case(expected),
        _ => true,
    };
    let entries: Vec<_> = vault
        .access_policies
        .iter()
        .filter(|p| p.object_id.eq_ignore_ascii_case(&principal.principal_id))
        .filter(|p| p.application_id.as_deref().is_none_or(str::is_empty))
        .collect();
    let matching: Vec<_> = entries
        .iter()
        .filter(|p| same_tenant(p.tenant_id.as_deref()))
        .collect();
    let granted = |permission: &str| {
        matching.iter().any(|p| {
            p.key_permissions
                .iter()
                .any(|k| k.eq_ignore_ascii_case(permission) || k.eq_ignore_ascii_case("all"))
        })
    };
    let missing: Vec<&str> = KEY_PERMISSIONS
        .into_iter()
        .filter(|permission| !granted(permission))
        .collect();
    let who = who(principal);
    if missing.is_empty() {
        return Verdict::Granted(format!(
            "an access policy grants get, wrapKey and unwrapKey to the {who}"
        ));
    }
    let observed = if matching.is_empty() && !entries.is_empty() {
        format!("the vault's access policy for the {who} is for another tenant")
    } else if matching.is_empty() {
        format!("the vault (access-policy model) has no access policy for the {who}")
    } else {
        format!(
            "the access policy for the {who} lacks {}",
            missing.join(", ")
        )
    };
    Verdict::Denied(Severity::Critical, observed)
}

fn rbac_verdict(
    snapshot: &Snapshot,
    vault: &Vault,
    principal: &CmkPrincipal,
) -> Result<Verdict, Gate> {
    let model = match vault.enable_rbac_authorization {
        Some(_) => "RBAC",
        None => {
            "RBAC, assumed: the vault does not report enableRbacAuthorization and api-version 2026-02-01 defaults it to true"
        }
    };
    let assignments = match &snapshot.role_assignments {
        Some(Read::Found(assignments)) => assignments,
        Some(Read::Failed(_)) => {
            return Err(Gate::Unknown(
                "the role assignments could not be read".into(),
            ));
        }
        Some(Read::NotFound) => &Vec::new(),
        None => return Err(Gate::Unknown("the role assignments were not read".into())),
    };
    let key_name = chain::key_url(snapshot)
        .map(|url| url.name().to_owned())
        .or_else(|| {
            snapshot
                .key
                .as_ref()
                .and_then(Read::found)
                .map(|k| k.key_name.clone())
        });
    let Some(key_name) = key_name else {
        return Err(Gate::Unknown("the workspace names no key".into()));
    };
    let key_scope = format!("{}/keys/{key_name}", vault.id.trim_end_matches('/'));
    let applicable: Vec<&RoleAssignment> = assignments
        .iter()
        .filter(|a| covers(&a.scope, &key_scope))
        .collect();

    let mut clean = [false; 3];
    let mut conditional = [false; 3];
    let mut clean_roles = Vec::new();
    let mut conditions = Vec::new();
    let mut unreadable = false;
    for assignment in &applicable {
        let definition = match &assignment.definition {
            Read::Found(definition) => definition,
            Read::NotFound => continue,
            Read::Failed(_) => {
                unreadable = true;
                continue;
            }
        };
        let granted = DATA_ACTIONS.map(|action| {
            definition.permissions.iter().any(|p| {
                p.data_actions
                    .iter()
                    .any(|pattern| wildcard_match(pattern, action))
                    && !p
                        .not_data_actions
                        .iter()
                        .any(|pattern| wildcard_match(pattern, action))
            })
        });
        if !granted.iter().any(|g| *g) {
            continue;
        }
        let role = definition
            .role_name
            .clone()
            .unwrap_or_else(|| assignment.role_definition_id.clone());
        let via_group = assignment
            .principal_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Group"));
        let grant = format!(
            "{role} at {}{}",
            assignment.scope,
            if via_group { " (through a group)" } else { "" }
        );
        match assignment
            .condition
            .as_deref()
            .filter(|c| !c.trim().is_empty())
        {
            None => {
                merge(&mut clean, granted);
                clean_roles.push(grant);
            }
            Some(condition) => {
                merge(&mut conditional, granted);
                conditions.push(format!("{grant} under condition `{condition}`"));
            }
        }
    }
    let who = who(principal);
    if clean.iter().all(|g| *g) {
        return Ok(Verdict::Granted(format!(
            "the {who} holds {} ({model})",
            clean_roles.join("; ")
        )));
    }
    let mut with_conditions = clean;
    merge(&mut with_conditions, conditional);
    if with_conditions.iter().all(|g| *g) {
        return Ok(Verdict::Denied(
            Severity::Medium,
            format!(
                "the {who} can wrap and unwrap only through ABAC-conditioned assignments, which cmk-guard does not evaluate: {} ({model})",
                conditions.join("; ")
            ),
        ));
    }
    if unreadable {
        return Err(Gate::Unknown(
            "a role definition assigned to the identity could not be read".into(),
        ));
    }
    let missing: Vec<&str> = DATA_ACTIONS
        .iter()
        .zip(clean)
        .filter(|(_, granted)| !granted)
        .map(|(action, _)| *action)
        .collect();
    let held = if clean_roles.is_empty() && conditions.is_empty() {
        "no role assignment that grants key data actions at or above the key".to_owned()
    } else {
        clean_roles
            .iter()
            .chain(&conditions)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    };
    Ok(Verdict::Denied(
        Severity::Critical,
        format!(
            "the {who} lacks {} — it holds {held} ({model})",
            missing.join(", ")
        ),
    ))
}

fn merge(into: &mut [bool; 3], from: [bool; 3]) {
    for (slot, granted) in into.iter_mut().zip(from) {
        *slot |= granted;
    }
}

/// True when a role assignment at `scope` applies to `target`. Management-group and root scopes
/// are above every subscription, and `assignedTo()` at the key scope lists only those above it.
fn covers(scope: &str, target: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty()
        || is_at_or_below("/providers/Microsoft.Management/managementGroups", scope)
        || is_at_or_below(scope, target)
}

/// Matches an RBAC action pattern, where `*` stands for any run of characters, ignoring case.
fn wildcard_match(pattern: &str, action: &str) -> bool {
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

/// Why the key version in use refuses wrapping, if its `key_ops` say so. Empty `key_ops` mean
/// the read did not report them.
fn key_ops_refusal(snapshot: &Snapshot) -> Option<String> {
    let key = snapshot.key.as_ref()?.found()?;
    if key.key_ops.is_empty() {
        return None;
    }
    let missing: Vec<&str> = ["wrapKey", "unwrapKey"]
        .into_iter()
        .filter(|op| !key.key_ops.iter().any(|k| k.eq_ignore_ascii_case(op)))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the key {} does not allow {} (key_ops: {})",
            chain::key_label(key),
            missing.join(", "),
            key.key_ops.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
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
                        let mut a =
                            assignment(VAULT_ID, Read::Found(crypto_service_encryption_user()));
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
                        let mut a =
                            assignment(VAULT_ID, Read::Found(crypto_service_encryption_user()));
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
}
