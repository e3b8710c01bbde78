//! The dependency counts of alerts on keys and vaults: "12 workspaces and 4 other resources use
//! this key". Each key or vault of a batch of alerts is looked up once, all at once, within a
//! short budget of their own; the Resource Graph pages stay in a short cache for the next
//! batch. When Resource Graph does not answer completely in time the alert says nothing about
//! counts: it is never held back or made wrong by them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::{Target, search};
use crate::azure::Azure;
use crate::ids::{Allowlist, ArmResourceId, KeyUrl};
use crate::intake::IntakeSettings;
use crate::notify::{Change, DependentCounts, Notification};
use crate::observe::{DEFAULT_CACHE_TTL, Observer};

/// How long an alert batch may wait for its counts.
const BUDGET: Duration = Duration::from_secs(5);
/// At most this many keys and vaults are looked up per batch; the others get no count.
const MAX_TARGETS: usize = 8;

/// Looks up what depends on the keys and vaults of alerts.
pub struct Dependents {
    observer: Observer,
    allowlist: Allowlist,
    keyvault_dns_suffix: String,
}

impl std::fmt::Debug for Dependents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependents").finish_non_exhaustive()
    }
}

impl Dependents {
    /// Reads through `azure` within the allowlist of `intake`.
    pub fn new(azure: &Azure, intake: &IntakeSettings) -> Self {
        Self {
            observer: Observer::new(azure.arm.clone(), azure.keys.clone(), DEFAULT_CACHE_TTL),
            allowlist: intake.subscriptions.clone(),
            keyvault_dns_suffix: intake.keyvault_dns_suffix.clone(),
        }
    }

    /// `alerts` with the counts of the key or vault each open one is about, where Resource
    /// Graph answered completely.
    pub async fn annotate<T: Clone>(&self, alerts: &[(Notification, T)]) -> Vec<(Notification, T)> {
        let mut wanted: BTreeMap<String, Target> = BTreeMap::new();
        for (note, _) in alerts {
            if let Some(target) = self.target_of(note)
                && (wanted.len() < MAX_TARGETS || wanted.contains_key(&key_of(&target)))
            {
                wanted.insert(key_of(&target), target);
            }
        }
        let deadline = Instant::now() + BUDGET;
        let looked_up = join_all(wanted.into_iter().map(|(key, target)| async move {
            let scope = super::scope(&self.allowlist);
            let report =
                tokio::time::timeout_at(deadline, search(&self.observer, &target, scope, deadline))
                    .await
                    .ok()
                    .filter(|report| report.complete);
            let counts = report.map(|report| DependentCounts {
                workspaces: report.workspaces.len(),
                other_resources: report.other_resources.len(),
                vault: matches!(target, Target::Vault { .. }),
            });
            (key, counts)
        }))
        .await;
        let counts: BTreeMap<String, Option<DependentCounts>> = looked_up.into_iter().collect();
        alerts
            .iter()
            .map(|(note, extra)| {
                let mut note = note.clone();
                note.dependents = self
                    .target_of(&note)
                    .and_then(|target| counts.get(&key_of(&target)).copied().flatten());
                (note, extra.clone())
            })
            .collect()
    }

    /// The key (every version) or vault an open alert is about.
    fn target_of(&self, note: &Notification) -> Option<Target> {
        if note.change == Change::Resolved {
            return None;
        }
        if let Ok(key) = KeyUrl::parse(&note.resource) {
            let versionless = format!("https://{}/keys/{}", key.host(), key.name());
            return Target::parse(&versionless, &self.keyvault_dns_suffix).ok();
        }
        ArmResourceId::parse(&note.resource)
            .ok()
            .filter(|id| id.is_type("Microsoft.KeyVault/vaults"))
            .and_then(|id| Target::parse(id.as_str(), &self.keyvault_dns_suffix).ok())
    }
}

/// One lookup per key or vault, whatever the case of its URL or id.
fn key_of(target: &Target) -> String {
    target.to_string().to_ascii_lowercase()
}
