// Shared by the envelope and event targets: classify an event under the two kinds of
// configuration (every subscription, and an allowlist), as intake does.

use cmk_guard::ids::{Allowlist, SubscriptionId};
use cmk_guard::intake::{IntakeSettings, RawEvent, classify};

pub fn classify_both_ways(event: &RawEvent) {
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
    for settings in [&open, &allowlist] {
        if let Ok(outcome) = classify(event, settings) {
            // The trigger is what the rest of the pipeline sees; rendering it must not panic.
            let _ = format!("{outcome:?}");
        }
    }
}
