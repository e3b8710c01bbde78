//! `[[exemptions]]`: accepted exceptions to one rule for one resource, with a reason and an
//! optional last day.

use serde::Deserialize;
use time::{Date, Month};
use toml::Spanned;

use super::error::{Invalid, KeyPath};
use super::named_rule::NamedRule;
use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};

/// An accepted exception to one rule for one resource (or everything below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub rule: RuleId,
    /// An ARM id or key URL; covers itself and what lies below it on `/` boundaries, and a
    /// workspace id covers all of that workspace's findings of the rule.
    pub resource: String,
    pub reason: String,
    /// The last day (UTC) the exemption applies; `None` for no end.
    pub expires: Option<Date>,
}

impl Exemption {
    /// True when this exemption names the rule and the finding's resource or workspace.
    pub fn covers(&self, rule: RuleId, resource: &str, workspace: &str) -> bool {
        self.rule == rule
            && (is_at_or_below(&self.resource, resource)
                || is_at_or_below(&self.resource, workspace))
    }

    /// True once `today` (UTC) is past the last day.
    pub fn is_expired(&self, today: Date) -> bool {
        self.expires.is_some_and(|last_day| today > last_day)
    }
}

/// True when `resource` is `scope` or lies below it on `/` boundaries, ignoring ASCII case
/// (azure-notes Trap T1) and trailing slashes.
pub(crate) fn is_at_or_below(scope: &str, resource: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    let resource = resource.trim_end_matches('/');
    match resource.get(..scope.len()) {
        Some(head) if head.eq_ignore_ascii_case(scope) => {
            resource.len() == scope.len() || resource.as_bytes()[scope.len()] == b'/'
        }
        _ => false,
    }
}

/// One `[[exemptions]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExemption {
    rule: Spanned<NamedRule>,
    resource: Spanned<String>,
    reason: Spanned<String>,
    expires: Option<Spanned<toml::Value>>,
}

impl RawExemption {
    /// The exemption, or why it cannot be one; `at` is where it stands in the file.
    pub(super) fn validate(self, at: &KeyPath) -> Result<Exemption, Invalid> {
        let rule = self.rule.get_ref().id();
        if !rule.entry().optional {
            return Err(Invalid::new(
                self.rule.span(),
                at.key("rule"),
                format!(
                    "`{rule}` cannot be exempted: a resource cmk-guard cannot read would then look compliant; grant the read or fix the reference instead"
                ),
            ));
        }
        let resource = self.resource.get_ref().trim();
        if ArmResourceId::parse(resource).is_err() && KeyUrl::parse(resource).is_err() {
            return Err(Invalid::new(
                self.resource.span(),
                at.key("resource"),
                format!("`{resource}` is neither an ARM resource id nor a Key Vault key URL"),
            ));
        }
        let reason = self.reason.get_ref().trim();
        if reason.is_empty() {
            return Err(Invalid::new(
                self.reason.span(),
                at.key("reason"),
                "an exemption needs a reason",
            ));
        }
        let expires = match &self.expires {
            Some(value) => Some(date(value.get_ref()).ok_or_else(|| {
                Invalid::new(
                    value.span(),
                    at.key("expires"),
                    "expires must be a date such as 2027-01-31 or \"2027-01-31\"",
                )
            })?),
            None => None,
        };
        Ok(Exemption {
            rule,
            resource: resource.to_owned(),
            reason: reason.to_owned(),
            expires,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn exemptions_cover_their_resource_what_lies_below_and_their_workspace() {
        let exemption = Exemption {
            rule: RuleId::KeyExpiry,
            resource: "https://kv1.vault.azure.net/keys/cmk".into(),
            reason: "r".into(),
            expires: Some(date!(2027 - 01 - 31)),
        };
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        assert!(exemption.covers(
            RuleId::KeyExpiry,
            "https://KV1.vault.azure.net/keys/cmk/0123",
            ws
        ));
        assert!(!exemption.covers(
            RuleId::KeyExpirySet,
            "https://kv1.vault.azure.net/keys/cmk",
            ws
        ));
        assert!(!exemption.covers(
            RuleId::KeyExpiry,
            "https://kv1.vault.azure.net/keys/cmk2",
            ws
        ));
        let whole_workspace = Exemption {
            resource: ws.into(),
            ..exemption.clone()
        };
        assert!(whole_workspace.covers(
            RuleId::KeyExpiry,
            "https://kv1.vault.azure.net/keys/cmk",
            ws
        ));
        assert!(!exemption.is_expired(date!(2027 - 01 - 31)));
        assert!(exemption.is_expired(date!(2027 - 02 - 01)));
    }

    #[test]
    fn scopes_compare_on_segment_boundaries_ignoring_case() {
        let cases = [
            (
                "/subscriptions/s/resourceGroups/rg",
                "/subscriptions/S/resourcegroups/RG/providers/x/y/z",
                true,
            ),
            (
                "/subscriptions/s/resourceGroups/rg",
                "/subscriptions/s/resourceGroups/rg",
                true,
            ),
            (
                "/subscriptions/s/resourceGroups/rg/",
                "/subscriptions/s/resourceGroups/rg",
                true,
            ),
            (
                "/subscriptions/s/resourceGroups/rg",
                "/subscriptions/s/resourceGroups/rg2",
                false,
            ),
            (
                "https://kv.vault.azure.net/keys/k",
                "https://KV.vault.azure.net/keys/k/0123",
                true,
            ),
            (
                "https://kv.vault.azure.net/keys/k",
                "https://kv.vault.azure.net/keys/k2",
                false,
            ),
        ];
        for (scope, resource, expected) in cases {
            assert_eq!(
                is_at_or_below(scope, resource),
                expected,
                "{scope} vs {resource}"
            );
        }
    }
}
