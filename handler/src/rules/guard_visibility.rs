//! `guard.visibility`: cmk-guard could read everything the workspace's CMK chain references.
//!
//! Requirement: silence never means compliant. A read that failed (403, throttled past the
//! deadline, 5xx) leaves the dependent rules at `Unknown`; this rule turns each such failure into
//! a finding, so that an identity without Reader on the vault cannot hide a broken chain. It also
//! fails when a read the chain needs was not made, or when the workspace's reference itself is
//! unusable (no `keyVaultArmId`, a `keyIdentifier` that is not a key URL). Source: cmk-guard's own
//! guarantee (docs/architecture.md *Rules*); the chain it covers is the Azure ML CMK guide's,
//! <https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys>.
//! Equivalents: none (Azure Policy marks such resources "not started" or skips them).
//!
//! Reads the chain needs, for a workspace with CMK: the vault; the key version in use when the
//! vault exists; its rotation policy when the key exists; the role assignments when the vault
//! uses (or may use) RBAC; the endpoints; the provider registrations.
//!
//! Compliant: every read answered 200 or 404.
//! Non-compliant: `GET …/vaults/kv` answered 403 `ForbiddenByRbac` (observed: "could not read
//! the vault (403 ForbiddenByRbac): cmk-guard's identity lacks read on …/vaults/kv: grant it
//! Reader there …").

use super::chain;
use super::{Check, Checks, Context, Links, Rule};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::outcome::{Finding, FindingState, Severity};
use crate::snapshot::{Read, ReadFailure, Snapshot, Vault};

pub(super) const RULE: Rule = Rule {
    id: RuleId::GuardVisibility,
    judge: check,
};

const EXPECTED: &str = "cmk-guard can read every resource the CMK chain references";

fn check(context: &Context, links: &Links) -> Checks {
    let snapshot = context.snapshot;
    let mut checks: Vec<Check> = snapshot.read_failures().map(failed).collect();
    checks.extend(
        gaps(snapshot, links)
            .into_iter()
            .map(|(resource, observed)| {
                Check::fail(RULE.id, resource, Severity::High, observed, EXPECTED)
            }),
    );
    if checks.is_empty() {
        checks.push(Check::pass(
            RULE.id,
            links.workspace.to_owned(),
            "every resource the chain references was read",
            EXPECTED,
        ));
    }
    checks.into()
}

fn failed(failure: &ReadFailure) -> Check {
    Check::fail(
        RULE.id,
        failure.resource.clone(),
        Severity::High,
        observed(failure),
        EXPECTED,
    )
}

/// A finding about `resource` for a read made outside any workspace's snapshot (the workspaces
/// to check could not be listed), worded as the rule words its own: without it, a scan that
/// could not list anything would look like a tenant without findings.
pub fn unreadable(resource: &str, failure: &ReadFailure) -> Finding {
    Finding {
        rule: RuleId::GuardVisibility,
        resource: resource.to_owned(),
        workspace: String::new(),
        severity: Severity::High,
        state: FindingState::Open,
        observed: observed(failure),
        expected: EXPECTED.to_owned(),
    }
}

/// What could not be read, how Azure answered, and what to do about it: a refusal names the
/// grant that ends it, so that a person can act on the finding without Azure's error text.
fn observed(failure: &ReadFailure) -> String {
    let mut answer = Vec::new();
    if let Some(status) = failure.status {
        answer.push(status.to_string());
    }
    if let Some(code) = &failure.code {
        answer.push(code.clone());
    }
    let answer = if answer.is_empty() {
        String::new()
    } else {
        format!(" ({})", answer.join(" "))
    };
    let resource = &failure.resource;
    let what_to_do = match failure.status {
        // `/subscriptions` (a scan of every readable subscription) is no scope one can grant on.
        Some(403) if resource.trim_end_matches('/').eq_ignore_ascii_case("/subscriptions") => {
            "cmk-guard's identity may not list the workspaces: grant it Reader on each subscription to check (or on their management group)".to_owned()
        }
        Some(403) => format!(
            "cmk-guard's identity lacks read on {resource}: grant it Reader there (or on its resource group or subscription)"
        ),
        Some(401) => format!(
            "Azure did not accept cmk-guard's sign-in for {resource}: check that its identity belongs to the subscription's tenant"
        ),
        _ if failure.transient => format!(
            "{}; the next delivery, sweep or run reads it again",
            failure.message
        ),
        _ => failure.message.clone(),
    };
    format!("could not read the {}{answer}: {what_to_do}", failure.what)
}

/// Reads the chain needs that were not made, and references that cannot be followed, as
/// (resource, observation). A read that could not even be attempted because another problem
/// blocks it (no identity to list role assignments for) is left to the rule that reports that
/// problem.
fn gaps(snapshot: &Snapshot, links: &Links) -> Vec<(String, String)> {
    let Ok((workspace, encryption)) = chain::cmk(snapshot) else {
        return Vec::new();
    };
    let workspace_resource = links.workspace;
    let vault_resource = links.vault;
    let key_resource = links.key;
    let mut gaps = Vec::new();
    match (&encryption.key_vault_arm_id, &snapshot.vault) {
        (None, _) => gaps.push((
            workspace_resource.to_owned(),
            "the workspace's encryption names no key vault (keyVaultArmId)".to_owned(),
        )),
        (Some(id), None) => gaps.push((
            vault_resource.to_owned(),
            match ArmResourceId::parse(id) {
                Ok(_) => "the key vault was not read".to_owned(),
                Err(error) => format!("keyVaultArmId cannot be followed: {error}"),
            },
        )),
        (Some(_), Some(_)) => {}
    }
    let key_url = &links.key_url;
    if let (Some(Ok(key)), Some(vault)) = (key_url, snapshot.vault.as_ref().and_then(Read::found))
        && let Some(observed) = key_outside_vault(key, vault)
    {
        gaps.push((key_resource.to_owned(), observed));
    }
    let key_named = match key_url {
        None => {
            let why = "the workspace's encryption names no key (keyIdentifier)".to_owned();
            gaps.push((workspace_resource.to_owned(), why));
            false
        }
        Some(Err(error)) => {
            let why = format!("keyIdentifier cannot be followed: {error}");
            gaps.push((workspace_resource.to_owned(), why));
            false
        }
        Some(Ok(_)) => true,
    };
    let vault = snapshot.vault.as_ref().and_then(Read::found);
    let key_found = snapshot.key.as_ref().and_then(Read::found).is_some();
    let mut missing = |needed: bool, absent: bool, resource: &str, what: &str| {
        if needed && absent {
            gaps.push((resource.to_owned(), format!("the {what} was not read")));
        }
    };
    missing(
        vault.is_some() && key_named,
        snapshot.key.is_none(),
        key_resource,
        "key",
    );
    missing(
        key_found,
        snapshot.rotation_policy.is_none(),
        key_resource,
        "key rotation policy",
    );
    missing(
        vault.is_some_and(|v| v.enable_rbac_authorization != Some(false))
            && workspace.cmk_principal().is_some(),
        snapshot.role_assignments.is_none(),
        vault_resource,
        "list of role assignments of the CMK identity",
    );
    missing(
        true,
        snapshot.endpoints.is_none(),
        workspace_resource,
        "list of the workspace's endpoints",
    );
    missing(
        true,
        snapshot.providers.is_none(),
        &links.subscription,
        "list of resource provider registrations",
    );
    gaps
}

/// The key URL's host is not the `vaultUri` of the vault `keyVaultArmId` names: every vault
/// rule then judged another vault than the one holding the key the workspace encrypts with.
/// (No token is ever sent to the key's host for this: reads go through ARM, the key size is read
/// from the data plane only when the vault serves the key, and key writes refuse a key outside
/// the workspace's vault.)
fn key_outside_vault(key: &KeyUrl, vault: &Vault) -> Option<String> {
    let vault_uri = vault.vault_uri.as_deref()?;
    if vault.serves(key) {
        return None;
    }
    Some(format!(
        "the key {key} is on host {}, but the key vault keyVaultArmId names answers at {}: the vault checked is not the key's vault",
        key.host(),
        crate::ids::truncate(vault_uri)
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::snapshot::{RoleAssignment, RoleDefinition};

    #[test]
    fn verdicts() {
        assert_cases(
            &RULE,
            &[
                ("everything read", |_| {}, &[PASS]),
                (
                    "vault 404 is not a visibility problem",
                    |s| {
                        s.vault = Some(Read::NotFound);
                        s.key = None;
                        s.latest_key = None;
                        s.rotation_policy = None;
                    },
                    &[PASS],
                ),
                (
                    "vault 403",
                    |s| s.vault = Some(failed_read("vault", VAULT_ID)),
                    &[HIGH],
                ),
                (
                    "workspace 403",
                    |s| s.workspace = failed_read("workspace", WORKSPACE_ID),
                    &[HIGH],
                ),
                (
                    "two failures, two findings",
                    |s| {
                        s.key = Some(failed_read("key", KEY_URL));
                        s.endpoints = Some(failed_read("endpoints", WORKSPACE_ID));
                    },
                    &[HIGH, HIGH],
                ),
                (
                    "a role definition 403",
                    |s| {
                        vault_mut(s).enable_rbac_authorization = Some(true);
                        s.role_assignments = Some(Read::Found(vec![RoleAssignment {
                            id: "a".into(),
                            principal_id: PRINCIPAL.into(),
                            principal_type: None,
                            scope: VAULT_ID.into(),
                            role_definition_id: "d".into(),
                            condition: None,
                            definition: failed_read::<RoleDefinition>("role definition", "d"),
                        }]));
                    },
                    &[HIGH],
                ),
                ("vault not read", |s| s.vault = None, &[HIGH]),
                ("key not read", |s| s.key = None, &[HIGH]),
                (
                    "rotation policy not read",
                    |s| s.rotation_policy = None,
                    &[HIGH],
                ),
                (
                    "role assignments not read on an RBAC vault",
                    |s| vault_mut(s).enable_rbac_authorization = Some(true),
                    &[HIGH],
                ),
                (
                    "role assignments not read when the model is not reported",
                    |s| vault_mut(s).enable_rbac_authorization = None,
                    &[HIGH],
                ),
                ("endpoints not read", |s| s.endpoints = None, &[HIGH]),
                ("providers not read", |s| s.providers = None, &[HIGH]),
                (
                    "no vault named",
                    |s| encryption_mut(s).key_vault_arm_id = None,
                    &[HIGH],
                ),
                (
                    "unusable key identifier, so the key was not read",
                    |s| {
                        encryption_mut(s).key_identifier = Some("cmk".into());
                        s.key = None;
                        s.latest_key = None;
                        s.rotation_policy = None;
                    },
                    &[HIGH],
                ),
                (
                    "the key is in another vault than keyVaultArmId names",
                    |s| vault_mut(s).vault_uri = Some("https://kv-other.vault.azure.net/".into()),
                    &[HIGH],
                ),
                (
                    "the vaultUri's spelling does not matter",
                    |s| vault_mut(s).vault_uri = Some("https://KV1.vault.azure.net:443".into()),
                    &[PASS],
                ),
                (
                    "unusable vault id",
                    |s| {
                        encryption_mut(s).key_vault_arm_id = Some("kv1".into());
                        s.vault = None;
                    },
                    &[HIGH],
                ),
                (
                    "no identity to list role assignments for is key-access's finding",
                    |s| {
                        vault_mut(s).enable_rbac_authorization = Some(true);
                        workspace_mut(s).identity = None;
                    },
                    &[PASS],
                ),
                (
                    "nothing needed without CMK",
                    |s| {
                        no_cmk(s);
                        s.vault = None;
                        s.key = None;
                        s.endpoints = None;
                        s.providers = None;
                    },
                    &[PASS],
                ),
            ],
        );
    }

    #[test]
    fn a_failure_names_what_and_why() {
        let mut snapshot = compliant_snapshot();
        snapshot.vault = Some(failed_read("vault", VAULT_ID));
        let check = &run(&RULE, &snapshot)[0];
        assert_eq!(check.resource, VAULT_ID);
        assert_eq!(
            check.observed,
            format!(
                "could not read the vault (403 Forbidden): cmk-guard's identity lacks read on {VAULT_ID}: grant it Reader there (or on its resource group or subscription)"
            )
        );
    }

    #[test]
    fn other_failures_say_what_azure_said_and_whether_it_is_read_again() {
        let failure = |status: Option<u16>, transient: bool| ReadFailure {
            what: "key".into(),
            resource: KEY_URL.into(),
            status,
            code: None,
            message: "the message".into(),
            transient,
        };
        assert_eq!(
            observed(&failure(Some(429), true)),
            "could not read the key (429): the message; the next delivery, sweep or run reads it again"
        );
        assert_eq!(
            observed(&failure(None, false)),
            "could not read the key: the message"
        );
        assert!(
            observed(&failure(Some(401), false)).contains("did not accept cmk-guard's sign-in")
        );
    }

    #[test]
    fn a_listing_that_failed_is_an_open_finding_with_the_same_words() {
        let failure = ReadFailure {
            what: "list of ML workspaces (Resource Graph)".into(),
            resource: "/subscriptions/s1".into(),
            status: Some(403),
            code: Some("AuthorizationFailed".into()),
            message: "denied".into(),
            transient: false,
        };
        let finding = unreadable("/subscriptions/s1", &failure);
        assert_eq!(finding.rule, RuleId::GuardVisibility);
        assert_eq!(finding.state, FindingState::Open);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(
            finding.observed,
            "could not read the list of ML workspaces (Resource Graph) (403 AuthorizationFailed): cmk-guard's identity lacks read on /subscriptions/s1: grant it Reader there (or on its resource group or subscription)"
        );
    }
}
