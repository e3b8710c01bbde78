//! The facts of a finding, the same in every channel: names first, full ids last, and for a
//! resolved finding what holds now.

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
