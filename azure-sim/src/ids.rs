//! Identifier helpers: case-insensitive ARM id comparison (azure-notes Trap T1), ARM id builders,
//! and deterministic ids so that scenarios produce the same principals and key versions on every
//! run.

use ring::digest::{SHA256, digest};

/// ASCII case-insensitive equality, the only way ARM ids, names and namespaces may be compared.
pub fn eq_ci(a: &str, b: &str) -> bool {
    // From the end: names and ids of many similar resources (`kv-00017`, `kv-00018`) share
    // their start, so comparing backwards tells them apart at the first byte. Lookups scan
    // every resource of the tenant, thousands in benchmarks.
    a.len() == b.len()
        && a.bytes()
            .rev()
            .zip(b.bytes().rev())
            .all(|(x, y)| x.eq_ignore_ascii_case(&y))
}

/// Normalises an ARM id or scope for use as a map key: lower case, no trailing slash.
pub fn norm(id: &str) -> String {
    let trimmed = id.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

/// True when `outer` is `inner` or one of its ancestors (role assignment inheritance):
/// a grant at subscription, resource group or vault scope applies to the vault and its keys.
pub fn scope_covers(outer: &str, inner: &str) -> bool {
    // Without allocating: this runs for every role assignment of every authorised request.
    let outer = outer.trim_end_matches('/').as_bytes();
    let inner = inner.trim_end_matches('/').as_bytes();
    if outer.is_empty() {
        return true;
    }
    inner.len() >= outer.len()
        && inner[..outer.len()].eq_ignore_ascii_case(outer)
        && (inner.len() == outer.len() || inner[outer.len()] == b'/')
}

/// A UUID-formatted id derived from a seed, so scenario principals are stable across runs.
pub fn stable_uuid(seed: &str) -> String {
    let hash = digest(&SHA256, seed.as_bytes());
    let b = hash.as_ref();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// A 32-hex-digit id derived from a seed: the shape of a Key Vault key version.
pub fn stable_hex32(seed: &str) -> String {
    let hash = digest(&SHA256, seed.as_bytes());
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random UUID for request ids, event ids and token ids.
pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `/subscriptions/{sub}/resourceGroups/{rg}`.
pub fn resource_group_id(subscription: &str, resource_group: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}")
}

/// The ARM id of a key vault.
pub fn vault_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.KeyVault/vaults/{name}",
        resource_group_id(subscription, resource_group)
    )
}

/// The ARM id of an Azure ML workspace.
pub fn workspace_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
        resource_group_id(subscription, resource_group)
    )
}

/// The data-plane base URL of a vault, without a trailing slash (like ARM's `vaultUri`, azure-notes
/// Trap T15).
pub fn vault_uri(name: &str) -> String {
    format!("https://{}.vault.azure.net", name.to_ascii_lowercase())
}

/// The parts of an ARM resource id that the simulator needs to find a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmIdParts {
    /// Subscription id as written.
    pub subscription: String,
    /// Resource group as written (empty for subscription-level resources).
    pub resource_group: String,
    /// Provider namespace, e.g. `Microsoft.KeyVault`.
    pub namespace: String,
    /// Type/name pairs after the namespace, e.g. `[("vaults","kv1")]`.
    pub segments: Vec<(String, String)>,
}

impl ArmIdParts {
    /// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}…]`.
    /// Returns `None` for anything else; casing of the keywords is ignored (azure-notes Trap T1).
    pub fn parse(id: &str) -> Option<Self> {
        let parts: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < 2 || !eq_ci(parts[0], "subscriptions") {
            return None;
        }
        let subscription = parts[1].to_owned();
        let mut i = 2;
        let mut resource_group = String::new();
        if parts.len() >= 4 && eq_ci(parts[2], "resourceGroups") {
            resource_group = parts[3].to_owned();
            i = 4;
        }
        if parts.len() < i + 2 || !eq_ci(parts[i], "providers") {
            return None;
        }
        let namespace = parts[i + 1].to_owned();
        let rest = &parts[i + 2..];
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return None;
        }
        let segments = rest
            .chunks(2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect();
        Some(Self {
            subscription,
            resource_group,
            namespace,
            segments,
        })
    }

    /// The resource name of the last type/name pair.
    pub fn name(&self) -> &str {
        self.segments.last().map(|(_, n)| n.as_str()).unwrap_or("")
    }
}

/// The `$skiptoken` of a page that starts at `offset` (the simulator's paged lists).
pub fn skiptoken(offset: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

/// The offset a `$skiptoken` from [`skiptoken`] names; `None` for any other text.
pub fn skiptoken_offset(token: &str) -> Option<usize> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_inheritance_is_case_insensitive_and_segment_aligned() {
        let vault = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/kv";
        assert!(scope_covers("/subscriptions/s", vault));
        assert!(scope_covers("/subscriptions/s/resourcegroups/rg", vault));
        assert!(scope_covers(vault, &format!("{vault}/keys/k")));
        assert!(scope_covers("/", vault));
        assert!(!scope_covers("/subscriptions/s/resourcegroups/r", vault));
        assert!(!scope_covers(&format!("{vault}/keys/k"), vault));
        assert!(
            scope_covers(&format!("{vault}/"), vault),
            "a trailing slash"
        );
        assert!(scope_covers(vault, &vault.to_ascii_uppercase()));
        assert!(
            !scope_covers(&format!("{vault}x"), vault),
            "longer than the scope"
        );
        assert!(!scope_covers(
            "/subscriptions/s/resourcegroups/rg",
            "/subscriptions/s/resourcegroups/rg2"
        ));
    }

    #[test]
    fn stable_ids_have_the_right_shape() {
        let id = stable_uuid("x");
        assert_eq!(id.len(), 36);
        assert_eq!(id, stable_uuid("x"));
        assert_ne!(id, stable_uuid("y"));
        let v = stable_hex32("x");
        assert_eq!(v.len(), 32);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn parses_arm_ids_with_any_casing() {
        let p = ArmIdParts::parse(
            "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.KeyVault/vaults/kv/keys/k",
        )
        .unwrap();
        assert_eq!(p.subscription, "s1");
        assert_eq!(p.resource_group, "rg");
        assert_eq!(p.namespace, "Microsoft.KeyVault");
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.name(), "k");
        assert!(ArmIdParts::parse("/subscriptions/s1/resourceGroups/rg").is_none());
    }
}
