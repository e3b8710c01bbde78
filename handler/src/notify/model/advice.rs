//! What a finding means to the person who reads the alert: the problem in plain words, why it
//! matters (from the CMK requirements of docs/rules.md and docs/azure-notes.md), how to fix it
//! (an `az` command filled in with the real names where one exists, the portal blade, the
//! Microsoft doc section). One table keyed by [`RuleId`], so every channel says the same.

use crate::catalogue::RuleId;
use crate::ids::{ArmResourceId, KeyUrl};

/// The fixed text of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleAdvice {
    /// The problem in a few plain words, for headlines ("purge protection is off").
    pub problem: &'static str,
    /// One sentence on what goes wrong if nobody acts.
    pub why: &'static str,
    /// The Microsoft documentation section that explains the fix.
    pub doc: &'static str,
    /// The portal blade of the resource to open (appended to its portal link), if any.
    pub blade: Option<&'static str>,
}

const CMK_DOC: &str =
    "https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys";
const SOFT_DELETE_DOC: &str =
    "https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview#purge-protection";
const ROTATION_DOC: &str =
    "https://learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation";

/// The one table of advice per rule.
pub const fn advice(rule: RuleId) -> RuleAdvice {
    let (problem, why, doc, blade) = match rule {
        RuleId::WorkspaceCmkEnabled => (
            "the workspace is not encrypted with a customer-managed key",
            "Its data is encrypted with a Microsoft-managed key, which the CMK requirement does not allow, and encryption can only be chosen when a workspace is created.",
            "https://learn.microsoft.com/azure/machine-learning/how-to-setup-customer-managed-keys",
            None,
        ),
        RuleId::WorkspaceVaultSameSubscription => (
            "the key vault is in another subscription",
            "Azure Machine Learning requires the key vault in the workspace's subscription; a vault elsewhere is not supported and can break encryption.",
            CMK_DOC,
            None,
        ),
        RuleId::WorkspaceKeyAccess => (
            "the workspace identity cannot use the key",
            "Without get, wrapKey and unwrapKey on the key the workspace cannot unwrap its data encryption key and loses access to its data.",
            "https://learn.microsoft.com/azure/key-vault/general/rbac-guide",
            None,
        ),
        RuleId::WorkspaceUnsupportedEndpoints => (
            "the workspace uses an endpoint type CMK does not cover",
            "Data of this endpoint type is not protected by the customer-managed key, so the requirement is not met for it.",
            CMK_DOC,
            None,
        ),
        RuleId::VaultExists => (
            "the key vault is missing",
            "Without the vault the key is gone and the workspace cannot decrypt its data; a deleted vault can be recovered only while it is soft-deleted.",
            "https://learn.microsoft.com/azure/key-vault/general/key-vault-recovery",
            None,
        ),
        RuleId::VaultSoftDelete => (
            "soft-delete is off on the key vault",
            "A deleted key or vault is gone at once, and with it every workspace's data encrypted with it.",
            "https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview",
            Some("properties"),
        ),
        RuleId::VaultPurgeProtection => (
            "purge protection is off on the key vault",
            "Anyone with purge rights can destroy the key for good, and data encrypted with it becomes unrecoverable.",
            SOFT_DELETE_DOC,
            Some("properties"),
        ),
        RuleId::VaultEventsWired => (
            "cmk-guard does not receive the vault's events",
            "Without the vault's Event Grid subscription and audit log, a disabled key or a failed unwrap is seen only by the next sweep, hours later.",
            "https://learn.microsoft.com/azure/key-vault/general/event-grid-overview",
            Some("events"),
        ),
        RuleId::KeyExists => (
            "the key is missing",
            "The workspace cannot unwrap its data encryption key, so its data is unreadable until the key is recovered.",
            "https://learn.microsoft.com/azure/key-vault/general/key-vault-recovery",
            Some("keys"),
        ),
        RuleId::KeyEnabled => (
            "the key is disabled",
            "A disabled key cannot unwrap, so the workspace loses access to its data.",
            CMK_DOC,
            Some("keys"),
        ),
        RuleId::KeyExpiry => (
            "the key expires soon or has expired",
            "An expired key cannot wrap or unwrap, so the workspace stops working with its data.",
            ROTATION_DOC,
            Some("keys"),
        ),
        RuleId::KeyExpirySet => (
            "the key has no expiration date",
            "A key that never expires is never forced to rotate, against the key-lifetime requirement.",
            ROTATION_DOC,
            Some("keys"),
        ),
        RuleId::KeyTypeSize => (
            "the key type or size is not supported",
            "Azure Machine Learning needs an RSA key of a supported size; another key cannot protect the workspace.",
            CMK_DOC,
            Some("keys"),
        ),
        RuleId::KeyRotationPolicy => (
            "the key has no rotation policy",
            "Without automatic rotation the key ages past its lifetime and expires unnoticed.",
            ROTATION_DOC,
            Some("keys"),
        ),
        RuleId::KeyUseFailures => (
            "a service failed to use the key",
            "A service that encrypts the workspace's data could not wrap, unwrap or read the key: this is the CMK outage itself, and the workspace's data becomes unavailable.",
            "https://learn.microsoft.com/azure/key-vault/general/troubleshooting-access-issues",
            Some("keys"),
        ),
        RuleId::SubscriptionProviders => (
            "a resource provider CMK needs is not registered",
            "The workspace creates its CMK resources (Cosmos DB, Search, Storage) in a managed resource group; without the provider that fails.",
            "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-providers-and-types",
            None,
        ),
        RuleId::ManagedResourcesTamper => (
            "someone changed the workspace's managed resources",
            "The managed resources hold the workspace's encrypted data; changing them can break encryption or the workspace.",
            CMK_DOC,
            None,
        ),
        RuleId::GuardVisibility => (
            "cmk-guard cannot read part of the chain",
            "What cannot be read cannot be checked, so a problem there would go unnoticed.",
            "https://learn.microsoft.com/azure/role-based-access-control/role-assignments-portal",
            None,
        ),
        RuleId::GuardRemediationBudget => (
            "cmk-guard stopped remediating a resource",
            "Something keeps undoing the fix; a person must find out what before cmk-guard tries again.",
            CMK_DOC,
            None,
        ),
    };
    RuleAdvice {
        problem,
        why,
        doc,
        blade,
    }
}

/// The names an `az` command needs, taken from a finding's resource (an ARM id or a key URL).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Names {
    vault: Option<String>,
    resource_group: Option<String>,
    key: Option<String>,
    subscription: Option<String>,
    namespace: Option<String>,
    /// The key version the workspace pins (the version in use), when its key URL names one.
    version: Option<String>,
}

impl Names {
    fn of(resource: &str) -> Self {
        if let Ok(url) = KeyUrl::parse(resource) {
            return Names {
                vault: Some(url.vault_name().to_owned()),
                key: Some(url.name().to_owned()),
                version: url.version().map(str::to_owned),
                ..Names::default()
            };
        }
        let Ok(id) = ArmResourceId::parse(resource) else {
            return Names::default();
        };
        let mut names = Names {
            resource_group: id.resource_group().map(str::to_owned),
            subscription: Some(id.subscription().as_str().to_owned()),
            ..Names::default()
        };
        if id.is_type("Microsoft.KeyVault/vaults") {
            names.vault = Some(id.name().to_owned());
        } else if id.is_type("Microsoft.KeyVault/vaults/keys") {
            names.key = Some(id.name().to_owned());
            names.vault = id.top_level_resource().map(|v| v.name().to_owned());
        } else if id.resource_group().is_none() {
            // `/subscriptions/{id}/providers/{namespace}` names a resource provider.
            names.namespace = resource
                .rsplit_once("/providers/")
                .map(|(_, namespace)| namespace.trim_end_matches('/').to_owned())
                .filter(|namespace| !namespace.is_empty() && !namespace.contains('/'));
        }
        names
    }
}

/// A shell-safe word: names from Azure are quoted unless they hold only safe characters.
fn word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The Microsoft doc section for the fix: for key access on an access-policy vault the
/// access-policy guide, matching the `set-policy` command, else the rule's own.
pub fn doc(rule: RuleId, observed: &str) -> &'static str {
    match rule {
        RuleId::WorkspaceKeyAccess if uses_access_policies(observed) => ACCESS_POLICY_DOC,
        _ => advice(rule).doc,
    }
}

const ACCESS_POLICY_DOC: &str =
    "https://learn.microsoft.com/azure/key-vault/general/assign-access-policy";

/// Whether the key-access rule found an access-policy vault (rather than an RBAC one).
fn uses_access_policies(observed: &str) -> bool {
    observed.contains("access-policy") || observed.contains("access policy")
}

/// `--version <v>` when the workspace pins a key version: `set-attributes` without it changes
/// the newest version, which may not be the one in use.
fn version_flag(names: &Names) -> String {
    names
        .version
        .as_deref()
        .map_or_else(String::new, |version| {
            format!(" --version {}", word(version))
        })
}

/// The fix for an expiring key. A workspace that pins a key version keeps using the old one
/// after a rotation, so it is pointed at the new version too: the PATCH of the workspace's
/// `keyIdentifier` (docs/azure-notes.md §3.3), with the version `rotate` returns.
fn rotate_command(names: &Names, workspace: &str) -> Option<String> {
    let vault = word(names.vault.as_deref()?);
    let key = word(names.key.as_deref()?);
    let rotate = format!("az keyvault key rotate --vault-name {vault} --name {key}");
    if names.version.is_none() {
        return Some(rotate);
    }
    let Ok(workspace) = ArmResourceId::parse(workspace) else {
        return Some(format!(
            "{rotate}, then point the workspace's keyIdentifier at the new key version"
        ));
    };
    let url = word(&format!(
        "https://management.azure.com{}?api-version=2024-04-01",
        workspace.as_str()
    ));
    Some(format!(
        "KID=$({rotate} --query key.kid -o tsv) && az rest --method patch --url {url} --body '{{\"properties\":{{\"encryption\":{{\"keyVaultProperties\":{{\"keyIdentifier\":\"'\"$KID\"'\"}}}}}}}}'"
    ))
}

/// The Key Vault events cmk-guard subscribes a vault's system topic to.
const VAULT_EVENT_TYPES: &str = "Microsoft.KeyVault.KeyNewVersionCreated Microsoft.KeyVault.KeyNearExpiry Microsoft.KeyVault.KeyExpired Microsoft.KeyVault.VaultAccessPolicyChanged";

/// Wires what `observed` says is missing, with the names the sweep's remediation uses
/// (docs/deploy.md *How vaults are covered*); the deployment's ids come from the app settings
/// of the same names, exported in the shell.
fn wiring_commands(names: &Names, observed: &str) -> Option<String> {
    let vault = word(names.vault.as_deref()?);
    let group = word(names.resource_group.as_deref()?);
    let id = format!("\"$(az keyvault show --name {vault} --query id -o tsv)\"");
    // The rule names an existing topic as "the system topic {name} has …" / "… does not include".
    let existing = observed
        .split_once("system topic ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|name| crate::ids::check_segment(name).is_ok());
    let mut commands = Vec::new();
    let topic = match existing {
        Some(topic) => word(topic),
        None => {
            let topic = format!("{vault}-cmk-guard");
            if observed.contains("no Event Grid system topic") {
                commands.push(format!(
                    "az eventgrid system-topic create -g {group} -n {topic} --topic-type Microsoft.KeyVault.vaults --source {id} -l \"$(az keyvault show --name {vault} --query location -o tsv)\""
                ));
            }
            topic
        }
    };
    if observed.contains("system topic") {
        commands.push(format!(
            "az eventgrid system-topic event-subscription create -g {group} --system-topic-name {topic} -n cmk-guard --endpoint-type azurefunction --endpoint \"$CMKGUARD_KEYVAULT_EVENTS_TARGET\" --included-event-types {VAULT_EVENT_TYPES}"
        ));
    }
    if observed.contains("diagnostic setting") {
        commands.push(format!(
            "az monitor diagnostic-settings create -n cmk-guard-audit --resource {id} --event-hub \"$CMKGUARD_AUDIT_EVENTHUB_NAME\" --event-hub-rule \"$CMKGUARD_AUDIT_EVENTHUB_RULE_ID\" --logs '[{{\"category\": \"AuditEvent\", \"enabled\": true}}]'"
        ));
    }
    (!commands.is_empty()).then(|| commands.join(" && "))
}

/// The `az` command that fixes the finding, with the real names, when one exists and the
/// names are known. `observed` tells an access-policy vault from an RBAC one; `workspace` (its
/// ARM id) is where a rotated key's new version must be set.
pub fn fix_command(
    rule: RuleId,
    resource: &str,
    observed: &str,
    workspace: &str,
) -> Option<String> {
    let names = Names::of(resource);
    let vault = names.vault.as_deref().map(word);
    let key = names.key.as_deref().map(word);
    let group = names.resource_group.as_deref().map(word);
    // The rules name the workspace identity as "(principal {object id})".
    let principal = observed
        .split_once("(principal ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id)
        .filter(|id| crate::ids::is_guid(id))
        .unwrap_or("<workspace identity object id>");
    match rule {
        RuleId::VaultPurgeProtection => Some(format!(
            "az keyvault update --name {} --resource-group {} --enable-purge-protection true",
            vault?, group?
        )),
        RuleId::VaultSoftDelete => Some(format!(
            "az keyvault update --name {} --resource-group {} --enable-soft-delete true",
            vault?, group?
        )),
        RuleId::WorkspaceKeyAccess if uses_access_policies(observed) => Some(format!(
            "az keyvault set-policy --name {} --object-id {principal} --key-permissions get wrapKey unwrapKey",
            vault?
        )),
        RuleId::WorkspaceKeyAccess => Some(format!(
            "az role assignment create --role \"Key Vault Crypto Service Encryption User\" --assignee-object-id {principal} --assignee-principal-type ServicePrincipal --scope \"$(az keyvault show --name {} --query id -o tsv)/keys/{}\"",
            vault?, key?
        )),
        RuleId::KeyEnabled => Some(format!(
            "az keyvault key set-attributes --vault-name {} --name {}{} --enabled true",
            vault?,
            key?,
            version_flag(&names)
        )),
        RuleId::KeyExpiry => rotate_command(&names, workspace),
        RuleId::KeyExpirySet => Some(format!(
            "az keyvault key set-attributes --vault-name {} --name {}{} --expires <YYYY-MM-DDThh:mm:ssZ>",
            vault?,
            key?,
            version_flag(&names)
        )),
        RuleId::KeyRotationPolicy => Some(format!(
            "az keyvault key rotation-policy update --vault-name {} --name {} --value <policy.json>",
            vault?, key?
        )),
        RuleId::SubscriptionProviders => Some(format!(
            "az provider register --namespace {} --subscription {}",
            word(names.namespace.as_deref()?),
            word(names.subscription.as_deref()?)
        )),
        RuleId::VaultEventsWired => wiring_commands(&names, observed),
        RuleId::VaultExists => Some(format!("az keyvault recover --name {}", vault?)),
        RuleId::KeyExists => Some(format!(
            "az keyvault key recover --vault-name {} --name {}",
            vault?, key?
        )),
        _ => None,
    }
}

/// What cmk-guard does about a finding, from the policy: the same words in every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handling {
    /// The policy allows the remediation and the mode is `remediate`.
    Fixes,
    /// The policy allows the remediation, but the mode only alerts.
    WouldFix,
    /// No remediation exists or the policy does not allow it.
    NeedsPerson,
}

impl Handling {
    /// `allowed`: the policy allows remediating the rule; `remediating`: the mode is
    /// `remediate`.
    pub fn of(allowed: bool, remediating: bool) -> Self {
        match (allowed, remediating) {
            (true, true) => Handling::Fixes,
            (true, false) => Handling::WouldFix,
            (false, _) => Handling::NeedsPerson,
        }
    }

    /// The sentence shown for it.
    pub fn sentence(self) -> &'static str {
        match self {
            Handling::Fixes => "cmk-guard fixes this (remediate mode).",
            Handling::WouldFix => {
                "cmk-guard would fix this in remediate mode; in this mode a person fixes it."
            }
            Handling::NeedsPerson => "cmk-guard does not fix this: it needs a person.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

    #[test]
    fn every_rule_has_advice_in_one_sentence() {
        for rule in RuleId::ALL {
            let advice = advice(rule);
            assert!(advice.why.ends_with('.'), "{rule}");
            assert_eq!(advice.why.matches(". ").count(), 0, "{rule}: one sentence");
            assert!(advice.doc.starts_with("https://learn.microsoft.com/"));
        }
    }

    #[test]
    fn commands_carry_the_real_names() {
        let vault = format!(
            "/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.KeyVault/vaults/kv-prod"
        );
        assert_eq!(
            fix_command(RuleId::VaultPurgeProtection, &vault, "", "").as_deref(),
            Some(
                "az keyvault update --name kv-prod --resource-group rg-ml --enable-purge-protection true"
            )
        );
        let key = "https://kv-prod.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef";
        assert_eq!(
            fix_command(
                RuleId::KeyExpiry,
                "https://kv-prod.vault.azure.net/keys/cmk",
                "",
                ""
            )
            .as_deref(),
            Some("az keyvault key rotate --vault-name kv-prod --name cmk")
        );
        assert!(
            fix_command(
                RuleId::WorkspaceKeyAccess,
                key,
                "the vault (access-policy model) has no access policy",
                ""
            )
            .unwrap()
            .starts_with("az keyvault set-policy --name kv-prod ")
        );
        assert_eq!(
            fix_command(
                RuleId::WorkspaceKeyAccess,
                key,
                "the access policy for the system identity (principal ae1d8c63-4e71-4682-8636-a569839d0b78) lacks unwrapKey",
                ""
            )
            .as_deref(),
            Some(
                "az keyvault set-policy --name kv-prod --object-id ae1d8c63-4e71-4682-8636-a569839d0b78 --key-permissions get wrapKey unwrapKey"
            )
        );
        assert!(
            fix_command(RuleId::WorkspaceKeyAccess, key, "no role assignment", "")
                .unwrap()
                .contains("--role \"Key Vault Crypto Service Encryption User\"")
        );
        assert_eq!(
            fix_command(
                RuleId::SubscriptionProviders,
                &format!("/subscriptions/{SUB}/providers/Microsoft.Search"),
                "",
                ""
            )
            .as_deref(),
            Some(
                format!("az provider register --namespace Microsoft.Search --subscription {SUB}")
                    .as_str()
            )
        );
        assert_eq!(
            fix_command(RuleId::WorkspaceCmkEnabled, &vault, "", ""),
            None
        );
    }

    #[test]
    fn wiring_commands_create_what_is_missing() {
        let vault = format!(
            "/subscriptions/{SUB}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/kv-prod"
        );
        let none = fix_command(
            RuleId::VaultEventsWired,
            &vault,
            "the vault has no Event Grid system topic; no diagnostic setting streams AuditEvent to cmk-guard's Event Hub kv-audit",
            "",
        )
        .unwrap();
        let parts: Vec<&str> = none.split(" && ").collect();
        assert_eq!(parts.len(), 3, "{none}");
        assert!(
            parts[0]
                .starts_with("az eventgrid system-topic create -g rg-keys -n kv-prod-cmk-guard")
        );
        assert!(parts[1].contains("--system-topic-name kv-prod-cmk-guard -n cmk-guard"));
        assert!(parts[2].starts_with("az monitor diagnostic-settings create -n cmk-guard-audit"));
        let existing = fix_command(
            RuleId::VaultEventsWired,
            &vault,
            "the system topic kv-prod-events has no event subscription to cmk-guard's function",
            "",
        )
        .unwrap();
        assert!(
            existing.starts_with("az eventgrid system-topic event-subscription create -g rg-keys --system-topic-name kv-prod-events "),
            "{existing}"
        );
        assert!(!existing.contains("diagnostic-settings"));
        let hostile = fix_command(
            RuleId::VaultEventsWired,
            &vault,
            "the system topic $(rm -rf ~) has no event subscription to cmk-guard's function",
            "",
        )
        .unwrap();
        assert!(
            hostile.contains("--system-topic-name kv-prod-cmk-guard"),
            "{hostile}"
        );
    }

    #[test]
    fn a_pinned_version_is_the_one_the_fix_changes() {
        let key = "https://kv-prod.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef";
        let workspace = format!(
            "/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw_cmk"
        );
        let rotate = fix_command(RuleId::KeyExpiry, key, "", &workspace).unwrap();
        assert!(rotate.starts_with(
            "KID=$(az keyvault key rotate --vault-name kv-prod --name cmk --query key.kid -o tsv) && az rest --method patch --url "
        ));
        assert!(rotate.contains(&format!(
            "'https://management.azure.com{workspace}?api-version=2024-04-01'"
        )));
        assert!(rotate.ends_with(
            r#"--body '{"properties":{"encryption":{"keyVaultProperties":{"keyIdentifier":"'"$KID"'"}}}}'"#
        ));
        assert!(!rotate.contains('\\'));
        assert!(
            fix_command(RuleId::KeyExpiry, key, "", "")
                .unwrap()
                .ends_with("then point the workspace's keyIdentifier at the new key version")
        );
        for rule in [RuleId::KeyEnabled, RuleId::KeyExpirySet] {
            assert!(
                fix_command(rule, key, "", &workspace)
                    .unwrap()
                    .starts_with(
                        "az keyvault key set-attributes --vault-name kv-prod --name cmk --version 0123456789abcdef0123456789abcdef "
                    ),
                "{rule}"
            );
        }
    }

    #[test]
    fn key_access_links_the_guide_of_the_vaults_permission_model() {
        assert!(
            doc(
                RuleId::WorkspaceKeyAccess,
                "the vault (access-policy model) has no access policy"
            )
            .ends_with("/assign-access-policy")
        );
        assert!(doc(RuleId::WorkspaceKeyAccess, "no role assignment").ends_with("/rbac-guide"));
    }

    #[test]
    fn hostile_names_stay_one_shell_word() {
        assert_eq!(word("rg-1"), "rg-1");
        assert_eq!(word("a b;rm -rf"), "'a b;rm -rf'");
        assert_eq!(word("it's"), "'it'\\''s'");
    }

    #[test]
    fn handling_follows_the_policy_and_mode() {
        assert_eq!(Handling::of(true, true), Handling::Fixes);
        assert_eq!(Handling::of(true, false), Handling::WouldFix);
        assert_eq!(Handling::of(false, true), Handling::NeedsPerson);
    }
}
