//! Remediation: the fixes of docs/architecture.md's *Rules* table, one file per remediation.
//!
//! Each remediation is a small reconciler (kube-rs style): it is told only the finding, re-reads
//! what it would change through ARM — never from the observe cache, whose reads may be seconds old
//! — and asks the rule itself whether the fresh state still fails, so "already compliant" means
//! exactly what the rule means. Only then does it make the narrowest write that fixes it (a vault
//! PATCH of one flag, never a vault PUT, azure-notes Trap T7), reads again to verify, and reports
//! an [`Action`] whose detail says what was done. Repeating a remediation is harmless: the second
//! run finds the state compliant and writes nothing.
//!
//! Which rules have a remediation, and which cannot be undone, the [`crate::catalogue`] says; this
//! module dispatches each to its file. Consent cannot be forgotten: [`Remediator::apply`] takes a
//! [`Consent`], which only [`Consent::from_policy`] produces, and refuses — before any request —
//! unless the policy enables the rule's remediation (and, for purge protection, also says
//! `irreversible_ok`).
//!
//! In `alert` mode nothing is written; [`describe`] says what a remediation would do.

mod events_wired;
mod key_access;
mod key_enabled;
mod key_expiry;
mod providers;
mod purge_protection;
mod rotation_policy;

use std::sync::Arc;

use azure_security_keyvault_keys::KeyClient;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::azure::{ArmClient, Azure, AzureError, ErrorKind, KeyVaultClients, SubscriptionScope};
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};
use crate::observe::parse;
use crate::outcome::{Action, ActionKind, ActionResult, Finding};
use crate::policy::Policy;
use crate::rules::{self, Check, Status};
use crate::snapshot::{KeyVersion, Read, Snapshot, Vault, WiringTargets, Workspace};

/// The policy's consent to one rule's remediation. Only [`Consent::from_policy`] makes one, so a
/// caller cannot remediate without having asked the policy; [`Remediator::apply`] refuses when
/// the policy does not allow it. It also carries the policy's settings the remediations read
/// (rotation policy, expiry thresholds).
#[derive(Debug, Clone, Copy)]
pub struct Consent<'p> {
    policy: &'p Policy,
    rule: RuleId,
}

impl<'p> Consent<'p> {
    /// What `policy` says about remediating `rule`.
    pub fn from_policy(policy: &'p Policy, rule: RuleId) -> Self {
        Self { policy, rule }
    }

    /// True when the policy enables the rule's remediation, with `irreversible_ok` when the
    /// change cannot be undone.
    pub fn is_given(&self) -> bool {
        self.policy.allows_remediation(self.rule)
    }
}

/// What one remediation did: the Outcome action, and whether a later attempt may succeed
/// (throttling, 5xx, timeouts), so the caller can retry on the next invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub action: Action,
    pub transient: bool,
}

/// Applies remediations with the same ARM and Key Vault clients observe uses.
#[derive(Debug, Clone)]
pub struct Remediator {
    arm: ArmClient,
    keys: KeyVaultClients,
    /// Where `vault.events-wired` wires vaults to; nothing when self-wiring is not configured.
    wiring: WiringTargets,
}

impl Remediator {
    /// A remediator over the production clients (or the simulator's, in tests).
    pub fn new(azure: &Azure) -> Self {
        Self {
            arm: azure.arm.clone(),
            keys: azure.keys.clone(),
            wiring: WiringTargets::default(),
        }
    }

    /// The remediator that wires vaults to `targets` (`vault.events-wired`).
    pub fn with_wiring(self, targets: WiringTargets) -> Self {
        Self {
            wiring: targets,
            ..self
        }
    }

    /// Remediates one finding: refuses without consent, skips what is already compliant, writes,
    /// verifies. `now` judges key expiry; `deadline` bounds every request. The workspace is
    /// read from the finding; [`Remediator::apply_to`] takes the id already parsed.
    pub async fn apply(
        &self,
        finding: &Finding,
        consent: &Consent<'_>,
        now: OffsetDateTime,
        deadline: Instant,
    ) -> Attempt {
        match ArmResourceId::parse(&finding.workspace) {
            Ok(workspace) => {
                self.apply_to(finding, &workspace, consent, now, deadline)
                    .await
            }
            Err(e) => finish(
                finding,
                Err(Stop::refused(format!(
                    "the finding names no workspace: {e}"
                ))),
            ),
        }
    }

    /// [`Remediator::apply`] for the finding of `workspace`, whose id observe parsed.
    pub async fn apply_to(
        &self,
        finding: &Finding,
        workspace: &ArmResourceId,
        consent: &Consent<'_>,
        now: OffsetDateTime,
        deadline: Instant,
    ) -> Attempt {
        finish(
            finding,
            self.run(finding, workspace, consent, now, deadline).await,
        )
    }

    async fn run(
        &self,
        finding: &Finding,
        workspace: &ArmResourceId,
        consent: &Consent<'_>,
        now: OffsetDateTime,
        deadline: Instant,
    ) -> Stage<String> {
        let Some(rule) = Some(finding.rule).filter(|rule| rule.is_remediable()) else {
            return Err(Stop::refused(format!(
                "rule {} has no remediation",
                finding.rule
            )));
        };
        if consent.rule != finding.rule {
            return Err(Stop::refused(format!(
                "the consent given is for {}, not {}",
                consent.rule, finding.rule
            )));
        }
        if !consent.is_given() {
            let how = if rule.is_irreversible() {
                "it cannot be undone: set enabled = true and irreversible_ok = true"
            } else {
                "set enabled = true"
            };
            return Err(Stop::refused(format!(
                "the policy does not consent to remediating {} ({how} in [remediation.\"{}\"])",
                rule, rule
            )));
        }
        writable(self.arm.scope(), workspace, "workspace")?;
        let act = Act {
            arm: &self.arm,
            keys: &self.keys,
            policy: consent.policy,
            wiring: &self.wiring,
            now,
            deadline,
        };
        match rule {
            RuleId::WorkspaceKeyAccess => key_access::apply(&act, workspace).await,
            RuleId::VaultPurgeProtection => purge_protection::apply(&act, workspace).await,
            RuleId::VaultEventsWired => events_wired::apply(&act, workspace).await,
            RuleId::KeyEnabled => key_enabled::apply(&act, workspace).await,
            RuleId::KeyExpiry => key_expiry::apply(&act, workspace).await,
            RuleId::KeyRotationPolicy => rotation_policy::apply(&act, workspace).await,
            RuleId::SubscriptionProviders => {
                providers::apply(&act, workspace, &finding.resource).await
            }
            other => Err(Stop::refused(format!("rule {other} has no remediation"))),
        }
    }
}

/// The Outcome action of a remediation's result, logged.
fn finish(finding: &Finding, result: Stage<String>) -> Attempt {
    let (result, detail, transient) = match result {
        Ok(detail) => (ActionResult::Applied, detail, false),
        Err(Stop::Skipped(detail)) => (ActionResult::Skipped, detail, false),
        Err(Stop::Failed { detail, transient }) => (ActionResult::Failed, detail, transient),
    };
    let action = Action {
        kind: ActionKind::Remediate,
        rule: finding.rule.to_string(),
        target: finding.resource.clone(),
        result,
        detail,
    };
    match action.result {
        ActionResult::Failed => tracing::warn!(
            message = "Remediation failed.",
            rule = %action.rule,
            resource = %action.target,
            transient,
            detail = %action.detail
        ),
        _ => tracing::info!(
            message = "Remediation done.",
            rule = %action.rule,
            resource = %action.target,
            result = ?action.result,
            detail = %action.detail
        ),
    }
    Attempt { action, transient }
}

/// What a remediation would do about `finding`, from what observe read, without doing anything
/// (for alerts in `alert` mode); `None` when the rule has no remediation.
pub fn describe(finding: &Finding, snapshot: &Snapshot, policy: &Policy) -> Option<String> {
    let sentence = match finding.rule {
        RuleId::WorkspaceKeyAccess => key_access::describe(snapshot),
        RuleId::VaultPurgeProtection => purge_protection::describe(snapshot),
        RuleId::KeyEnabled => key_enabled::describe(snapshot),
        RuleId::KeyExpiry => key_expiry::describe(snapshot),
        RuleId::KeyRotationPolicy => rotation_policy::describe(snapshot, policy),
        RuleId::SubscriptionProviders => providers::describe(&finding.resource),
        RuleId::VaultEventsWired => events_wired::describe(snapshot),
        _ => return None,
    };
    Some(sentence)
}

/// Why a remediation stopped before `applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Nothing to do: already compliant, or nothing a remediation can act on.
    Skipped(String),
    /// Refused, or Azure failed; `transient` when trying again later may help.
    Failed { detail: String, transient: bool },
}

impl Stop {
    /// A refusal or impossibility that retrying cannot change.
    fn refused(detail: String) -> Self {
        Stop::Failed {
            detail: format!("refused: {detail}"),
            transient: false,
        }
    }

    /// A failed Azure call while doing `what`; the ARM error code stays in the detail.
    fn azure(what: &str, error: &AzureError) -> Self {
        Stop::Failed {
            detail: format!("{what} failed: {error}"),
            transient: error.is_transient(),
        }
    }
}

/// One stage of a remediation: it goes on with a `T`, or the remediation stops here.
type Stage<T> = Result<T, Stop>;

/// Everything one remediation run needs.
struct Act<'a> {
    arm: &'a ArmClient,
    keys: &'a KeyVaultClients,
    policy: &'a Policy,
    wiring: &'a WiringTargets,
    now: OffsetDateTime,
    deadline: Instant,
}

impl Act<'_> {
    /// A fresh ARM GET; 404 is an answer, not a failure.
    async fn read(&self, path: &str, namespace: &str, what: &str) -> Stage<Read<Value>> {
        let version = self.arm.api_versions().get(namespace);
        match self.arm.get(path, version, &[], self.deadline).await {
            Ok(value) => Ok(Read::Found(value)),
            Err(error) if error.is_not_found() => Ok(Read::NotFound),
            Err(error) => Err(Stop::azure(&format!("reading the {what} {path}"), &error)),
        }
    }

    /// The pinned api-version of a provider namespace, for writes.
    fn api_version(&self, namespace: &str) -> &str {
        self.arm.api_versions().get(namespace)
    }

    /// The workspace, read again; a workspace that is gone needs no remediation.
    async fn workspace(&self, id: &ArmResourceId) -> Stage<Workspace> {
        match self
            .read(
                id.as_str(),
                "Microsoft.MachineLearningServices",
                "workspace",
            )
            .await?
        {
            Read::Found(value) => Ok(parse::workspace(&value)),
            _ => Err(Stop::Skipped(format!(
                "the workspace {id} no longer exists"
            ))),
        }
    }

    /// The vault, read again.
    async fn vault(&self, vault_id: &ArmResourceId) -> Stage<Read<Vault>> {
        Ok(self
            .read(vault_id.as_str(), "Microsoft.KeyVault", "key vault")
            .await?
            .map(|value| parse::vault(&value)))
    }

    /// A key through ARM: the version-less key (its latest version) or one version.
    async fn key(
        &self,
        vault_id: &ArmResourceId,
        name: &str,
        version: Option<&str>,
    ) -> Stage<Read<Value>> {
        let path = match version {
            Some(version) => format!("{vault_id}/keys/{name}/versions/{version}"),
            None => format!("{vault_id}/keys/{name}"),
        };
        self.read(&path, "Microsoft.KeyVault", "key").await
    }

    /// The rule's verdict on a snapshot of fresh reads.
    fn verdict(&self, rule: RuleId, snapshot: &Snapshot) -> Check {
        let context = rules::Context {
            snapshot,
            now: self.now,
            policy: self.policy,
            trigger: None,
        };
        rules::find(rule)
            .and_then(|rule| rule.check(&context).into_iter().next())
            .unwrap_or(Check {
                rule,
                resource: String::new(),
                status: Status::Unknown,
                observed: format!("rule {rule} reached no verdict").into(),
                expected: "".into(),
            })
    }

    /// Continues with what the rule observed when it still fails; skips when it passes or does
    /// not apply; fails when it cannot tell.
    fn still_failing(&self, rule: RuleId, snapshot: &Snapshot) -> Stage<String> {
        let check = self.verdict(rule, snapshot);
        match check.status {
            Status::Fail(_) => Ok(check.observed.into_owned()),
            Status::Pass => Err(Stop::Skipped(format!(
                "already compliant: {}",
                check.observed
            ))),
            Status::NotApplicable => Err(Stop::Skipped(format!(
                "nothing to remediate: {}",
                check.observed
            ))),
            Status::Unknown => Err(Stop::Failed {
                detail: format!("cannot tell whether {rule} still fails: {}", check.observed),
                transient: false,
            }),
        }
    }

    /// Confirms, after a write, that the rule no longer fails on a fresh read.
    fn verified(&self, rule: RuleId, snapshot: &Snapshot) -> Stage<String> {
        let check = self.verdict(rule, snapshot);
        match check.status {
            Status::Pass | Status::NotApplicable => Ok(check.observed.into_owned()),
            _ => Err(Stop::Failed {
                detail: format!(
                    "the write was accepted but {rule} still does not pass on a fresh read: {}",
                    check.observed
                ),
                transient: false,
            }),
        }
    }
}

/// A snapshot holding only the workspace; each remediation adds the fresh reads its rule needs.
fn partial_snapshot(workspace_id: &ArmResourceId, workspace: Workspace) -> Snapshot {
    Snapshot {
        workspace_id: workspace_id.clone(),
        workspace: Read::Found(workspace),
        vault: None,
        deleted_vault: None,
        key: None,
        latest_key: None,
        rotation_policy: None,
        role_assignments: None,
        endpoints: None,
        providers: None,
        wiring: None,
    }
}

/// Skips, with the reason, a write to a resource outside the subscription allowlist: the finding
/// stays open and says why nothing was done. (The ARM pipeline refuses such requests anyway;
/// this says so before the first read, in words a person can act on.)
fn writable(scope: &SubscriptionScope, id: &ArmResourceId, what: &str) -> Stage<()> {
    if scope.allows(id.subscription()) {
        return Ok(());
    }
    Err(Stop::Skipped(format!(
        "the {what} {id} is in subscription {}, outside CMKGUARD_SUBSCRIPTIONS: cmk-guard writes only inside its allowlist, so a person must fix this (or add the subscription to CMKGUARD_SUBSCRIPTIONS)",
        id.subscription()
    )))
}

/// The CMK vault the workspace names, when cmk-guard may write to it.
fn vault_id(workspace: &Workspace, scope: &SubscriptionScope) -> Stage<ArmResourceId> {
    let text = workspace
        .encryption
        .as_ref()
        .and_then(|e| e.key_vault_arm_id.as_deref())
        .ok_or_else(|| {
            Stop::Skipped(format!(
                "the workspace {} names no CMK key vault",
                workspace.id
            ))
        })?;
    let id = ArmResourceId::parse(text)
        .map_err(|e| Stop::refused(format!("the workspace's keyVaultArmId is unusable: {e}")))?;
    if !id.is_type("Microsoft.KeyVault/vaults") {
        return Err(Stop::refused(format!(
            "the workspace's keyVaultArmId {id} is not a key vault"
        )));
    }
    writable(scope, &id, "key vault")?;
    Ok(id)
}

/// The CMK key a key remediation writes to: the key and the vault the workspace names, with the
/// data-plane client for the key's vault.
struct KeyTarget {
    vault: ArmResourceId,
    key: KeyUrl,
    client: Arc<KeyClient>,
}

/// The workspace's [`KeyTarget`], refused unless the key lives in the vault `keyVaultArmId` names
/// (azure-notes Trap T21: a workspace's key may only move within its vault, and key writes go to
/// the key URL's host) on a host under the Key Vault DNS suffix (checked before any request to it).
fn key_target(workspace: &Workspace, act: &Act<'_>) -> Stage<KeyTarget> {
    let keys = act.keys;
    let vault = vault_id(workspace, act.arm.scope())?;
    let text = workspace
        .encryption
        .as_ref()
        .and_then(|e| e.key_identifier.as_deref())
        .ok_or_else(|| Stop::Skipped(format!("the workspace {} names no CMK key", workspace.id)))?;
    let key = KeyUrl::parse(text)
        .map_err(|e| Stop::refused(format!("the workspace's keyIdentifier is unusable: {e}")))?;
    let client = keys
        .for_key(&key)
        .map_err(|e| Stop::refused(e.message.clone()))?;
    if !key.vault_name().eq_ignore_ascii_case(vault.name()) {
        return Err(Stop::refused(format!(
            "the workspace's keyIdentifier {key} is in vault {} but its keyVaultArmId names {}; cmk-guard only acts on keys in the workspace's own vault",
            key.vault_name(),
            vault.name()
        )));
    }
    Ok(KeyTarget { vault, key, client })
}

/// The key version a fresh ARM read returned, named as the workspace names it.
fn key_version(read: Read<Value>, name: &str, version: Option<&str>) -> Read<KeyVersion> {
    read.map(|value| parse::key_version(&value, name, version))
}

/// A failed data-plane call as an [`AzureError`], classified for retry like ARM's.
fn data_plane_error(request: String, error: &azure_core::Error) -> AzureError {
    use azure_core::error::ErrorKind as CoreKind;
    let message = crate::ids::truncate(&error.to_string());
    match error.kind() {
        CoreKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = *status;
            // azure_core cannot read an error body whose message holds escapes (it borrows the
            // strings), and then reports the status as the code; the body says what happened.
            if let Some(raw) = raw_response {
                let from_body = AzureError::from_response(request.clone(), status, raw.body());
                if from_body.code.is_some() {
                    return from_body;
                }
            }
            AzureError {
                kind: if crate::azure::error::is_transient_status(status) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                },
                status: Some(status),
                code: error_code.clone(),
                message,
                request,
            }
        }
        CoreKind::Io | CoreKind::Connection | CoreKind::Credential => {
            AzureError::transport(request, ErrorKind::Transient, message)
        }
        _ => AzureError::transport(request, ErrorKind::Permanent, message),
    }
}

/// Runs one data-plane call within the deadline.
async fn data_plane<T>(
    request: String,
    deadline: Instant,
    call: impl std::future::Future<Output = azure_core::Result<T>>,
) -> Result<T, AzureError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(data_plane_error(request, &error)),
        Err(_) => Err(AzureError::transport(
            request,
            ErrorKind::Transient,
            "deadline reached",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_answers_for_remediable_rules_only() {
        use crate::outcome::{FindingState, Severity};
        use crate::rules::test_support::{VAULT_ID, WORKSPACE_ID, compliant_snapshot};
        let finding = |rule: &str| Finding {
            rule: RuleId::parse(rule).unwrap(),
            resource: VAULT_ID.to_owned(),
            workspace: WORKSPACE_ID.to_owned(),
            severity: Severity::High,
            state: FindingState::Open,
            observed: String::new(),
            expected: String::new(),
        };
        let snapshot = compliant_snapshot();
        let policy = Policy::default();
        assert_eq!(
            describe(&finding("vault.purge-protection"), &snapshot, &policy).as_deref(),
            Some(format!("would PATCH enablePurgeProtection=true on {VAULT_ID} (irreversible: purge protection cannot be turned off again)").as_str())
        );
        assert_eq!(
            describe(&finding("vault.soft-delete"), &snapshot, &policy),
            None
        );
        for rule in RuleId::ALL {
            let described = describe(&finding(rule.as_str()), &snapshot, &policy);
            assert_eq!(described.is_some(), rule.is_remediable(), "{rule}");
            assert!(described.is_none_or(|s| s.starts_with("would ")), "{rule}");
        }
    }

    #[test]
    fn consent_follows_the_policy() {
        let none = Policy::default();
        assert!(
            !Consent::from_policy(&none, RuleId::parse("vault.purge-protection").unwrap())
                .is_given()
        );
        let policy = Policy::from_toml_str(
            "[remediation.\"vault.purge-protection\"]\nenabled = true\nirreversible_ok = true\n[remediation.\"key.enabled\"]\nenabled = true\n",
            "test.toml",
        )
        .unwrap();
        assert!(
            Consent::from_policy(&policy, RuleId::parse("vault.purge-protection").unwrap())
                .is_given()
        );
        assert!(Consent::from_policy(&policy, RuleId::parse("key.enabled").unwrap()).is_given());
        assert!(!Consent::from_policy(&policy, RuleId::parse("key.expiry").unwrap()).is_given());
        assert!(
            !Consent::from_policy(&policy, RuleId::parse("vault.soft-delete").unwrap()).is_given()
        );
    }

    #[test]
    fn data_plane_errors_keep_status_code_and_retry_decision() {
        let forbidden = azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::Forbidden,
                error_code: Some("ForbiddenByRbac".into()),
                raw_response: None,
            },
            "Caller is not authorized",
        );
        let error = data_plane_error(
            "POST https://kv.vault.azure.net/keys/k/rotate".into(),
            &forbidden,
        );
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert_eq!(error.status, Some(azure_core::http::StatusCode::Forbidden));
        assert_eq!(error.code.as_deref(), Some("ForbiddenByRbac"));
        let detail = match Stop::azure("rotating", &error) {
            Stop::Failed { detail, transient } => {
                assert!(!transient);
                detail
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            detail,
            "rotating failed: POST https://kv.vault.azure.net/keys/k/rotate: HTTP 403 ForbiddenByRbac: Caller is not authorized"
        );
        let throttled = azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::TooManyRequests,
                error_code: None,
                raw_response: None,
            },
            "slow down",
        );
        assert!(data_plane_error("x".into(), &throttled).is_transient());
        let escaped_body = azure_core::error::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::Forbidden,
                error_code: Some("403".into()),
                raw_response: Some(Box::new(azure_core::http::RawResponse::from_bytes(
                    azure_core::http::StatusCode::Forbidden,
                    azure_core::http::headers::Headers::new(),
                    br#"{"error":{"code":"Forbidden","message":"Caller is not authorized.\r\nVault: kv"}}"#.to_vec(),
                ))),
            },
            "403: (body)",
        );
        let from_body = data_plane_error("x".into(), &escaped_body);
        assert_eq!(from_body.code.as_deref(), Some("Forbidden"));
        assert!(from_body.message.starts_with("Caller is not authorized."));
        assert!(from_body.message.ends_with("Vault: kv"));
        let connection =
            azure_core::Error::with_message(azure_core::error::ErrorKind::Connection, "reset");
        assert!(data_plane_error("x".into(), &connection).is_transient());
    }
}
