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
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::ids::KeyUrl;
use crate::outcome::Severity;
use crate::policy::is_at_or_below;
use crate::snapshot::{CmkPrincipal, Read, Snapshot, Vault};

pub(super) const RULE: Rule = Rule {
    id: RuleId::WorkspaceKeyAccess,
    judge: check,
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

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let resource = links.key.to_owned();
    let stop = |gate: Gate| Checks::One(gate.check(RULE.id, resource.clone(), EXPECTED));
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
        return Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            observed,
            EXPECTED,
        ));
    };
    let verdict = if vault.enable_rbac_authorization == Some(false) {
        Ok(access_policy_verdict(vault, &principal))
    } else {
        rbac_verdict(snapshot, links, vault, &principal)
    };
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(gate) => return stop(gate),
    };
    if let Some(refusal) = key_ops_refusal(snapshot) {
        return Checks::One(Check::fail(
            RULE.id,
            resource,
            Severity::Critical,
            refusal,
            EXPECTED,
        ));
    }
    Checks::One(match verdict {
        Verdict::Granted(observed) => Check::pass(RULE.id, resource, observed, EXPECTED),
        Verdict::Denied(severity, observed) => {
            Check::fail(RULE.id, resource, severity, observed, EXPECTED)
        }
    })
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
    let who = principal.describe();
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
    links: &Links,
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
    let key_name = links.key_url().map(KeyUrl::name).or_else(|| {
        snapshot
            .key
            .as_ref()
            .and_then(Read::found)
            .map(|k| k.key_name.as_str())
    });
    let Some(key_name) = key_name else {
        return Err(Gate::Unknown("the workspace names no key".into()));
    };
    let key_scope = [vault.id.trim_end_matches('/'), "/keys/", key_name].concat();
    let applicable = assignments.iter().filter(|a| covers(&a.scope, &key_scope));

    let mut clean = [false; 3];
    let mut conditional = [false; 3];
    let mut clean_roles = Vec::new();
    let mut conditions = Vec::new();
    let mut unreadable = false;
    for assignment in applicable {
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
            .as_deref()
            .unwrap_or(&assignment.role_definition_id);
        let via_group = assignment
            .principal_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Group"));
        let through = if via_group { " (through a group)" } else { "" };
        let grant = [role, " at ", &assignment.scope, through].concat();
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
    let who = principal.describe();
    if clean.iter().all(|g| *g) {
        let roles = clean_roles.join("; ");
        return Ok(Verdict::Granted(
            ["the ", &who, " holds ", &roles, " (", model, ")"].concat(),
        ));
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

/// Matches an RBAC action pattern, where `*` stands for any run of characters, ignoring ASCII
/// case. It compares bytes in place rather than lower-cased copies, because it runs for every
/// data action of every role the identity holds, on every event.
fn wildcard_match(pattern: &str, action: &str) -> bool {
    let mut parts = pattern.as_bytes().split(|&b| b == b'*').peekable();
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = action
        .as_bytes()
        .get(..first.len())
        .filter(|head| head.eq_ignore_ascii_case(first))
        .map(|_| &action.as_bytes()[first.len()..])
    else {
        return false;
    };
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            // The last part must end the action.
            return rest.len() >= part.len()
                && rest[rest.len() - part.len()..].eq_ignore_ascii_case(part);
        }
        match find_ignoring_case(rest, part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Where `needle` first occurs in `haystack`, ignoring ASCII case.
fn find_ignoring_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
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
mod tests;
