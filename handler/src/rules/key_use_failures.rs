//! `key.use-failures`: a service's `wrapKey`, `unwrapKey` or `get` on the CMK key failed, as the
//! Key Vault audit log reports it. Being written; not evaluated yet.

use super::{Context, Rule};
use crate::catalogue::RuleId;

pub(super) const RULE: Rule = Rule {
    id: RuleId::KeyUseFailures,
    check,
};

fn check(_context: &Context) -> Vec<super::Check> {
    Vec::new()
}
