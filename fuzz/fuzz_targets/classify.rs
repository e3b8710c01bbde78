// Shared by the envelope, event and audit targets: the two kinds of configuration intake runs
// under (every subscription, and an allowlist), and classifying an event under both.

use cmk_guard::ids::{Allowlist, SubscriptionId};
use cmk_guard::intake::{IntakeSettings, RawEvent, classify};

/// Every subscription in scope, and an allowlist of one.
pub fn settings() -> [IntakeSettings; 2] {
    let open = IntakeSettings {
        subscriptions: Allowlist::all(),
        keyvault_dns_suffix: "vault.azure.net".to_owned(),
        managed_groups: Default::default(),
    };
    let allowlist = IntakeSettings {
        subscriptions: Allowlist::listed(
            SubscriptionId::parse("3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34")
                .ok()
                .map(|s| vec![s]),
        ),
        keyvault_dns_suffix: "vault.azure.net".to_owned(),
        managed_groups: Default::default(),
    };
    [open, allowlist]
}

#[allow(dead_code)] // the audit target reads batches, not events
pub fn classify_both_ways(event: &RawEvent) {
    for settings in &settings() {
        if let Ok(outcome) = classify(event, settings) {
            // The trigger is what the rest of the pipeline sees; rendering it must not panic.
            let _ = format!("{outcome:?}");
        }
    }
}
