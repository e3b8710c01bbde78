//! Identifiers parsed once at the edge: subscription ids, ARM resource ids and Key Vault key URLs.
//!
//! Azure compares ids and names case-insensitively (azure-notes Trap T1), so equality and hashing
//! here ignore ASCII case while the original spelling is kept for display and for request URLs.

use std::fmt;
use std::hash::{Hash, Hasher};

use url::Url;

/// Why an identifier could not be parsed; the message says which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// A subscription id: a GUID, stored lower-case so comparisons are trivial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// Accepts the 8-4-4-4-12 hexadecimal form, any case.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if is_guid(text) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(IdError(format!(
                "subscription id `{}` is not a GUID (expected 8-4-4-4-12 hexadecimal digits)",
                truncate(text)
            )))
        }
    }

    /// The lower-case GUID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True for the canonical 8-4-4-4-12 GUID text form.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One `{type}/{name}` pair under a provider namespace.
#[derive(Debug, Clone)]
struct TypeName {
    resource_type: String,
    name: String,
}

/// One `/providers/{namespace}/{type}/{name}…` section. Extension resources (role assignments
/// on a vault) have several.
#[derive(Debug, Clone)]
struct ProviderSection {
    namespace: String,
    types: Vec<TypeName>,
}

/// The longest ARM id accepted. ARM names are at most a few hundred characters and ids nest a
/// few of them, so real ids stay well under this.
pub const MAX_ARM_ID_BYTES: usize = 4096;

/// An Azure Resource Manager id within a subscription: the subscription itself, a resource group,
/// a provider registration (`/subscriptions/{s}/providers/{ns}`), a resource, a child resource or
/// an extension resource.
#[derive(Debug, Clone)]
pub struct ArmResourceId {
    raw: String,
    subscription: SubscriptionId,
    resource_group: Option<String>,
    providers: Vec<ProviderSection>,
}

impl ArmResourceId {
    /// Parses `/subscriptions/{guid}[/resourceGroups/{rg}][/providers/{ns}[/{type}/{name}]…]…`.
    /// Keywords are matched case-insensitively; a trailing slash is tolerated.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let fail = |why: &str| {
            IdError(format!(
                "`{}` is not an ARM resource id: {why}",
                truncate(text)
            ))
        };
        // No real id comes near this; a longer one would be repeated in every Outcome, finding
        // and request about it (the rest of the parse would refuse nothing about its length).
        if text.len() > MAX_ARM_ID_BYTES {
            return Err(fail(&format!(
                "it is {} bytes long; ids are at most {MAX_ARM_ID_BYTES}",
                text.len()
            )));
        }
        let trimmed = text.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix('/')
            .ok_or_else(|| fail("it must start with `/subscriptions/`"))?;
        let segments: Vec<&str> = rest.split('/').collect();
        for (index, segment) in segments.iter().enumerate() {
            // The subscription segment is held to the stricter GUID form below.
            if index != 1 {
                check_segment(segment).map_err(|why| fail(&why))?;
            }
        }
        let mut iter = segments.into_iter().peekable();
        match iter.next() {
            Some(s) if s.eq_ignore_ascii_case("subscriptions") => {}
            _ => return Err(fail("it must start with `/subscriptions/`")),
        }
        let subscription = SubscriptionId::parse(
            iter.next()
                .ok_or_else(|| fail("the subscription id is missing"))?,
        )
        .map_err(|error| fail(&error.to_string()))?;
        let mut resource_group = None;
        if iter
            .peek()
            .is_some_and(|s| s.eq_ignore_ascii_case("resourceGroups"))
        {
            iter.next();
            let name = iter
                .next()
                .ok_or_else(|| fail("the resource group name is missing"))?;
            resource_group = Some(name.to_owned());
        }
        let mut providers = Vec::new();
        while let Some(keyword) = iter.next() {
            if !keyword.eq_ignore_ascii_case("providers") {
                return Err(fail(&format!(
                    "expected `providers`, found `{}`",
                    truncate(keyword)
                )));
            }
            let namespace = iter
                .next()
                .ok_or_else(|| fail("the provider namespace is missing"))?;
            let mut types = Vec::new();
            while let Some(next) = iter.peek() {
                if next.eq_ignore_ascii_case("providers") {
                    break;
                }
                let resource_type = iter.next().unwrap_or_default();
                // `…/vaults/kv/subscriptions/{other}/resourceGroups/…` would name another
                // subscription inside this one's path: a scope keyword only starts an id.
                if ["subscriptions", "resourceGroups"]
                    .iter()
                    .any(|keyword| resource_type.eq_ignore_ascii_case(keyword))
                {
                    return Err(fail(&format!(
                        "`{resource_type}` may only come at the start of an id, not under a provider"
                    )));
                }
                let name = iter
                    .next()
                    .ok_or_else(|| fail(&format!("the name after `{resource_type}` is missing")))?;
                types.push(TypeName {
                    resource_type: resource_type.to_owned(),
                    name: name.to_owned(),
                });
            }
            let is_last = iter.peek().is_none();
            if types.is_empty() && !is_last {
                return Err(fail("an extension resource needs a resource type and name"));
            }
            providers.push(ProviderSection {
                namespace: namespace.to_owned(),
                types,
            });
        }
        Ok(Self {
            raw: trimmed.to_owned(),
            subscription,
            resource_group,
            providers,
        })
    }

    /// The subscription the resource lives in.
    pub fn subscription(&self) -> &SubscriptionId {
        &self.subscription
    }

    /// The resource group, if the id is at or below one.
    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    /// The full type of the innermost resource, e.g. `Microsoft.KeyVault/vaults/keys`;
    /// `Microsoft.Resources/resourceGroups` for a resource group, `Microsoft.Resources/subscriptions`
    /// for a subscription and `Microsoft.Resources/providers` for a provider registration.
    pub fn resource_type(&self) -> String {
        match self.providers.last() {
            Some(section) if section.types.is_empty() => "Microsoft.Resources/providers".to_owned(),
            Some(section) => {
                let mut full = section.namespace.clone();
                for pair in &section.types {
                    full.push('/');
                    full.push_str(&pair.resource_type);
                }
                full
            }
            None if self.resource_group.is_some() => {
                "Microsoft.Resources/resourceGroups".to_owned()
            }
            None => "Microsoft.Resources/subscriptions".to_owned(),
        }
    }

    /// True when [`Self::resource_type`] equals `expected`, ignoring case.
    pub fn is_type(&self, expected: &str) -> bool {
        self.resource_type().eq_ignore_ascii_case(expected)
    }

    /// The innermost name: resource, resource group, provider namespace or subscription id.
    pub fn name(&self) -> &str {
        match self.providers.last() {
            Some(section) => match section.types.last() {
                Some(pair) => &pair.name,
                None => &section.namespace,
            },
            None => self
                .resource_group
                .as_deref()
                .unwrap_or(self.subscription.as_str()),
        }
    }

    /// The provider namespace of the innermost resource, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.providers.last().map(|s| s.namespace.as_str())
    }

    /// The id of the enclosing top-level resource of the innermost provider section, e.g. the
    /// workspace of `…/workspaces/ws/onlineEndpoints/ep` or the vault of `…/vaults/kv/keys/k`.
    pub fn top_level_resource(&self) -> Option<ArmResourceId> {
        let section = self.providers.last()?;
        let first = section.types.first()?;
        let mut raw = self.scope_of_last_section();
        raw.push_str(&format!(
            "/providers/{}/{}/{}",
            section.namespace, first.resource_type, first.name
        ));
        ArmResourceId::parse(&raw).ok()
    }

    /// The scope the innermost provider section hangs off: for an extension resource
    /// (`{scope}/providers/Microsoft.Authorization/roleAssignments/{x}`) the resource it
    /// extends; for a plain resource its resource group or subscription. `None` for ids without
    /// a provider section.
    pub fn scope(&self) -> Option<ArmResourceId> {
        if self.providers.is_empty() {
            return None;
        }
        ArmResourceId::parse(&self.scope_of_last_section()).ok()
    }

    fn scope_of_last_section(&self) -> String {
        let mut raw = format!("/subscriptions/{}", self.subscription);
        if let Some(rg) = &self.resource_group {
            raw.push_str("/resourceGroups/");
            raw.push_str(rg);
        }
        let inner = self.providers.len().saturating_sub(1);
        for section in &self.providers[..inner] {
            raw.push_str("/providers/");
            raw.push_str(&section.namespace);
            for pair in &section.types {
                raw.push('/');
                raw.push_str(&pair.resource_type);
                raw.push('/');
                raw.push_str(&pair.name);
            }
        }
        raw
    }

    /// The id as given (without a trailing slash), for display and request paths.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl PartialEq for ArmResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}

impl Eq for ArmResourceId {}

impl Hash for ArmResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for byte in self.raw.bytes() {
            state.write_u8(byte.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for ArmResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A Key Vault key identifier: `https://{vault}.{suffix}/keys/{name}[/{version}]`.
#[derive(Debug, Clone)]
pub struct KeyUrl {
    host: String,
    vault: String,
    name: String,
    version: Option<String>,
}

impl KeyUrl {
    /// Parses a key id as Key Vault and Event Grid write it; `:443` is tolerated (azure-notes
    /// Trap T15).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let fail = |why: &str| {
            IdError(format!(
                "`{}` is not a Key Vault key URL: {why}",
                truncate(text)
            ))
        };
        let url = Url::parse(text).map_err(|e| fail(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(fail("the scheme must be https"));
        }
        if url.port().is_some_and(|p| p != 443) {
            return Err(fail("only the default HTTPS port is allowed"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("it must not carry credentials"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| fail("the host is missing"))?
            .to_ascii_lowercase();
        let vault = host.split('.').next().unwrap_or_default().to_owned();
        if host.split('.').count() < 3 || !is_vault_name(&vault) {
            return Err(fail("the host must be `{vault}.{key vault DNS suffix}`"));
        }
        let segments: Vec<&str> = url
            .path()
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .collect();
        let (name, version) = match segments.as_slice() {
            ["keys", name] => (*name, None),
            ["keys", name, version] => (*name, Some(*version)),
            _ => {
                return Err(fail(
                    "the path must be `/keys/{name}` or `/keys/{name}/{version}`",
                ));
            }
        };
        if name.is_empty()
            || name.len() > 127
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(fail(
                "the key name must be 1-127 letters, digits or hyphens",
            ));
        }
        if let Some(v) = version
            && !(v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(fail("the key version must be 32 hexadecimal digits"));
        }
        Ok(Self {
            host,
            vault,
            name: name.to_owned(),
            version: version.map(str::to_ascii_lowercase),
        })
    }

    /// The vault host, lower-case, e.g. `kv1.vault.azure.net`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when the host is `{vault}.{suffix}` for the given Key Vault DNS suffix.
    pub fn is_under(&self, dns_suffix: &str) -> bool {
        let suffix = dns_suffix.trim_start_matches('.').to_ascii_lowercase();
        self.host
            .strip_suffix(&suffix)
            .is_some_and(|head| head == format!("{}.", self.vault))
    }

    /// The vault name (the first host label).
    pub fn vault_name(&self) -> &str {
        &self.vault
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pinned version, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

impl PartialEq for KeyUrl {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
            && self.name.eq_ignore_ascii_case(&other.name)
            && self.version == other.version
    }
}

impl Eq for KeyUrl {}

impl fmt::Display for KeyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}/keys/{}", self.host, self.name)?;
        if let Some(version) = &self.version {
            write!(f, "/{version}")?;
        }
        Ok(())
    }
}

/// Checks one `/`-separated segment of an ARM path: the characters ARM names can hold (letters
/// and digits of any script, `-`, `_`, `.`, `(`, `)`), and nothing that a URL parser or ARM would
/// reinterpret. A `..` segment, a `%2e`, a `\` or an encoded slash would make the request URL
/// name another resource — even another subscription — than the id that was checked,
/// so such ids are refused here, once, before anything is read or written.
pub fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("it has an empty segment".to_owned());
    }
    if segment.bytes().all(|b| b == b'.') {
        return Err(format!(
            "`{}` segments are not allowed (they change the path when the URL is resolved)",
            truncate(segment)
        ));
    }
    match segment.chars().find(|&c| !is_name_char(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "segment `{}` holds {}, which ARM names cannot hold",
            truncate(segment),
            describe_char(c)
        )),
    }
}

/// Letters and digits (any script), `-`, `_`, `.`, `(`, `)`: the characters of ARM resource,
/// resource group and type names.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')')
}

/// A character as an error message can show it without echoing something unprintable.
fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

/// Vault names are 3-24 letters, digits and hyphens.
pub fn is_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Keeps error messages short when the input is huge or hostile: the shared sanitiser
/// ([`crate::text::field`]), owned, under the name the id and Azure code calls it by.
pub(crate) fn truncate(text: &str) -> String {
    crate::text::field(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

    #[test]
    fn subscription_ids_must_be_guids() {
        assert_eq!(
            SubscriptionId::parse(&SUB.to_uppercase()).unwrap().as_str(),
            SUB
        );
        for bad in [
            "",
            "{subscription-id}",
            "3f7b2c1d8e4a4b6f9c2d5a1e0f9b7c34",
            "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c3g",
        ] {
            assert!(SubscriptionId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_resources_children_and_extensions() {
        let ws = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1/onlineEndpoints/ep"
        ))
        .unwrap();
        assert_eq!(
            ws.resource_type(),
            "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
        );
        assert_eq!(ws.name(), "ep");
        assert_eq!(ws.resource_group(), Some("rg"));
        assert_eq!(
            ws.top_level_resource().unwrap().as_str(),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
            )
        );

        let ra = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/a1"
        ))
        .unwrap();
        assert!(ra.is_type("microsoft.authorization/roleassignments"));
        assert!(ra.scope().unwrap().is_type("Microsoft.KeyVault/vaults"));
        let at_subscription = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/a1"
        ))
        .unwrap();
        assert!(
            at_subscription
                .scope()
                .unwrap()
                .is_type("Microsoft.Resources/subscriptions")
        );

        let provider = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.KeyVault"
        ))
        .unwrap();
        assert_eq!(provider.resource_type(), "Microsoft.Resources/providers");
        assert_eq!(provider.name(), "Microsoft.KeyVault");

        let rg = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws_1/"
        ))
        .unwrap();
        assert_eq!(rg.resource_type(), "Microsoft.Resources/resourceGroups");
        assert_eq!(rg.name(), "azureml-rg-ws_1");
    }

    #[test]
    fn ids_compare_case_insensitively() {
        let a = ArmResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV"
        ))
        .unwrap();
        let b = ArmResourceId::parse(&format!(
            "/SUBSCRIPTIONS/{SUB}/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv"
        ))
        .unwrap();
        assert_eq!(a, b);
        let mut set = std::collections::HashSet::new();
        set.insert(a);
        assert!(set.contains(&b));
    }

    #[test]
    fn rejects_ids_too_long_to_be_real() {
        let prefix = format!("/subscriptions/{SUB}/resourceGroups/");
        let longest = format!("{prefix}{}", "r".repeat(MAX_ARM_ID_BYTES - prefix.len()));
        assert!(ArmResourceId::parse(&longest).is_ok());
        let err = ArmResourceId::parse(&format!("{longest}r"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 4096"), "{err}");
        assert!(err.len() < 1024, "{}", err.len());
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        for (bad, why) in [
            ("subscriptions/x", "must start"),
            (
                "/subscriptions/{subscription-id}/resourceGroups/rg",
                "not a GUID",
            ),
            (
                &format!("/subscriptions/{SUB}/resourceGroups"),
                "resource group name is missing",
            ),
            (
                &format!("/subscriptions/{SUB}/foo/bar"),
                "expected `providers`",
            ),
            (
                &format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults"),
                "name after `vaults`",
            ),
            (
                &format!("/subscriptions/{SUB}//resourceGroups/rg"),
                "empty segment",
            ),
        ] {
            let err = ArmResourceId::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_ids_that_a_url_would_read_differently() {
        const OTHER: &str = "00000000-0000-0000-0000-00000000000b";
        let tail = "resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
        for bad in [
            format!("/subscriptions/{SUB}/../{OTHER}/{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/../../{OTHER}/{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/./{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/%2e%2e/%2E%2E/{OTHER}/{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/.%2e/x/{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/rg%2F..%2F..%2F{OTHER}/{tail}"),
            format!("/subscriptions/{SUB}/resourceGroups/rg\\..\\..\\{OTHER}/{tail}"),
            format!("/subscriptions/{SUB}\\..\\{OTHER}/{tail}"),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv?x=1"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv#f"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/r g/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg\u{0}/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg\u{202e}/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg;/providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/.../providers/Microsoft.KeyVault/vaults/kv"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/subscriptions/{OTHER}/{tail}"
            ),
            format!(
                "/subscriptions/{SUB}/resourceGroups/x/providers/Microsoft.Resources/deployments/d/SUBSCRIPTIONS/{OTHER}/{tail}"
            ),
            format!(
                "/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults/kv/resourcegroups/rg"
            ),
        ] {
            let err = ArmResourceId::parse(&bad).expect_err(&bad).to_string();
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
        // What ARM names do hold stays accepted: dots inside names, parentheses, other scripts.
        for good in [
            format!("/subscriptions/{SUB}/resourceGroups/rg.prod_(eu)-1"),
            format!("/subscriptions/{SUB}/resourceGroups/Ressourcengruppe-Ä"),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv.1"
            ),
        ] {
            assert!(ArmResourceId::parse(&good).is_ok(), "{good}");
        }
    }

    #[test]
    fn parses_key_urls() {
        let key = KeyUrl::parse("https://kv-mlw-cmk-prod.vault.azure.net:443/keys/mlw-cmk-key/4D8A2F6C1E9B47A3B5C0D7E2F8A1C6B9").unwrap();
        assert_eq!(key.vault_name(), "kv-mlw-cmk-prod");
        assert_eq!(key.name(), "mlw-cmk-key");
        assert_eq!(key.version(), Some("4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9"));
        assert!(key.is_under("vault.azure.net"));
        assert!(!key.is_under("vault.azure.cn"));
        assert_eq!(
            key.to_string(),
            "https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9"
        );
        assert_eq!(
            KeyUrl::parse("https://kv1.vault.azure.net/keys/k/")
                .unwrap()
                .version(),
            None
        );
    }

    #[test]
    fn a_lookalike_host_is_not_under_the_suffix() {
        let key = KeyUrl::parse("https://kv1.evilvault.azure.net/keys/k").unwrap();
        assert!(!key.is_under("vault.azure.net"));
        let key = KeyUrl::parse("https://kv1.vault.azure.net.evil.com/keys/k").unwrap();
        assert!(!key.is_under("vault.azure.net"));
    }

    #[test]
    fn rejects_bad_key_urls() {
        for bad in [
            "http://kv1.vault.azure.net/keys/k",
            "https://kv1.vault.azure.net:8443/keys/k",
            "https://kv1.vault.azure.net/secrets/s/0123",
            "https://kv1.vault.azure.net/keys/k/not-a-version",
            "https://user:pw@kv1.vault.azure.net/keys/k",
            "https://localhost/keys/k",
            "not a url",
        ] {
            assert!(KeyUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
