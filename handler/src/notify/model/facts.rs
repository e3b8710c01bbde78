//! The facts of a finding, the same in every channel: names first, full ids last, and for a
//! resolved finding what holds now.

use serde::{Deserialize, Serialize};

use super::{Change, Notification};

impl Notification {
    /// The facts of a finding in reading order, names first and full ids last, the same in
    /// every channel. A resolved finding's observation is what holds now (what the fix
    /// verified, or that the rule passes), and the resource it names is the one found when
    /// the finding opened (a rotated key's old version), so it is labelled that way; an empty
    /// value is left out.
    pub fn facts(&self) -> Vec<Fact> {
        let resolved = self.change == Change::Resolved;
        let mut facts = vec![
            Fact::name("Workspace", self.workspace_name()),
            Fact::name(
                if resolved {
                    "Resource (when found)"
                } else {
                    "Resource"
                },
                self.resource_name(),
            ),
            Fact::text(if resolved { "Now" } else { "Observed" }, &self.observed),
            Fact::text("Expected", &self.expected),
        ];
        if self.action.is_some() {
            facts.push(Fact::text("Action", &self.action_text()));
        }
        if let Some(counts) = &self.dependents {
            facts.push(Fact::text("Depends on it", &counts.sentence()));
        }
        facts.push(Fact::text("Rule", &self.rule));
        facts.push(Fact::name(
            if resolved {
                "Resource id (when found)"
            } else {
                "Resource id"
            },
            &self.resource,
        ));
        facts.push(Fact::name("Workspace id", &self.workspace));
        facts.retain(|fact| !fact.value.trim().is_empty());
        facts
    }
}

/// One labelled fact of a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// What the value is, in the reader's words ("Resource id (when found)").
    pub label: &'static str,
    /// The value, unabridged: each channel bounds or escapes it as it needs.
    pub value: String,
    /// A name or id from Azure that a reader copies: shown exactly as it is, never altered to
    /// keep Markdown from acting on it.
    pub verbatim: bool,
}

impl Fact {
    fn name(label: &'static str, value: &str) -> Self {
        Fact {
            label,
            value: value.to_owned(),
            verbatim: true,
        }
    }

    fn text(label: &'static str, value: &str) -> Self {
        Fact {
            label,
            value: value.to_owned(),
            verbatim: false,
        }
    }
}

/// What depends on a key or vault, for the alerts about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependentCounts {
    pub workspaces: usize,
    pub other_resources: usize,
    /// True for a vault (every key of it), false for a key.
    pub vault: bool,
}

impl DependentCounts {
    /// `12 workspaces and 4 other resources use this key`.
    pub fn sentence(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let workspaces = plural(self.workspaces, "workspace", "workspaces");
        let others = plural(self.other_resources, "other resource", "other resources");
        let what = if self.vault {
            "keys of this vault"
        } else {
            "this key"
        };
        format!("{workspaces} and {others} use {what}")
    }
}

#[cfg(test)]
mod tests {
    use super::DependentCounts;

    #[test]
    fn counts_read_as_a_sentence() {
        let counts = |workspaces, other_resources, vault| DependentCounts {
            workspaces,
            other_resources,
            vault,
        };
        assert_eq!(
            counts(12, 4, false).sentence(),
            "12 workspaces and 4 other resources use this key"
        );
        assert_eq!(
            counts(1, 1, true).sentence(),
            "1 workspace and 1 other resource use keys of this vault"
        );
        assert_eq!(
            counts(0, 0, false).sentence(),
            "0 workspaces and 0 other resources use this key"
        );
    }
}
