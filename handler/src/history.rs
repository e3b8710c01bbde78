//! The audit trail of each finding, read back from the state store: when it opened, was alerted,
//! remediated, verified and resolved, and who made the change that caused it.

#![allow(dead_code)] // TEMPORARY: removed once wired (issue 20 work in progress)

use time::OffsetDateTime;

use crate::state::{FindingKey, StateStore};

/// One step in a finding's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Opened,
    Alerted,
    Remediated,
    Verified,
    Resolved,
}

/// One entry of the trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub workspace: String,
    pub rule: String,
    pub resource: String,
    pub step: Step,
    /// The object id of who made the change that caused it, when the event said.
    pub caller: Option<String>,
    pub detail: String,
}

/// The trail of every finding read, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// The trail of `workspace` (every workspace when `None`).
    pub async fn load(
        store: &dyn StateStore,
        workspace: Option<&str>,
    ) -> crate::state::Result<Self> {
        let _ = (store, workspace);
        Ok(Self::default())
    }

    /// The entries of one finding, oldest first.
    pub fn of_finding<'a>(&'a self, key: &'a FindingKey) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| {
            e.rule == key.rule
                && e.workspace.eq_ignore_ascii_case(&key.workspace)
                && e.resource.eq_ignore_ascii_case(&key.resource)
        })
    }
}
