//! The host and path of an `https://` URL, without the full WHATWG parse when the text is
//! plain enough that the parse could not change it.
//!
//! Every relevant event reads the workspace's key URL and its vault's `vaultUri` several times
//! (the observer, the rules, the vault check); `url::Url::parse` was most of that cost. A URL
//! made only of characters the parser leaves as they are — a lower-case `https://`, a host of
//! letters, digits, `-` and `.` in non-empty labels whose last label is letters only (so never
//! an IPv4 address) and none of them punycode, an optional `:443`, a path of letters, digits, `-`
//! and `/` — is split here, with the host lower-cased as the parser would. Anything else
//! (credentials, other ports, escapes, dots or spaces in the path, a query, Unicode) is left to
//! the parser, so callers get the parser's answer, and its error, for everything unusual. The
//! tests compare the two on plain and near-plain inputs.

use url::Url;

/// `(host in lower case, path)` of `text` when it is a plain `https` URL as described above;
/// the path is `/` when the URL has none. `None`: ask the full parser.
pub(crate) fn plain(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let host = authority.strip_suffix(":443").unwrap_or(authority);
    if host.is_empty() || !path.bytes().all(plain_path_byte) {
        return None;
    }
    let mut labels = host.split('.').peekable();
    while let Some(label) = labels.next() {
        let last = labels.peek().is_none();
        let plain = !label.is_empty()
            && !label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
            && if last {
                label.bytes().all(|b| b.is_ascii_alphabetic())
            } else {
                label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
        if !plain {
            return None;
        }
    }
    Some((host.to_ascii_lowercase(), path))
}

fn plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'/'
}

/// The lower-case host of an `https` URL: the plain split when it applies, the full parse
/// otherwise (which may find no host, or another scheme).
pub(crate) fn host(text: &str) -> Option<String> {
    if let Some((host, _)) = plain(text) {
        return Some(host);
    }
    let url = Url::parse(text).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the full parser says: (host lower-cased, path) of an https URL with the default port
    /// and no credentials, query or fragment.
    fn parsed(text: &str) -> Option<(String, String)> {
        let url = Url::parse(text).ok()?;
        let plain = url.scheme() == "https"
            && url.port().is_none()
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        plain.then(|| {
            (
                url.host_str().unwrap_or_default().to_ascii_lowercase(),
                url.path().to_owned(),
            )
        })
    }

    fn agrees(text: &str) {
        if let Some((host, path)) = plain(text) {
            assert_eq!(
                parsed(text),
                Some((host, path.to_owned())),
                "the plain split of {text:?} differs from the parser's"
            );
        }
    }

    #[test]
    fn usual_key_and_vault_urls_are_split_without_the_parser() {
        let key = "https://KV1.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef";
        assert_eq!(
            plain(key),
            Some((
                "kv1.vault.azure.net".to_owned(),
                "/keys/cmk/0123456789abcdef0123456789abcdef"
            ))
        );
        assert_eq!(
            plain("https://kv1.vault.azure.net:443/"),
            Some(("kv1.vault.azure.net".to_owned(), "/"))
        );
        assert_eq!(
            plain("https://kv1.vault.usgovcloudapi.net"),
            Some(("kv1.vault.usgovcloudapi.net".to_owned(), "/"))
        );
        for text in [
            key,
            "https://kv1.vault.azure.net:443/",
            "https://kv1.vault.usgovcloudapi.net",
        ] {
            agrees(text);
        }
    }

    #[test]
    fn anything_the_parser_could_change_is_left_to_it() {
        for text in [
            "HTTPS://kv1.vault.azure.net/keys/cmk",
            "http://kv1.vault.azure.net/keys/cmk",
            "https://user@kv1.vault.azure.net/keys/cmk",
            "https://kv1.vault.azure.net:8443/keys/cmk",
            "https://kv1.vault.azure.net:0443/keys/cmk",
            "https://kv1.vault.azure.net/keys/../cmk",
            "https://kv1.vault.azure.net/keys/%63mk",
            "https://kv1.vault.azure.net/keys/cmk?api-version=1",
            "https://kv1.vault.azure.net/keys/cmk#x",
            "https://kv1.vault.azure.net\\keys\\cmk",
            "https://kv1..azure.net/keys/cmk",
            "https://.kv1.vault.azure.net/keys/cmk",
            "https://kv1.vault.azure.net./keys/cmk",
            "https://xn--kv1-abc.vault.azure.net/keys/cmk",
            "https://kv1.vault.XN--p1ai/keys/cmk",
            "https://1.2.3.4/keys/cmk",
            "https://kv1.0x10/keys/cmk",
            "https://kv1.vault.azure.n3t/keys/cmk",
            "https://kv1.vault.azure.net/keys/cmk ",
            " https://kv1.vault.azure.net/keys/cmk",
            "https://kv1.vault.azure.net/ke\tys/cmk",
            "https://kv1.vault.azüre.net/keys/cmk",
            "https://kv_1.vault.azure.net/keys/cmk",
            "https://:443/keys/cmk",
            "https://",
        ] {
            assert_eq!(plain(text), None, "{text:?} must go to the parser");
        }
    }

    /// Plain and near-plain inputs built from the characters that matter: wherever the split
    /// answers, it answers what the parser does.
    #[test]
    fn the_split_agrees_with_the_parser_on_generated_urls() {
        let hosts = [
            "kv1.vault.azure.net",
            "KV-1.Vault.Azure.NET",
            "a.b",
            "a-.-b.c",
            "kv1.vault.azure.net:443",
            "kv1.vault.azure.net:44",
            "0.vault.azure.net",
            "kv1.vault.azure.n",
            "kv1.123",
            "kv1",
            "xn--.net",
        ];
        let paths = [
            "",
            "/",
            "//",
            "/keys",
            "/keys/cmk/",
            "/keys/CMK/ABCDEF",
            "/keys//cmk",
            "/-/-",
            "/keys/cmk/.",
            "/keys/cmk%2F",
        ];
        let mut compared = 0;
        for host in hosts {
            for path in paths {
                let text = format!("https://{host}{path}");
                agrees(&text);
                compared += usize::from(plain(&text).is_some());
            }
        }
        assert!(compared > 40, "only {compared} inputs took the plain split");
    }

    #[test]
    fn host_falls_back_to_the_parser() {
        assert_eq!(
            host("https://KV1.vault.azure.net/"),
            Some("kv1.vault.azure.net".to_owned())
        );
        assert_eq!(
            host("https://user@KV1.vault.azure.net:8443/x?y"),
            Some("kv1.vault.azure.net".to_owned())
        );
        assert_eq!(host("not a url"), None);
    }
}
