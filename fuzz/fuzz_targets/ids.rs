//! ARM resource ids, Key Vault key URLs and subscription ids. Beyond "never panics", a parsed id
//! must survive a round trip through its own text, the ids derived from it must parse, and the
//! request URL built from it must name the same subscription and the same segments (so that the
//! allowlist checked on the id is the allowlist the request meets).
#![no_main]

use cmk_guard::azure::SubscriptionScope;
use cmk_guard::azure::request_url;
use cmk_guard::ids::{ArmResourceId, KeyUrl, SubscriptionId};
use libfuzzer_sys::fuzz_target;

/// The URL sent for `id` keeps its subscription and every segment, and passes the allowlist of
/// exactly that subscription.
fn url_names_the_same_resource(id: &ArmResourceId) {
    let endpoint = url::Url::parse("https://management.azure.com").expect("endpoint");
    let url = request_url(&endpoint, id.as_str(), "2026-02-01", &[])
        .expect("an id's own text is a valid request path");
    let sent: Vec<String> = url
        .path_segments()
        .expect("a path")
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .expect("UTF-8")
                .into_owned()
        })
        .collect();
    let parsed: Vec<&str> = id.as_str().trim_start_matches('/').split('/').collect();
    assert_eq!(sent, parsed, "{url}");
    assert_eq!(
        SubscriptionId::parse(&sent[1]).ok().as_ref(),
        Some(id.subscription())
    );
    let only = SubscriptionScope::from_allowlist(Some(std::slice::from_ref(id.subscription())));
    assert_eq!(
        only.check(&azure_core::http::Method::Get, &url, None),
        Ok(()),
        "{url}"
    );
}

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
        url_names_the_same_resource(&id);
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
