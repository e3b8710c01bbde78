//! Walking the CMK chain workspace → vault → key, shared by the rules: each step either yields
//! the next link or says why the rule cannot judge ([`Gate`]), so every rule treats missing data
//! the same way.

use super::{Check, Status};
use crate::catalogue::RuleId;
use crate::ids::{IdError, KeyUrl};
use crate::snapshot::{Encryption, KeyVersion, Read, Snapshot, Vault, Workspace};

/// Why a rule reaches no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// The rule does not apply (no CMK, the vault is gone and another rule says so, …).
    NotApplicable(String),
    /// The data is missing or unreadable; `guard.visibility` reports it.
    Unknown(String),
}

impl Gate {
    /// The check a rule returns when it stops at this gate.
    pub(crate) fn check(
        self,
        rule: RuleId,
        resource: String,
        expected: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Check {
        let (status, why) = match self {
            Gate::NotApplicable(why) => (Status::NotApplicable, why),
            Gate::Unknown(why) => (Status::Unknown, why),
        };
        Check::new(rule, resource, status, why, expected)
    }
}

/// What the rules quote about the chain, worked out once per evaluation and lent to every rule.
/// An evaluation runs on every relevant event, and building the same ids and labels and parsing
/// the same key URL in each of the eighteen rules was most of its cost.
#[derive(Debug)]
pub(crate) struct Links<'a> {
    /// What workspace rules are about: the workspace itself.
    pub(crate) workspace: &'a str,
    /// What vault rules are about: the vault's ARM id as the workspace names it.
    pub(crate) vault: &'a str,
    /// What key rules are about: the key URL as the workspace names it (with its pinned version,
    /// if any), so a finding keeps its identity across reads until the workspace is repointed.
    pub(crate) key: &'a str,
    /// The workspace's subscription as an ARM id, `/subscriptions/{id}`.
    pub(crate) subscription: String,
    /// The workspace's `keyIdentifier`, parsed; `None` when the workspace names no key.
    pub(crate) key_url: Option<Result<KeyUrl, IdError>>,
    /// [`key_label`] of the key version in use; empty when that key was not read.
    pub(crate) key_label: String,
    /// When the key version in use expires, as [`format_unix`] writes it; empty when that key
    /// was not read or has no expiration date.
    pub(crate) key_expires_at: String,
}

impl<'a> Links<'a> {
    pub(crate) fn new(snapshot: &'a Snapshot) -> Self {
        let workspace = snapshot.workspace_id.as_str();
        let encryption = encryption(snapshot);
        let vault = encryption
            .and_then(|e| e.key_vault_arm_id.as_deref())
            .unwrap_or(workspace);
        let key = encryption
            .and_then(|e| e.key_identifier.as_deref())
            .unwrap_or(workspace);
        let subscription = snapshot.workspace_id.subscription().as_str();
        let key_read = snapshot.key.as_ref().and_then(Read::found);
        Self {
            subscription: ["/subscriptions/", subscription].concat(),
            key_url: encryption
                .and_then(|e| e.key_identifier.as_deref())
                .map(KeyUrl::parse),
            key_label: key_read.map(key_label).unwrap_or_default(),
            key_expires_at: key_read
                .and_then(|key| key.expires)
                .map(format_unix)
                .unwrap_or_default(),
            workspace,
            vault,
            key,
        }
    }

    /// The workspace's key URL, when it names one that parses.
    pub(crate) fn key_url(&self) -> Option<&KeyUrl> {
        self.key_url.as_ref()?.as_ref().ok()
    }
}

/// The workspace, when it was read.
pub(crate) fn workspace(snapshot: &Snapshot) -> Result<&Workspace, Gate> {
    match &snapshot.workspace {
        Read::Found(workspace) => Ok(workspace),
        Read::NotFound => Err(Gate::NotApplicable("the workspace no longer exists".into())),
        Read::Failed(_) => Err(Gate::Unknown("the workspace could not be read".into())),
    }
}

/// True when the workspace's `encryption.status` is `Enabled`.
pub(crate) fn uses_cmk(workspace: &Workspace) -> bool {
    workspace
        .encryption
        .as_ref()
        .and_then(|e| e.status.as_deref())
        .is_some_and(|status| status.eq_ignore_ascii_case("Enabled"))
}

/// The workspace's CMK settings, when it uses CMK.
pub(crate) fn cmk(snapshot: &Snapshot) -> Result<(&Workspace, &Encryption), Gate> {
    let workspace = workspace(snapshot)?;
    match &workspace.encryption {
        Some(encryption) if uses_cmk(workspace) => Ok((workspace, encryption)),
        _ => Err(Gate::NotApplicable(
            "the workspace does not use a customer-managed key".into(),
        )),
    }
}

/// The CMK vault, when it exists and was read.
pub(crate) fn vault(snapshot: &Snapshot) -> Result<&Vault, Gate> {
    let (_, encryption) = cmk(snapshot)?;
    if encryption.key_vault_arm_id.is_none() {
        return Err(Gate::Unknown(
            "the workspace's encryption names no key vault".into(),
        ));
    }
    match &snapshot.vault {
        Some(Read::Found(vault)) => Ok(vault),
        Some(Read::NotFound) => Err(Gate::NotApplicable(
            "the key vault does not exist (see vault.exists)".into(),
        )),
        Some(Read::Failed(_)) => Err(Gate::Unknown("the key vault could not be read".into())),
        None => Err(Gate::Unknown("the key vault was not read".into())),
    }
}

/// The key version the workspace uses, when it exists and was read.
pub(crate) fn key(snapshot: &Snapshot) -> Result<&KeyVersion, Gate> {
    vault(snapshot)?;
    match &snapshot.key {
        Some(Read::Found(key)) => Ok(key),
        Some(Read::NotFound) => Err(Gate::NotApplicable(
            "the key does not exist (see key.exists)".into(),
        )),
        Some(Read::Failed(_)) => Err(Gate::Unknown("the key could not be read".into())),
        None => Err(Gate::Unknown("the key was not read".into())),
    }
}

/// A key version's name for messages: `name/version` or `name`.
pub(crate) fn key_label(key: &KeyVersion) -> String {
    match &key.version {
        Some(version) => [key.key_name.as_str(), "/", version].concat(),
        None => key.key_name.clone(),
    }
}

/// A Unix time as RFC 3339 for messages; the raw number if it is out of range.
pub(crate) fn format_unix(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{seconds} (seconds since 1970)"))
}

fn encryption(snapshot: &Snapshot) -> Option<&Encryption> {
    snapshot.workspace.found()?.encryption.as_ref()
}
