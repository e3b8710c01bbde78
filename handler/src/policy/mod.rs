//! The policy file (docs/architecture.md *Policy file*): per-rule switches, severities and
//! thresholds, consent to remediations, notification routing, exemptions and scope, in TOML.
//!
//! The file is read once, at start, and any mistake stops cmk-guard with a message naming the
//! line and key, e.g. ``policy.toml: line 7, key `rules."key.expiry".warn_days`: …``. Unknown
//! keys and unknown rule ids are errors, so a typo never silently turns a check off. The file's
//! shape (the `Raw*` types) is kept apart from the validated runtime [`Policy`].
//! `docs/rules.md` is the reference for users.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use time::{Date, Month};
use toml::Spanned;

use crate::ids::{ArmResourceId, KeyUrl, is_guid};
use crate::outcome::Severity;
use crate::rules::{self, Remediation};

/// Where the built-in policy says it came from.
pub const BUILT_IN: &str = "built-in policy";

/// The validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file the policy came from, or [`BUILT_IN`], for messages.
    pub source: String,
    disabled: BTreeSet<&'static str>,
    severities: BTreeMap<&'static str, Severity>,
    key_expiry: ExpiryThresholds,
    min_rsa_bits: u32,
    azure_ml_object_ids: Vec<String>,
    remediation: BTreeMap<&'static str, RemediationConsent>,
    key_rotation_policy: RotationPolicySettings,
    pub notify: Notify,
    pub exemptions: Vec<Exemption>,
    pub scope: Scope,
}

/// `key.expiry` thresholds, in days before the key version in use expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryThresholds {
    /// Within this many days the finding is medium.
    pub warn_days: u32,
    /// Within this many days the finding is high.
    pub critical_days: u32,
}

/// What the policy says about one rule's remediation. Off unless the file turns it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemediationConsent {
    pub enabled: bool,
    /// Consent to a change that cannot be undone (purge protection).
    pub irreversible_ok: bool,
}

/// The rotation policy the `key.rotation-policy` remediation writes
/// (`[remediation."key.rotation-policy"]`). Durations are ISO-8601, as Key Vault takes them.
/// The default rotates a key 30 days before it expires, notifies 30 days before, and gives each
/// new version a year: a CMK then never reaches its expiry unattended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicySettings {
    /// `attributes.expiryTime`: how long each new key version lives.
    pub expiry_time: String,
    /// A `Rotate` action this long before the version expires.
    pub rotate_before_expiry: String,
    /// A `Notify` action (Event Grid `KeyNearExpiry`) this long before the version expires.
    pub notify_before_expiry: String,
}

impl Default for RotationPolicySettings {
    fn default() -> Self {
        Self {
            expiry_time: "P1Y".to_owned(),
            rotate_before_expiry: "P30D".to_owned(),
            notify_before_expiry: "P30D".to_owned(),
        }
    }
}

/// Which finding severities go to which channel, and how often open findings are re-sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub teams: Vec<Severity>,
    pub email: Vec<Severity>,
    pub webhook: Vec<Severity>,
    /// Hours between reminders for a finding that stays open; 0 sends none.
    pub reminder_hours: u32,
}

impl Default for Notify {
    fn default() -> Self {
        use Severity::*;
        Self {
            teams: vec![Critical, High, Medium],
            email: vec![Critical, High],
            webhook: vec![Critical, High, Medium, Low],
            reminder_hours: 24,
        }
    }
}

/// An accepted exception to one rule for one resource (or everything below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub rule: &'static str,
    /// An ARM id or key URL; covers itself and what lies below it on `/` boundaries, and a
    /// workspace id covers all of that workspace's findings of the rule.
    pub resource: String,
    pub reason: String,
    /// The last day (UTC) the exemption applies; `None` for no end.
    pub expires: Option<Date>,
}

impl Exemption {
    /// True when this exemption names the rule and the finding's resource or workspace.
    pub fn covers(&self, rule: &str, resource: &str, workspace: &str) -> bool {
        self.rule == rule
            && (rules::is_at_or_below(&self.resource, resource)
                || rules::is_at_or_below(&self.resource, workspace))
    }

    /// True once `today` (UTC) is past the last day.
    pub fn is_expired(&self, today: Date) -> bool {
        self.expires.is_some_and(|last_day| today > last_day)
    }
}

/// Which workspaces must use CMK at all (`workspace.cmk-enabled`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// When set, only workspaces carrying this tag (any value; tag names compare
    /// case-insensitively, as in Azure) must use CMK; otherwise all must.
    pub require_cmk_tag: Option<String>,
}

impl Scope {
    /// True when a workspace with these tags must use CMK.
    pub fn requires_cmk(&self, tags: &BTreeMap<String, String>) -> bool {
        match &self.require_cmk_tag {
            None => true,
            Some(tag) => tags.keys().any(|name| name.eq_ignore_ascii_case(tag)),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            source: BUILT_IN.to_owned(),
            disabled: BTreeSet::new(),
            severities: BTreeMap::new(),
            key_expiry: ExpiryThresholds {
                warn_days: 30,
                critical_days: 7,
            },
            min_rsa_bits: 3072,
            azure_ml_object_ids: Vec::new(),
            remediation: BTreeMap::new(),
            key_rotation_policy: RotationPolicySettings::default(),
            notify: Notify::default(),
            exemptions: Vec::new(),
            scope: Scope::default(),
        }
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: name.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &name)
    }

    /// Parses and validates policy text; `source_name` names it in messages and in
    /// [`Policy::source`].
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|error| {
            let at = error.span().map(|span| span.start);
            invalid(text, source_name, at, error.message())
        })?;
        let fail = |span: Range<usize>, message: String| {
            invalid(text, source_name, Some(span.start), &message)
        };
        let mut policy = Policy {
            source: source_name.to_owned(),
            ..Policy::default()
        };
        for (id, settings) in raw.rules {
            let rule = known_rule(id.get_ref()).map_err(|message| fail(id.span(), message))?;
            settings.apply(rule, &mut policy, &fail)?;
        }
        for (id, consent) in raw.remediation {
            let rule = known_rule(id.get_ref()).map_err(|message| fail(id.span(), message))?;
            if let Some(settings) = consent.rotation_policy(rule, id.span(), &fail)? {
                policy.key_rotation_policy = settings;
            }
            policy
                .remediation
                .insert(rule.id, consent.validate(rule, &id, &fail)?);
        }
        if let Some(notify) = raw.notify {
            policy.notify = notify.validate(&fail)?;
        }
        for exemption in raw.exemptions {
            policy.exemptions.push(exemption.validate(&fail)?);
        }
        if let Some(scope) = raw.scope {
            policy.scope = scope.validate(&fail)?;
        }
        Ok(policy)
    }

    /// False when the policy turns the rule off (`enabled = false`).
    pub fn rule_enabled(&self, rule: &str) -> bool {
        !self.disabled.contains(rule)
    }

    /// The severity the policy imposes on every finding of the rule, if any.
    pub fn severity_override(&self, rule: &str) -> Option<Severity> {
        self.severities.get(rule).copied()
    }

    pub fn key_expiry(&self) -> ExpiryThresholds {
        self.key_expiry
    }

    /// The smallest RSA modulus that passes `key.type-size`.
    pub fn min_rsa_bits(&self) -> u32 {
        self.min_rsa_bits
    }

    /// Object ids of Azure ML's first-party service principal in this tenant, trusted by
    /// `managed-resources.tamper`.
    pub fn azure_ml_object_ids(&self) -> &[String] {
        &self.azure_ml_object_ids
    }

    /// What the policy says about a rule's remediation.
    pub fn remediation(&self, rule: &str) -> RemediationConsent {
        self.remediation.get(rule).copied().unwrap_or_default()
    }

    /// The rotation policy the `key.rotation-policy` remediation writes.
    pub fn key_rotation_policy(&self) -> &RotationPolicySettings {
        &self.key_rotation_policy
    }

    /// True when the policy allows remediating the rule (in `remediate` mode): the rule has a
    /// remediation, the policy enables it, and an irreversible one also has `irreversible_ok`.
    pub fn allows_remediation(&self, rule: &str) -> bool {
        let consent = self.remediation(rule);
        consent.enabled
            && match rules::find(rule).map(|r| r.remediation) {
                Some(Remediation::Reversible) => true,
                Some(Remediation::Irreversible) => consent.irreversible_ok,
                Some(Remediation::None) | None => false,
            }
    }

    /// One line on what the policy changes from the defaults, for `cmk-guard policy check`.
    pub fn summary(&self, today: Date) -> String {
        let list = |items: Vec<&str>| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let expired = self
            .exemptions
            .iter()
            .filter(|e| e.is_expired(today))
            .count();
        let remediations = rules::RULES
            .iter()
            .map(|r| r.id)
            .filter(|id| self.allows_remediation(id))
            .collect();
        let scope = match &self.scope.require_cmk_tag {
            None => "CMK required for all workspaces".to_owned(),
            Some(tag) => format!("CMK required for workspaces tagged `{tag}`"),
        };
        format!(
            "{} rules, disabled: {}; severity overrides: {}; key.expiry warn {} / critical {} days; min RSA {} bits; remediation allowed: {}; {} exemption(s), {expired} expired; {scope}",
            rules::RULES.len(),
            list(self.disabled.iter().copied().collect()),
            self.severities.len(),
            self.key_expiry.warn_days,
            self.key_expiry.critical_days,
            self.min_rsa_bits,
            list(remediations),
            self.exemptions.len(),
        )
    }
}

/// Why a policy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: {}{message}", location(*.line, .key.as_deref()))]
    Invalid {
        source_name: String,
        line: Option<usize>,
        /// The dotted key, e.g. `rules."key.expiry".warn_days` or `exemptions[0]`.
        key: Option<String>,
        message: String,
    },
}

fn location(line: Option<usize>, key: Option<&str>) -> String {
    match (line, key) {
        (Some(line), Some(key)) => format!("line {line}, key `{key}`: "),
        (Some(line), None) => format!("line {line}: "),
        (None, _) => String::new(),
    }
}

fn invalid(text: &str, source_name: &str, at: Option<usize>, message: &str) -> PolicyError {
    let (line, key) = match at {
        Some(offset) => {
            let (line, key) = locate(text, offset);
            (Some(line), key)
        }
        None => (None, None),
    };
    PolicyError::Invalid {
        source_name: source_name.to_owned(),
        line,
        key,
        message: message.trim().to_owned(),
    }
}

/// The 1-based line of `offset` and the dotted key written there (best effort: the nearest
/// `key =` on or above the line, under the nearest table header).
fn locate(text: &str, offset: usize) -> (usize, Option<String>) {
    let lines: Vec<&str> = text.split('\n').collect();
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let index = before
        .matches('\n')
        .count()
        .min(lines.len().saturating_sub(1));
    let header = (0..=index)
        .rev()
        .find_map(|i| header_of(lines[i]).map(|header| (i, header)));
    let first_key_line = header.as_ref().map_or(0, |(i, _)| i + 1);
    let key = (first_key_line..=index)
        .rev()
        .find_map(|i| key_of(lines[i]));
    let table = header.map(|(at, (name, is_array))| {
        if is_array {
            let position = lines[..at]
                .iter()
                .filter(|l| header_of(l) == Some((name.clone(), true)))
                .count();
            format!("{name}[{position}]")
        } else {
            name
        }
    });
    let dotted = match (table, key) {
        (Some(table), Some(key)) => Some(format!("{table}.{key}")),
        (table, key) => table.or(key),
    };
    (index + 1, dotted)
}

/// `[a.b]` → (`a.b`, false); `[[a]]` → (`a`, true).
fn header_of(line: &str) -> Option<(String, bool)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("[[") {
        return rest
            .split("]]")
            .next()
            .map(|name| (name.trim().to_owned(), true));
    }
    let rest = line.strip_prefix('[')?;
    rest.split(']')
        .next()
        .map(|name| (name.trim().to_owned(), false))
}

/// `key = value` → `key`.
fn key_of(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('#') || line.starts_with('[') {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_owned()).filter(|key| !key.is_empty())
}

fn known_rule(id: &str) -> Result<&'static rules::Rule, String> {
    rules::find(id).ok_or_else(|| {
        let known: Vec<&str> = rules::RULES.iter().map(|r| r.id).collect();
        format!("unknown rule `{id}`; the rules are {}", known.join(", "))
    })
}

type Fail<'a> = dyn Fn(Range<usize>, String) -> PolicyError + 'a;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    rules: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default)]
    remediation: BTreeMap<Spanned<String>, RawRemediation>,
    notify: Option<RawNotify>,
    #[serde(default)]
    exemptions: Vec<RawExemption>,
    scope: Option<RawScope>,
}

/// The rule no policy can turn off or exempt: without it an unread resource reads as compliant.
const ALWAYS_ON: &str = "guard.visibility";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    enabled: Option<Spanned<bool>>,
    severity: Option<Severity>,
    warn_days: Option<Spanned<u32>>,
    critical_days: Option<Spanned<u32>>,
    min_rsa_bits: Option<Spanned<u32>>,
    azure_ml_object_ids: Option<Vec<Spanned<String>>>,
}

impl RawRule {
    fn apply(
        self,
        rule: &rules::Rule,
        policy: &mut Policy,
        fail: &Fail,
    ) -> Result<(), PolicyError> {
        let only_for = |value_span: Range<usize>, key: &str, owner: &str| {
            fail(
                value_span,
                format!("`{key}` applies only to rule `{owner}`, not `{}`", rule.id),
            )
        };
        if let Some(enabled) = &self.enabled
            && !*enabled.get_ref()
        {
            if rule.id == ALWAYS_ON {
                return Err(fail(
                    enabled.span(),
                    format!(
                        "`{ALWAYS_ON}` cannot be turned off: it is how cmk-guard says what it could not read, so that silence never reads as compliant; grant the reads or fix the reference instead"
                    ),
                ));
            }
            policy.disabled.insert(rule.id);
        }
        if let Some(severity) = self.severity {
            policy.severities.insert(rule.id, severity);
        }
        for (value, key) in [
            (&self.warn_days, "warn_days"),
            (&self.critical_days, "critical_days"),
        ] {
            if let Some(value) = value
                && rule.id != "key.expiry"
            {
                return Err(only_for(value.span(), key, "key.expiry"));
            }
        }
        if let Some(warn_days) = &self.warn_days {
            if *warn_days.get_ref() > 3650 {
                return Err(fail(
                    warn_days.span(),
                    "warn_days must be at most 3650".into(),
                ));
            }
            policy.key_expiry.warn_days = *warn_days.get_ref();
        }
        if let Some(critical_days) = &self.critical_days {
            policy.key_expiry.critical_days = *critical_days.get_ref();
        }
        let thresholds = policy.key_expiry;
        if thresholds.critical_days > thresholds.warn_days {
            let span = self
                .critical_days
                .as_ref()
                .or(self.warn_days.as_ref())
                .map(Spanned::span)
                .unwrap_or_default();
            return Err(fail(
                span,
                format!(
                    "critical_days ({}) must not exceed warn_days ({})",
                    thresholds.critical_days, thresholds.warn_days
                ),
            ));
        }
        if let Some(bits) = &self.min_rsa_bits {
            if rule.id != "key.type-size" {
                return Err(only_for(bits.span(), "min_rsa_bits", "key.type-size"));
            }
            if ![2048, 3072, 4096].contains(bits.get_ref()) {
                return Err(fail(
                    bits.span(),
                    format!(
                        "min_rsa_bits must be 2048, 3072 or 4096, not {}",
                        bits.get_ref()
                    ),
                ));
            }
            policy.min_rsa_bits = *bits.get_ref();
        }
        if let Some(ids) = self.azure_ml_object_ids {
            for id in ids {
                if rule.id != "managed-resources.tamper" {
                    return Err(only_for(
                        id.span(),
                        "azure_ml_object_ids",
                        "managed-resources.tamper",
                    ));
                }
                if !is_guid(id.get_ref()) {
                    return Err(fail(
                        id.span(),
                        format!("`{}` is not an object id (a GUID)", id.get_ref()),
                    ));
                }
                policy.azure_ml_object_ids.push(id.into_inner());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemediation {
    enabled: Option<Spanned<bool>>,
    irreversible_ok: Option<Spanned<bool>>,
    expiry_time: Option<Spanned<String>>,
    rotate_before_expiry: Option<Spanned<String>>,
    notify_before_expiry: Option<Spanned<String>>,
}

/// Key Vault refuses a rotation policy whose `expiryTime` is shorter than this.
const MIN_KEY_EXPIRY_DAYS: u32 = 28;
/// Key Vault's shortest `timeBeforeExpiry`.
const MIN_BEFORE_EXPIRY_DAYS: u32 = 7;

impl RawRemediation {
    /// The rotation-policy settings, when this is `key.rotation-policy`'s section and it sets
    /// any; an error when another rule's section sets them or a duration is unusable.
    fn rotation_policy(
        &self,
        rule: &rules::Rule,
        section: Range<usize>,
        fail: &Fail,
    ) -> Result<Option<RotationPolicySettings>, PolicyError> {
        let given = [
            (&self.expiry_time, "expiry_time"),
            (&self.rotate_before_expiry, "rotate_before_expiry"),
            (&self.notify_before_expiry, "notify_before_expiry"),
        ];
        if rule.id != "key.rotation-policy" {
            return match given
                .iter()
                .find_map(|(value, key)| value.as_ref().map(|v| (v, key)))
            {
                Some((value, key)) => Err(fail(
                    value.span(),
                    format!(
                        "`{key}` applies only to remediation `key.rotation-policy`, not `{}`",
                        rule.id
                    ),
                )),
                None => Ok(None),
            };
        }
        if given.iter().all(|(value, _)| value.is_none()) {
            return Ok(None);
        }
        let defaults = RotationPolicySettings::default();
        let duration = |value: &Option<Spanned<String>>, default: &str| match value {
            Some(text) => {
                let trimmed = text.get_ref().trim();
                iso_duration_days(trimmed)
                    .map(|days| (trimmed.to_owned(), days, text.span()))
                    .ok_or_else(|| {
                        fail(
                            text.span(),
                            format!(
                                "`{trimmed}` is not an ISO-8601 duration in years, months, weeks or days such as P1Y or P30D"
                            ),
                        )
                    })
            }
            None => Ok((
                default.to_owned(),
                iso_duration_days(default).unwrap_or(0),
                section.clone(),
            )),
        };
        let (expiry_time, expiry_days, expiry_span) =
            duration(&self.expiry_time, &defaults.expiry_time)?;
        if expiry_days < MIN_KEY_EXPIRY_DAYS {
            return Err(fail(
                expiry_span,
                format!(
                    "expiry_time must be at least {MIN_KEY_EXPIRY_DAYS} days (Key Vault's minimum)"
                ),
            ));
        }
        let before_expiry = |value: &Option<Spanned<String>>, default: &str, key: &str| {
            let (text, days, span) = duration(value, default)?;
            if days < MIN_BEFORE_EXPIRY_DAYS || days >= expiry_days {
                return Err(fail(
                    span,
                    format!(
                        "{key} must be at least {MIN_BEFORE_EXPIRY_DAYS} days and shorter than expiry_time ({expiry_time})"
                    ),
                ));
            }
            Ok(text)
        };
        let rotate_before_expiry = before_expiry(
            &self.rotate_before_expiry,
            &defaults.rotate_before_expiry,
            "rotate_before_expiry",
        )?;
        let notify_before_expiry = before_expiry(
            &self.notify_before_expiry,
            &defaults.notify_before_expiry,
            "notify_before_expiry",
        )?;
        Ok(Some(RotationPolicySettings {
            expiry_time,
            rotate_before_expiry,
            notify_before_expiry,
        }))
    }

    fn validate(
        self,
        rule: &rules::Rule,
        id: &Spanned<String>,
        fail: &Fail,
    ) -> Result<RemediationConsent, PolicyError> {
        let consent = RemediationConsent {
            enabled: self.enabled.as_ref().is_some_and(|e| *e.get_ref()),
            irreversible_ok: self.irreversible_ok.as_ref().is_some_and(|e| *e.get_ref()),
        };
        match rule.remediation {
            Remediation::None => Err(fail(
                id.span(),
                format!("rule `{}` has no remediation", rule.id),
            )),
            Remediation::Reversible => match &self.irreversible_ok {
                Some(flag) => Err(fail(
                    flag.span(),
                    format!(
                        "the remediation of `{}` can be undone; irreversible_ok applies only to vault.purge-protection",
                        rule.id
                    ),
                )),
                None => Ok(consent),
            },
            Remediation::Irreversible if consent.enabled && !consent.irreversible_ok => {
                let span = self.enabled.as_ref().map(Spanned::span).unwrap_or_default();
                Err(fail(
                    span,
                    format!(
                        "the remediation of `{}` cannot be undone: also set irreversible_ok = true to allow it",
                        rule.id
                    ),
                ))
            }
            Remediation::Irreversible => Ok(consent),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    teams: Option<Vec<Severity>>,
    email: Option<Vec<Severity>>,
    webhook: Option<Vec<Severity>>,
    reminder_hours: Option<Spanned<u32>>,
}

impl RawNotify {
    fn validate(self, fail: &Fail) -> Result<Notify, PolicyError> {
        let defaults = Notify::default();
        let reminder_hours = match self.reminder_hours {
            Some(hours) if *hours.get_ref() > 8760 => {
                return Err(fail(
                    hours.span(),
                    "reminder_hours must be at most 8760 (a year)".into(),
                ));
            }
            Some(hours) => hours.into_inner(),
            None => defaults.reminder_hours,
        };
        Ok(Notify {
            teams: self.teams.unwrap_or(defaults.teams),
            email: self.email.unwrap_or(defaults.email),
            webhook: self.webhook.unwrap_or(defaults.webhook),
            reminder_hours,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExemption {
    rule: Spanned<String>,
    resource: Spanned<String>,
    reason: Spanned<String>,
    expires: Option<Spanned<toml::Value>>,
}

impl RawExemption {
    fn validate(self, fail: &Fail) -> Result<Exemption, PolicyError> {
        let rule = known_rule(self.rule.get_ref()).map_err(|m| fail(self.rule.span(), m))?;
        if rule.id == ALWAYS_ON {
            return Err(fail(
                self.rule.span(),
                format!(
                    "`{ALWAYS_ON}` cannot be exempted: a resource cmk-guard cannot read would then look compliant; grant the read or fix the reference instead"
                ),
            ));
        }
        let resource = self.resource.get_ref().trim();
        if ArmResourceId::parse(resource).is_err() && KeyUrl::parse(resource).is_err() {
            return Err(fail(
                self.resource.span(),
                format!("`{resource}` is neither an ARM resource id nor a Key Vault key URL"),
            ));
        }
        let reason = self.reason.get_ref().trim();
        if reason.is_empty() {
            return Err(fail(
                self.reason.span(),
                "an exemption needs a reason".into(),
            ));
        }
        let expires = match &self.expires {
            Some(value) => Some(date(value.get_ref()).ok_or_else(|| {
                fail(
                    value.span(),
                    "expires must be a date such as 2027-01-31 or \"2027-01-31\"".into(),
                )
            })?),
            None => None,
        };
        Ok(Exemption {
            rule: rule.id,
            resource: resource.to_owned(),
            reason: reason.to_owned(),
            expires,
        })
    }
}

/// The length in days of a date-only ISO-8601 duration (`P1Y`, `P2M`, `P30D`, `P1Y6M`), a year
/// counted as 365 days and a month as 30, which is all the comparisons above need. Time parts
/// (`PT12H`) are refused: Key Vault's rotation policy works in days.
fn iso_duration_days(text: &str) -> Option<u32> {
    let mut rest = text.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let mut days: u32 = 0;
    for (unit, factor) in [('Y', 365), ('M', 30), ('W', 7), ('D', 1)] {
        if let Some((number, tail)) = rest.split_once(unit)
            && !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
        {
            let value: u32 = number.parse().ok()?;
            days = days.checked_add(value.checked_mul(factor)?)?;
            rest = tail;
        }
    }
    rest.is_empty().then_some(days)
}

/// A TOML local date (`2027-01-31`) or a string holding one.
fn date(value: &toml::Value) -> Option<Date> {
    match value {
        toml::Value::String(text) => Date::parse(
            text.trim(),
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .ok(),
        toml::Value::Datetime(datetime) if datetime.time.is_none() && datetime.offset.is_none() => {
            let day = datetime.date?;
            let month = Month::try_from(day.month).ok()?;
            Date::from_calendar_date(i32::from(day.year), month, day.day).ok()
        }
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    require_cmk_tag: Option<Spanned<String>>,
}

impl RawScope {
    fn validate(self, fail: &Fail) -> Result<Scope, PolicyError> {
        match self.require_cmk_tag {
            Some(tag) if tag.get_ref().trim().is_empty() => Err(fail(
                tag.span(),
                "require_cmk_tag must name a tag (or be left out to require CMK everywhere)".into(),
            )),
            Some(tag) => Ok(Scope {
                require_cmk_tag: Some(tag.get_ref().trim().to_owned()),
            }),
            None => Ok(Scope::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const FULL: &str = r#"
# every section of the policy file
[rules."key.expiry"]
warn_days = 45
critical_days = 10

[rules."key.type-size"]
min_rsa_bits = 4096
severity = "high"

[rules."workspace.unsupported-endpoints"]
enabled = false

[rules."managed-resources.tamper"]
azure_ml_object_ids = ["dddddddd-0000-0000-0000-000000000001"]

[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true

[remediation."key.rotation-policy"]
enabled = true

[notify]
teams = ["critical", "high", "medium"]
email = ["critical"]
reminder_hours = 12

[[exemptions]]
rule = "vault.purge-protection"
resource = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/legacy-kv"
reason = "migration, change 4711"
expires = "2027-01-31"

[[exemptions]]
rule = "key.expiry-set"
resource = "https://kv1.vault.azure.net/keys/cmk"
reason = "HSM key rotated by hand"
expires = 2026-01-31

[scope]
require_cmk_tag = "cmk-required"
"#;

    fn error(text: &str) -> String {
        Policy::from_toml_str(text, "policy.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_built_in_policy_has_the_documented_defaults() {
        let policy = Policy::default();
        assert_eq!(policy.source, BUILT_IN);
        assert_eq!(
            policy.key_expiry(),
            ExpiryThresholds {
                warn_days: 30,
                critical_days: 7
            }
        );
        assert_eq!(policy.min_rsa_bits(), 3072);
        assert!(rules::RULES.iter().all(|r| policy.rule_enabled(r.id)));
        assert!(
            rules::RULES
                .iter()
                .all(|r| !policy.allows_remediation(r.id))
        );
        assert_eq!(policy.notify.email, [Severity::Critical, Severity::High]);
        assert_eq!(policy.notify.reminder_hours, 24);
        assert!(policy.scope.requires_cmk(&BTreeMap::new()));
        assert_eq!(
            Policy::from_toml_str("", "empty.toml").unwrap().source,
            "empty.toml"
        );
        assert_eq!(
            Policy::from_toml_str("", BUILT_IN).unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn a_full_policy_parses() {
        let policy = Policy::from_toml_str(FULL, "policy.toml").unwrap();
        assert_eq!(
            policy.key_expiry(),
            ExpiryThresholds {
                warn_days: 45,
                critical_days: 10
            }
        );
        assert_eq!(policy.min_rsa_bits(), 4096);
        assert_eq!(
            policy.severity_override("key.type-size"),
            Some(Severity::High)
        );
        assert_eq!(policy.severity_override("key.expiry"), None);
        assert!(!policy.rule_enabled("workspace.unsupported-endpoints"));
        assert!(policy.rule_enabled("vault.exists"));
        assert_eq!(
            policy.azure_ml_object_ids(),
            ["dddddddd-0000-0000-0000-000000000001"]
        );
        assert!(policy.allows_remediation("vault.purge-protection"));
        assert!(policy.allows_remediation("key.rotation-policy"));
        assert!(!policy.allows_remediation("workspace.key-access"));
        assert_eq!(
            policy.remediation("vault.purge-protection"),
            RemediationConsent {
                enabled: true,
                irreversible_ok: true
            }
        );
        assert_eq!(policy.notify.email, [Severity::Critical]);
        assert_eq!(policy.notify.webhook, Notify::default().webhook);
        assert_eq!(policy.notify.reminder_hours, 12);
        assert_eq!(policy.exemptions.len(), 2);
        assert_eq!(policy.exemptions[0].expires, Some(date!(2027 - 01 - 31)));
        assert_eq!(policy.exemptions[1].expires, Some(date!(2026 - 01 - 31)));
        assert_eq!(
            policy.scope.require_cmk_tag.as_deref(),
            Some("cmk-required")
        );
        let summary = policy.summary(date!(2026 - 11 - 28));
        assert!(
            summary.contains("disabled: workspace.unsupported-endpoints"),
            "{summary}"
        );
        assert!(summary.contains("2 exemption(s), 1 expired"), "{summary}");
        assert!(
            summary.contains("remediation allowed: vault.purge-protection, key.rotation-policy"),
            "{summary}"
        );
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let cases = [
            (
                "[rules.\"key.expiry\"]\nwarn_dayz = 3\n",
                "policy.toml: line 2, key `rules.\"key.expiry\".warn_dayz`: unknown field `warn_dayz`",
            ),
            (
                "[rules.\"key.expiry\"]\nwarn_days = \"soon\"\n",
                "policy.toml: line 2, key `rules.\"key.expiry\".warn_days`: invalid type: string \"soon\", expected u32",
            ),
            (
                "\n[rules.\"vault.purge-protect\"]\nenabled = false\n",
                "policy.toml: line 2, key `rules.\"vault.purge-protect\"`: unknown rule `vault.purge-protect`",
            ),
            (
                "[rules.\"vault.exists\"]\nseverity = \"urgent\"\n",
                "policy.toml: line 2, key `rules.\"vault.exists\".severity`: unknown variant `urgent`",
            ),
            (
                "[rules.\"vault.exists\"]\nwarn_days = 3\n",
                "policy.toml: line 2, key `rules.\"vault.exists\".warn_days`: `warn_days` applies only to rule `key.expiry`",
            ),
            (
                "[rules.\"key.expiry\"]\nwarn_days = 5\n",
                "policy.toml: line 2, key `rules.\"key.expiry\".warn_days`: critical_days (7) must not exceed warn_days (5)",
            ),
            (
                "[rules.\"key.type-size\"]\nmin_rsa_bits = 1024\n",
                "policy.toml: line 2, key `rules.\"key.type-size\".min_rsa_bits`: min_rsa_bits must be 2048, 3072 or 4096",
            ),
            (
                "[rules.\"managed-resources.tamper\"]\nazure_ml_object_ids = [\"azure-ml\"]\n",
                "policy.toml: line 2, key `rules.\"managed-resources.tamper\".azure_ml_object_ids`: `azure-ml` is not an object id",
            ),
            (
                "[remediation.\"vault.purge-protection\"]\nenabled = true\n",
                "policy.toml: line 2, key `remediation.\"vault.purge-protection\".enabled`: the remediation of `vault.purge-protection` cannot be undone",
            ),
            (
                "[remediation.\"vault.soft-delete\"]\nenabled = true\n",
                "policy.toml: line 1, key `remediation.\"vault.soft-delete\"`: rule `vault.soft-delete` has no remediation",
            ),
            (
                "[remediation.\"key.rotation-policy\"]\nenabled = true\nirreversible_ok = true\n",
                "policy.toml: line 3, key `remediation.\"key.rotation-policy\".irreversible_ok`: the remediation of `key.rotation-policy` can be undone",
            ),
            (
                "[notify]\nteams = [\"critical\",\n  \"severe\"]\n",
                "policy.toml: line 3, key `notify.teams`: unknown variant `severe`",
            ),
            (
                "[notify]\nslack = [\"critical\"]\n",
                "policy.toml: line 2, key `notify.slack`: unknown field `slack`",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"ok\"\n[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\n",
                "policy.toml: line 5, key `exemptions[1]`: missing field `reason`",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"  \"\n",
                "policy.toml: line 4, key `exemptions[0].reason`: an exemption needs a reason",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exist\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\n",
                "policy.toml: line 2, key `exemptions[0].rule`: unknown rule `vault.exist`",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"legacy-kv\"\nreason = \"r\"\n",
                "policy.toml: line 3, key `exemptions[0].resource`: `legacy-kv` is neither an ARM resource id nor a Key Vault key URL",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\nexpires = \"31.01.2027\"\n",
                "policy.toml: line 5, key `exemptions[0].expires`: expires must be a date",
            ),
            (
                "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\nexpires = 2027-01-31T10:00:00Z\n",
                "policy.toml: line 5, key `exemptions[0].expires`: expires must be a date",
            ),
            (
                "[scope]\nrequire_cmk_tag = \"\"\n",
                "policy.toml: line 2, key `scope.require_cmk_tag`: require_cmk_tag must name a tag",
            ),
            (
                "mode = \"remediate\"\n",
                "policy.toml: line 1, key `mode`: unknown field `mode`",
            ),
            ("[rules\n", "policy.toml: line 1"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with(expected),
                "for {text:?}\n  got      {message}\n  expected {expected}…"
            );
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../docs/rules.md");
        let example = doc
            .rsplit("```toml\n")
            .next()
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let policy = Policy::from_toml_str(example, "docs/rules.md").unwrap();
        assert!(policy.allows_remediation("vault.purge-protection"));
        assert_eq!(policy.exemptions.len(), 1);
    }

    #[test]
    fn the_rotation_policy_remediation_has_defaults_and_validated_settings() {
        assert_eq!(
            Policy::default().key_rotation_policy(),
            &RotationPolicySettings {
                expiry_time: "P1Y".into(),
                rotate_before_expiry: "P30D".into(),
                notify_before_expiry: "P30D".into(),
            }
        );
        let policy = Policy::from_toml_str(
            "[remediation.\"key.rotation-policy\"]\nenabled = true\nexpiry_time = \"P2Y\"\nrotate_before_expiry = \"P60D\"\n",
            "policy.toml",
        )
        .unwrap();
        assert!(policy.allows_remediation("key.rotation-policy"));
        assert_eq!(
            policy.key_rotation_policy(),
            &RotationPolicySettings {
                expiry_time: "P2Y".into(),
                rotate_before_expiry: "P60D".into(),
                notify_before_expiry: "P30D".into(),
            }
        );
        let cases = [
            (
                "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"90 days\"\n",
                "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: `90 days` is not an ISO-8601 duration",
            ),
            (
                "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"PT12H\"\n",
                "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: `PT12H` is not an ISO-8601 duration",
            ),
            (
                "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"P3W\"\n",
                "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: expiry_time must be at least 28 days",
            ),
            (
                "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"P90D\"\nnotify_before_expiry = \"P3M\"\n",
                "policy.toml: line 3, key `remediation.\"key.rotation-policy\".notify_before_expiry`: notify_before_expiry must be at least 7 days and shorter than expiry_time (P90D)",
            ),
            (
                "[remediation.\"key.rotation-policy\"]\nrotate_before_expiry = \"P1D\"\n",
                "policy.toml: line 2, key `remediation.\"key.rotation-policy\".rotate_before_expiry`: rotate_before_expiry must be at least 7 days",
            ),
            (
                "[remediation.\"key.expiry\"]\nenabled = true\nexpiry_time = \"P1Y\"\n",
                "policy.toml: line 3, key `remediation.\"key.expiry\".expiry_time`: `expiry_time` applies only to remediation `key.rotation-policy`",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with(expected),
                "for {text:?}\n  got      {message}\n  expected {expected}…"
            );
        }
        assert_eq!(iso_duration_days("P1Y6M"), Some(545));
        assert_eq!(iso_duration_days("P2W"), Some(14));
        assert_eq!(iso_duration_days("P"), None);
        assert_eq!(iso_duration_days("P30"), None);
        assert_eq!(iso_duration_days("P1D1Y"), None);
    }

    #[test]
    fn guard_visibility_can_be_neither_turned_off_nor_exempted() {
        let off = error("[rules.\"guard.visibility\"]\nenabled = false\n");
        assert!(
            off.starts_with("policy.toml: line 2, key `rules.\"guard.visibility\".enabled`: `guard.visibility` cannot be turned off"),
            "{off}"
        );
        let exempted = error(
            "[[exemptions]]\nrule = \"guard.visibility\"\nresource = \"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34\"\nreason = \"no access\"\n",
        );
        assert!(exempted.contains("cannot be exempted"), "{exempted}");
        // Its severity may still be set, and other rules may still be turned off.
        assert!(
            Policy::from_toml_str(
                "[rules.\"guard.visibility\"]\nseverity = \"critical\"\nenabled = true\n[rules.\"key.rotation-policy\"]\nenabled = false\n",
                "policy.toml"
            )
            .is_ok()
        );
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let message = Policy::load(Path::new("/nonexistent/policy.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("cannot read the policy file /nonexistent/policy.toml"),
            "{message}"
        );
    }

    #[test]
    fn exemptions_cover_their_resource_what_lies_below_and_their_workspace() {
        let exemption = Exemption {
            rule: "key.expiry",
            resource: "https://kv1.vault.azure.net/keys/cmk".into(),
            reason: "r".into(),
            expires: Some(date!(2027 - 01 - 31)),
        };
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        assert!(exemption.covers(
            "key.expiry",
            "https://KV1.vault.azure.net/keys/cmk/0123",
            ws
        ));
        assert!(!exemption.covers("key.expiry-set", "https://kv1.vault.azure.net/keys/cmk", ws));
        assert!(!exemption.covers("key.expiry", "https://kv1.vault.azure.net/keys/cmk2", ws));
        let whole_workspace = Exemption {
            resource: ws.into(),
            ..exemption.clone()
        };
        assert!(whole_workspace.covers("key.expiry", "https://kv1.vault.azure.net/keys/cmk", ws));
        assert!(!exemption.is_expired(date!(2027 - 01 - 31)));
        assert!(exemption.is_expired(date!(2027 - 02 - 01)));
    }

    #[test]
    fn the_scope_tag_is_matched_by_name_ignoring_case() {
        let scope = Scope {
            require_cmk_tag: Some("cmk-required".into()),
        };
        let tagged = BTreeMap::from([("CMK-Required".to_owned(), String::new())]);
        assert!(scope.requires_cmk(&tagged));
        assert!(!scope.requires_cmk(&BTreeMap::new()));
    }
}
