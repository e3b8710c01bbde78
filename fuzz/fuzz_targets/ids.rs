//! ARM resource ids, Key Vault key URLs and subscription ids. Beyond "never panics", a parsed id
//! must survive a round trip through its own text, and the ids derived from it must parse.
#![no_main]

use cmk_guard::ids::{ArmResourceId, KeyUrl, SubscriptionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = ArmResourceId::parse(text) {
        let again = ArmResourceId::parse(id.as_str()).expect("an id's own text parses");
        assert_eq!(id, again);
        assert_eq!(id.resource_type(), again.resource_type());
        assert_eq!(id.name(), again.name());
        let _ = (id.subscription(), id.resource_group(), id.namespace());
        let _ = id.is_type("Microsoft.KeyVault/vaults");
        if let Some(top) = id.top_level_resource() {
            assert_eq!(top.subscription(), id.subscription());
        }
        if let Some(scope) = id.scope() {
            assert_eq!(scope.subscription(), id.subscription());
            assert!(scope.as_str().len() < id.as_str().len());
        }
    }
    if let Ok(key) = KeyUrl::parse(text) {
        let again = KeyUrl::parse(&key.to_string()).expect("a key URL's own text parses");
        assert_eq!(key, again);
        let _ = (key.vault_name(), key.name(), key.version());
        let _ = key.is_under("vault.azure.net");
        let _ = key.is_under(text);
    }
    if let Ok(subscription) = SubscriptionId::parse(text) {
        assert_eq!(
            SubscriptionId::parse(subscription.as_str()).ok(),
            Some(subscription)
        );
    }
});
