//! `[scope]`: which workspaces must use CMK at all (`workspace.cmk-enabled`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::error::{Invalid, KeyPath};

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

/// The `[scope]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScope {
    require_cmk_tag: Option<Spanned<String>>,
}

impl RawScope {
    pub(super) fn validate(self, at: &KeyPath) -> Result<Scope, Invalid> {
        match self.require_cmk_tag {
            Some(tag) if tag.get_ref().trim().is_empty() => Err(Invalid::new(
                tag.span(),
                at.key("require_cmk_tag"),
                "require_cmk_tag must name a tag (or be left out to require CMK everywhere)",
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
