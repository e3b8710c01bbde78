//! Key Vault `AuditEvent` records, as Azure Monitor streams a vault's diagnostic log to Event
//! Hubs and the host hands a batch of messages to `OnKeyVaultAudit` — turned, without any I/O,
//! into one [`VaultActivity`] per vault: the changes that can break a CMK chain and the uses of
//! keys by services. Everything else (secret and certificate operations, lists, successful key
//! reads by people) is counted and ignored.
//!
//! The record format is the Key Vault logging documentation's (docs/azure-notes.md, *Key Vault
//! audit logs*): `{"records": [...]}` per Event Hub message; each record names the vault in
//! `resourceId` (upper-case in the documentation's example), the operation in `operationName`,
//! the outcome in `properties.httpStatusCode` (a number, or a numeric string) and the caller in
//! `identity.claim`. Fields are read tolerantly: a record that cannot be used is reported and
//! skipped, never a reason to fail the batch (Event Hubs would deliver it again and again and
//! block its partition).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ChangeKind, IntakeSettings, Rejection, ResourceKind, Target, Trigger};
use crate::ids::{ArmResourceId, KeyUrl};

/// At most this many Event Hub messages in one invocation (the host's `maxEventBatchSize`
/// defaults to 100); more are refused as a whole.
pub const MAX_MESSAGES: usize = 1000;
/// At most this many records are looked at in one invocation; the rest are counted as skipped.
pub const MAX_RECORDS: usize = 20_000;
/// At most this many rejected records are named in the reason; the rest are counted.
const NAMED_REJECTIONS: usize = 5;

/// The operations that can change a CMK chain (the Key Vault logging documentation's
/// operation table): the vault, its access policies, and the key's versions, attributes and
/// rotation policy. Matched case-insensitively against `operationName`.
pub const CHAIN_OPERATIONS: &[&str] = &[
    "VaultPut",
    "VaultPatch",
    "VaultDelete",
    "VaultRecover",
    "VaultAccessPolicyChangedEventGridNotification",
    "KeyCreate",
    "KeyImport",
    "KeyUpdate",
    "KeyDelete",
    "KeyPurge",
    "KeyRecover",
    "KeyRestore",
    "KeyRotate",
    "KeyRotateIfDue",
    "KeyRotationPolicySet",
    "KeyNearExpiryEventGridNotification",
    "KeyExpiredEventGridNotification",
];

/// A key operation by which a service uses a CMK: a failure is the CMK outage itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UseOperation {
    Wrap,
    Unwrap,
    Get,
}

impl UseOperation {
    /// The operation by its `operationName`.
    fn parse(operation: &str) -> Option<Self> {
        [
            ("KeyWrap", UseOperation::Wrap),
            ("KeyUnwrap", UseOperation::Unwrap),
            ("KeyGet", UseOperation::Get),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(operation))
        .map(|(_, op)| op)
    }

    /// The Key Vault permission name, as alerts and the docs say it.
    pub const fn as_str(self) -> &'static str {
        match self {
            UseOperation::Wrap => "wrapKey",
            UseOperation::Unwrap => "unwrapKey",
            UseOperation::Get => "get",
        }
    }
}

/// Who made a call, from `identity.claim` and `callerIpAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub object_id: Option<String>,
    pub app_id: Option<String>,
    pub upn: Option<String>,
    pub ip: Option<String>,
}

impl Caller {
    /// Who the caller is, for telling callers apart: the object id, else the application id,
    /// else the sign-in name (lower-case; empty when the record names nobody).
    pub fn key(&self) -> String {
        self.object_id
            .as_deref()
            .or(self.app_id.as_deref())
            .or(self.upn.as_deref())
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// True when `text` (a finding's `observed`, which names callers by these ids) names this
    /// caller by [`Caller::key`]: several identities of one application share its app id.
    pub fn named_in(&self, text: &str) -> bool {
        let key = self.key();
        !key.is_empty() && text.to_ascii_lowercase().contains(&key)
    }
}

impl fmt::Display for Caller {
    /// A person by their sign-in name; an application by its application and object ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(upn) = &self.upn {
            parts.push(upn.clone());
        }
        if let Some(app) = &self.app_id {
            parts.push(format!("application {app}"));
        }
        if let Some(oid) = &self.object_id {
            parts.push(format!("object {oid}"));
        }
        if parts.is_empty() {
            parts.push("an unnamed caller".to_owned());
        }
        if let Some(ip) = &self.ip {
            parts.push(format!("from {ip}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One use of a key by a service, as the log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// The key the call named (with the version it used, when the log says).
    pub key: KeyUrl,
    pub operation: UseOperation,
    /// `properties.httpStatusCode`.
    pub status: u16,
    /// `resultSignature` and `resultDescription`, cleaned and bounded.
    pub result: String,
    pub caller: Caller,
    pub time: Option<OffsetDateTime>,
}

impl KeyUse {
    /// True when the call failed in a way that means the service cannot use the key: refused
    /// (403), gone (404), or rejected (other 4xx such as a disabled key's 400/403). Not a 401:
    /// every Key Vault client's first call is answered 401 with the authentication challenge,
    /// and the log records it. Not a 429 or 5xx either: throttling and server errors are
    /// retried by the client and say nothing about the key.
    pub fn failed(&self) -> bool {
        (400..500).contains(&self.status) && self.status != 401 && self.status != 429
    }

    /// True when the call succeeded (2xx): the service could use the key.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A change that can break the chain: what changed and who changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChange {
    pub operation: String,
    /// The key the operation named; `None` for vault operations.
    pub key: Option<KeyUrl>,
    pub caller: Caller,
    pub time: Option<OffsetDateTime>,
}

/// Everything one batch says about one vault.
#[derive(Debug, Clone)]
pub struct VaultActivity {
    pub vault: ArmResourceId,
    pub changes: Vec<ChainChange>,
    pub uses: Vec<KeyUse>,
}

impl VaultActivity {
    /// The latest time any record of the vault names.
    pub fn latest(&self) -> Option<OffsetDateTime> {
        let changes = self.changes.iter().filter_map(|c| c.time);
        let uses = self.uses.iter().filter_map(|u| u.time);
        changes.chain(uses).max()
    }

    /// The one key every record names, when they all name the same key.
    pub fn only_key(&self) -> Option<&KeyUrl> {
        let mut keys = self
            .changes
            .iter()
            .map(|c| c.key.as_ref())
            .chain(self.uses.iter().map(|u| Some(&u.key)));
        let first = keys.next()??;
        keys.all(|k| k.is_some_and(|k| same_key(k, first)))
            .then_some(first)
    }

    /// The object id of the caller of every change, when one caller made them all.
    pub fn only_caller(&self) -> Option<&str> {
        one_caller(self.changes.iter().map(|c| c.caller.object_id.as_deref()))
    }

    /// True when a service failed to use a key.
    pub fn has_failures(&self) -> bool {
        self.uses.iter().any(KeyUse::failed)
    }

    /// The trigger that re-checks the vault's workspaces: the key when every record names
    /// the same one, else the vault; the uses for `key.use-failures`; the latest record's
    /// time, so that reads cached before it are not trusted.
    pub fn trigger(&self, batch: &str) -> Trigger {
        let target = match self.only_key() {
            Some(key) => Target::Key {
                key: key.clone(),
                vault: self.vault.clone(),
            },
            None => Target::Arm {
                id: self.vault.clone(),
                kind: ResourceKind::Vault,
            },
        };
        let mut operations: Vec<&str> = self.changes.iter().map(|c| c.operation.as_str()).collect();
        operations.extend(self.uses.iter().map(|u| u.operation.as_str()));
        operations.sort_unstable();
        operations.dedup();
        let mut trigger = Trigger::new(
            format!("{batch}/{}", self.vault.name().to_ascii_lowercase()),
            AUDIT_EVENT_TYPE,
            ChangeKind::AuditLog,
            target,
        );
        trigger.operation = Some(operations.join(", "));
        trigger.caller_object_id = self.only_caller().map(str::to_owned);
        trigger.time = self.latest();
        trigger.uses = self.uses.clone();
        trigger
    }
}

/// The `event.type` of an audit-log batch's Outcome (Azure Monitor's records have none).
pub const AUDIT_EVENT_TYPE: &str = "Microsoft.KeyVault.AuditEvent";

/// The object id every one of `callers` names (compared ignoring case), or `None` when one
/// names nobody, two differ, or there are none: what the loop guard may take as the caller.
pub fn one_caller<'a>(mut callers: impl Iterator<Item = Option<&'a str>>) -> Option<&'a str> {
    let first = callers.next()??;
    callers
        .all(|c| c.is_some_and(|c| c.eq_ignore_ascii_case(first)))
        .then_some(first)
}

/// Two key URLs name the same key (host and name; versions aside).
pub fn same_key(a: &KeyUrl, b: &KeyUrl) -> bool {
    a.host() == b.host() && a.name().eq_ignore_ascii_case(b.name())
}

/// A batch, read: the activity per vault, and what was ignored or refused.
#[derive(Debug, Clone, Default)]
pub struct AuditBatch {
    pub messages: usize,
    pub records: usize,
    /// One entry per vault with a change or a use, in order of first appearance.
    pub vaults: Vec<VaultActivity>,
    /// Records ignored, by operation name (bounded names).
    pub ignored: BTreeMap<String, usize>,
    /// Why records were refused (the first few), and how many were.
    pub rejected: Vec<String>,
    pub rejected_count: usize,
    /// Records past [`MAX_RECORDS`], not looked at.
    pub skipped: usize,
    /// Where each vault (lower-case id) is in `vaults`: a batch may name thousands.
    index: HashMap<String, usize>,
    /// Records refused because their subscription may lie under a management group whose
    /// subscriptions were never listed: the batch is worth asking for again.
    pub awaiting_discovery: usize,
}

impl AuditBatch {
    /// Reads the binding's value: an array with one element per Event Hub message (JSON text
    /// or an object), or one message. `Err` only when the value is not a batch at all.
    pub fn parse(value: Value, settings: &IntakeSettings) -> Result<Self, Rejection> {
        let messages = match value {
            Value::Array(messages) => messages,
            Value::Null => {
                return Err(Rejection::new(
                    "messages: null; the Event Hub trigger delivers an array of messages",
                ));
            }
            one => vec![one],
        };
        if messages.len() > MAX_MESSAGES {
            return Err(Rejection::new(format!(
                "messages: {} messages in one invocation; at most {MAX_MESSAGES} are accepted (lower maxEventBatchSize in host.json)",
                messages.len()
            )));
        }
        let mut batch = AuditBatch {
            messages: messages.len(),
            ..AuditBatch::default()
        };
        for (index, message) in messages.into_iter().enumerate() {
            match records_of(message) {
                Ok(records) => {
                    for record in records {
                        batch.add(index, record, settings);
                    }
                }
                Err(why) => batch.reject(format!("message {index}: {why}")),
            }
        }
        Ok(batch)
    }

    fn add(&mut self, message: usize, record: Value, settings: &IntakeSettings) {
        if self.records >= MAX_RECORDS {
            self.skipped += 1;
            return;
        }
        self.records += 1;
        match read_record(&record, settings) {
            Err(why) => {
                if why.awaits_discovery() {
                    self.awaiting_discovery += 1;
                }
                self.reject(format!("message {message}, record {}: {why}", self.records));
            }
            Ok(Record::Ignored(operation)) => {
                let name = crate::text::clean(&operation, crate::text::Limit::chars(64));
                *self.ignored.entry(name.into_owned()).or_default() += 1;
            }
            Ok(Record::Change(vault, change)) => self.activity(vault).changes.push(change),
            Ok(Record::Use(vault, key_use)) => self.activity(vault).uses.push(key_use),
        }
    }

    fn activity(&mut self, vault: ArmResourceId) -> &mut VaultActivity {
        let vaults = &mut self.vaults;
        let index = *self
            .index
            .entry(vault.as_str().to_ascii_lowercase())
            .or_insert_with(|| {
                vaults.push(VaultActivity {
                    vault,
                    changes: Vec::new(),
                    uses: Vec::new(),
                });
                vaults.len() - 1
            });
        &mut self.vaults[index]
    }

    fn reject(&mut self, why: String) {
        self.rejected_count += 1;
        if self.rejected.len() < NAMED_REJECTIONS {
            self.rejected
                .push(crate::text::clean_owned(why, crate::text::FIELD));
        }
    }

    /// Moves the uses made by `object_id` to the ignored counts, and the vaults left with
    /// nothing to the same fate.
    pub fn drop_uses_by(&mut self, object_id: &str) {
        let mut dropped = 0;
        for activity in &mut self.vaults {
            let before = activity.uses.len();
            activity.uses.retain(|u| {
                !u.caller
                    .object_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(object_id))
            });
            dropped += before - activity.uses.len();
        }
        self.vaults
            .retain(|a| !a.changes.is_empty() || !a.uses.is_empty());
        self.index = (self.vaults.iter().enumerate())
            .map(|(i, a)| (a.vault.as_str().to_ascii_lowercase(), i))
            .collect();
        if dropped > 0 {
            *self
                .ignored
                .entry("cmk-guard's own key calls".to_owned())
                .or_default() += dropped;
        }
    }

    /// One line on what was ignored, refused and skipped, for the Outcome's reason.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} record(s) in {} message(s)",
            self.records, self.messages
        )];
        if !self.ignored.is_empty() {
            let ignored: usize = self.ignored.values().sum();
            let names: Vec<String> = self
                .ignored
                .iter()
                .take(8)
                .map(|(name, count)| format!("{name} ×{count}"))
                .collect();
            parts.push(format!(
                "{ignored} cannot change a CMK chain ({})",
                names.join(", ")
            ));
        }
        if self.rejected_count > 0 {
            parts.push(format!(
                "{} refused: {}",
                self.rejected_count,
                self.rejected.join("; ")
            ));
        }
        if self.skipped > 0 {
            parts.push(format!(
                "{} past the first {MAX_RECORDS} not looked at",
                self.skipped
            ));
        }
        parts.join("; ")
    }
}

/// How many times a message that is JSON text is decoded before giving up: the host passes
/// text for `dataType: string`, and a producer that encoded the document once more is common.
const TEXT_DEPTH: usize = 3;

/// The records of one message: `{"records": [...]}` as an object or JSON text.
fn records_of(message: Value) -> Result<Vec<Value>, Rejection> {
    let mut document = message;
    for _ in 0..TEXT_DEPTH {
        let Value::String(text) = &document else {
            break;
        };
        document = serde_json::from_str::<Value>(text)
            .map_err(|e| Rejection::new(format!("not JSON ({e})")))?;
    }
    match document {
        Value::Object(mut map) => match map.remove("records") {
            Some(Value::Array(records)) => Ok(records),
            Some(_) => Err(Rejection::new("`records` is not an array")),
            None => Err(Rejection::new(
                "no `records` array (not an Azure Monitor diagnostic log message)",
            )),
        },
        _ => Err(Rejection::new("not an object with `records`")),
    }
}

/// What one record is to cmk-guard.
enum Record {
    Ignored(String),
    Change(ArmResourceId, ChainChange),
    Use(ArmResourceId, KeyUse),
}

fn read_record(record: &Value, settings: &IntakeSettings) -> Result<Record, Rejection> {
    let Some(fields) = record.as_object() else {
        return Err(Rejection::new("not an object"));
    };
    let operation =
        text(fields, "operationName").ok_or_else(|| Rejection::new("operationName: missing"))?;
    if let Some(category) = text(fields, "category")
        && !category.eq_ignore_ascii_case("AuditEvent")
    {
        return Ok(Record::Ignored(format!("{category} {operation}")));
    }
    let use_operation = UseOperation::parse(operation);
    let change = CHAIN_OPERATIONS
        .iter()
        .find(|name| name.eq_ignore_ascii_case(operation));
    if use_operation.is_none() && change.is_none() {
        return Ok(Record::Ignored(operation.to_owned()));
    }
    let status = status(fields)?;
    // A successful key read by a person is noise; by a service it only matters when it
    // follows a failure, which the engine decides. A failed change changed nothing.
    if change.is_some() && !(200..300).contains(&status) {
        return Ok(Record::Ignored(format!("{operation} (failed)")));
    }
    let resource =
        text(fields, "resourceId").ok_or_else(|| Rejection::new("resourceId: missing"))?;
    let vault =
        ArmResourceId::parse(resource).map_err(|e| Rejection::new(format!("resourceId: {e}")))?;
    if !vault.is_type("Microsoft.KeyVault/vaults") {
        return Err(Rejection::new(format!(
            "resourceId: `{}` is not a key vault",
            crate::text::field(resource)
        )));
    }
    super::classify::check_subscription(vault.subscription(), settings)?;
    let properties = fields.get("properties").and_then(Value::as_object);
    let key = properties
        .map(|p| key_of(p, &vault, settings))
        .transpose()?
        .flatten();
    let caller = caller(fields);
    let time = text(fields, "time").and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    if let Some(operation) = use_operation {
        let key = key.ok_or_else(|| {
            Rejection::new(
                "properties.id: a key use must name the key (https://{vault}.{suffix}/keys/{name}/…)",
            )
        })?;
        let signature = text(fields, "resultSignature").unwrap_or_default();
        let description = text(fields, "resultDescription").unwrap_or_default();
        let result = [signature, description]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let key_use = KeyUse {
            key,
            operation,
            status,
            result: crate::text::clean_owned(result, crate::text::FIELD),
            caller,
            time,
        };
        if operation == UseOperation::Get && !key_use.failed() {
            // Reads succeed all day long; only a failure or a wrap/unwrap says something.
            return Ok(Record::Ignored("KeyGet".to_owned()));
        }
        return Ok(Record::Use(vault, key_use));
    }
    Ok(Record::Change(
        vault,
        ChainChange {
            operation: (*change.unwrap_or(&"")).to_owned(),
            key,
            caller,
            time,
        },
    ))
}

/// The key a record names, from `properties.id` (else `requestUri`): `None` for vault
/// operations; an error when the key is on a foreign host or in another vault.
fn key_of(
    properties: &Map<String, Value>,
    vault: &ArmResourceId,
    settings: &IntakeSettings,
) -> Result<Option<KeyUrl>, Rejection> {
    let candidates = ["id", "requestUri"]
        .into_iter()
        .filter_map(|name| properties.get(name).and_then(Value::as_str));
    for candidate in candidates {
        let Some(text) = key_path(candidate) else {
            continue;
        };
        let key =
            KeyUrl::parse(&text).map_err(|e| Rejection::new(format!("properties.id: {e}")))?;
        if !key.is_under(&settings.keyvault_dns_suffix) {
            return Err(Rejection::new(format!(
                "properties.id: key host {} is not under the Key Vault DNS suffix {} (CMKGUARD_KEYVAULT_DNS_SUFFIX)",
                crate::text::field(key.host()),
                settings.keyvault_dns_suffix
            )));
        }
        if !key.vault_name().eq_ignore_ascii_case(vault.name()) {
            return Err(Rejection::new(format!(
                "properties.id: key vault {} does not match the record's vault {}",
                key.vault_name(),
                crate::text::field(vault.name())
            )));
        }
        return Ok(Some(key));
    }
    Ok(None)
}

/// `https://{vault}.{suffix}/keys/{name}[/{version}]` from a key id or request URI: the query
/// dropped, and `/rotationpolicy` (the rotation-policy operations' path) taken as the key.
fn key_path(text: &str) -> Option<String> {
    let without_query = text.split(['?', '#']).next().unwrap_or(text);
    let (origin, path) = without_query
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))?;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let is_version = |v: &str| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
    match segments.as_slice() {
        // `POST /keys/restore` names no key in its path (`properties.id` does).
        ["keys", "restore"] => None,
        ["keys", name, version, ..] if is_version(version) => {
            Some(format!("https://{origin}/keys/{name}/{version}"))
        }
        // `/keys/{name}`, and operations on a key without a version: `/rotate`,
        // `/rotationpolicy`, `/create`, `/wrapkey`, `/import`, ….
        ["keys", name, ..] => Some(format!("https://{origin}/keys/{name}")),
        _ => None,
    }
}

/// `properties.httpStatusCode` as a number or numeric string; when absent, the outcome in
/// `resultType`/`resultSignature` (`Success`/`OK` → 200; anything else is unknown).
fn status(fields: &Map<String, Value>) -> Result<u16, Rejection> {
    let code = fields
        .get("properties")
        .and_then(|p| p.get("httpStatusCode"));
    match code {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..600).contains(n))
            .ok_or_else(|| {
                Rejection::new(format!(
                    "properties.httpStatusCode: {n} is not an HTTP status"
                ))
            }),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..600).contains(n))
            .ok_or_else(|| {
                Rejection::new(format!(
                    "properties.httpStatusCode: `{}` is not an HTTP status",
                    crate::text::field(s)
                ))
            }),
        Some(other) if !other.is_null() => Err(Rejection::new(
            "properties.httpStatusCode: expected a number",
        )),
        _ => {
            let success = ["resultType", "resultSignature"].iter().any(|name| {
                text(fields, name).is_some_and(|t| {
                    t.eq_ignore_ascii_case("Success") || t.eq_ignore_ascii_case("OK")
                })
            });
            if success {
                Ok(200)
            } else {
                Err(Rejection::new(
                    "properties.httpStatusCode: missing, and resultType does not say Success",
                ))
            }
        }
    }
}

fn caller(fields: &Map<String, Value>) -> Caller {
    let claim = fields
        .get("identity")
        .and_then(|i| i.get("claim"))
        .and_then(Value::as_object);
    let claim_text = |names: &[&str]| {
        claim.and_then(|c| {
            names
                .iter()
                .find_map(|name| c.get(*name).and_then(Value::as_str))
                .filter(|t| !t.is_empty())
                .map(|t| crate::text::field(t).into_owned())
        })
    };
    Caller {
        object_id: claim_text(&[
            "http://schemas.microsoft.com/identity/claims/objectidentifier",
            "oid",
        ]),
        app_id: claim_text(&["appid", "azp"]),
        upn: claim_text(&[
            "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
            "upn",
        ]),
        ip: text(fields, "callerIpAddress")
            .filter(|t| !t.is_empty())
            .map(|t| crate::text::field(t).into_owned()),
    }
}

/// A string field, or `None` when it is absent, null or not text.
fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests;
