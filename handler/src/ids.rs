//! Identifiers parsed once at the edge: subscription ids, ARM resource ids and Key Vault key URLs.
//!
//! Azure compares ids and names case-insensitively (azure-notes Trap T1), so equality and hashing
//! here ignore ASCII case while the original spelling is kept for display and for request URLs.

use std::fmt;
use std::hash::{Hash, Hasher};

use url::Url;

pub(crate) mod https;
mod reach;
pub use reach::{
    Allowlist, Learned, MAX_MANAGED_GROUPS, ManagedGroups, ManagementGroupId, Membership,
    is_resource_group_name,
};

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
    // Walked without collecting the groups: every relevant event checks a few ids.
    let mut groups = text.split('-');
    [8, 4, 4, 4, 12].into_iter().all(|len| {
        groups
            .next()
            .is_some_and(|group| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
    }) && groups.next().is_none()
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
                check_segment(segment).map_err(|why| fail(&why.to_string()))?;
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
        // A plain URL is split without the full parse (`https::plain` says when that gives
        // the parser's answer); anything else is parsed and checked.
        let parsed;
        let (host, path) = match https::plain(text) {
            Some((host, path)) => (host, path),
            None => {
                parsed = Url::parse(text).map_err(|e| fail(&e.to_string()))?;
                if parsed.scheme() != "https" {
                    return Err(fail("the scheme must be https"));
                }
                if parsed.port().is_some_and(|p| p != 443) {
                    return Err(fail("only the default HTTPS port is allowed"));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(fail("it must not carry credentials"));
                }
                let host = parsed
                    .host_str()
                    .ok_or_else(|| fail("the host is missing"))?
                    .to_ascii_lowercase();
                (host, parsed.path())
            }
        };
        let vault = host.split('.').next().unwrap_or_default().to_owned();
        if host.split('.').count() < 3 || !is_vault_name(&vault) {
            return Err(fail("the host must be `{vault}.{key vault DNS suffix}`"));
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
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
pub fn check_segment(segment: &str) -> Result<(), SegmentError> {
    if segment.is_empty() {
        return Err(SegmentError::Empty);
    }
    if segment.bytes().all(|b| b == b'.') {
        return Err(SegmentError::Dots(truncate(segment)));
    }
    match segment.chars().find(|&c| !is_name_char(c)) {
        None => Ok(()),
        Some(c) => Err(SegmentError::Character {
            segment: truncate(segment),
            character: describe_char(c),
        }),
    }
}

/// Why a path segment cannot be part of an ARM id (the segment is shown bounded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("it has an empty segment")]
    Empty,
    #[error("`{0}` segments are not allowed (they change the path when the URL is resolved)")]
    Dots(String),
    #[error("segment `{segment}` holds {character}, which ARM names cannot hold")]
    Character { segment: String, character: String },
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
mod tests;
