//! Resolve: which workspaces does a trigger affect? A workspace event names its workspace; an
//! endpoint event its parent; a vault, key, access-policy or role-assignment event maps to the
//! CMK workspaces that use that vault (Resource Graph, cached briefly through the observer);
//! an event in (or of) a service-provisioned resource group maps to the workspace of the same
//! subscription that owns it.
//!
//! Resource Graph is only discovery (azure-notes Trap T19): observe re-reads every workspace
//! through ARM before anything is decided.

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::azure::AzureError;
use crate::ids::{ArmResourceId, SubscriptionId};
use crate::intake::{MANAGED_RESOURCE_GROUP_PREFIX, ResourceKind, Target, Trigger};
use crate::observe::{Observer, parse};
use crate::snapshot::Workspace;

/// Resource Graph returns at most this many rows per page.
const PAGE_SIZE: u64 = 1000;
/// A query returning more pages than this is cut short (5 million workspaces).
const MAX_PAGES: usize = 5000;

/// What a trigger resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// These workspaces, no query needed.
    Workspaces(Vec<ArmResourceId>),
    /// CMK workspaces whose vault is this one.
    ByVault(ArmResourceId),
    /// CMK workspaces whose vault, or which themselves, sit under this scope.
    UnderScope(ArmResourceId),
    /// The workspace whose service-provisioned resource group has this name, in this
    /// subscription (the group's: Azure ML provisions it beside the workspace).
    ByManagedGroup(SubscriptionId, String),
    /// CMK workspaces whose vault has this name in this subscription.
    ByVaultName(SubscriptionId, String),
    /// Every CMK workspace of the subscription.
    Subscription(SubscriptionId),
}

/// A workspace to check, and what Resource Graph said of its encryption and identity when it
/// was found there: a hint that lets observe read the key chain without waiting for the
/// workspace (observe still re-reads the workspace through ARM, azure-notes Trap T19).
#[derive(Debug, Clone)]
pub struct Found {
    pub id: ArmResourceId,
    pub hint: Option<Workspace>,
}

impl Found {
    fn without_hint(id: ArmResourceId) -> Self {
        Self { id, hint: None }
    }
}

/// The columns of every workspace query: the id, and the hint observe starts from.
pub const WORKSPACE_COLUMNS: &str = "project id, identity, encryption = properties.encryption";

/// Every workspace (the sweep and `scan`), with [`WORKSPACE_COLUMNS`].
pub const ALL_WORKSPACES: &str = "resources | where type =~ 'microsoft.machinelearningservices/workspaces' \
    | project id, identity, encryption = properties.encryption | order by id asc";

/// The workspaces a trigger affects, limited to `allowed` subscriptions when given.
pub async fn workspaces(
    observer: &Observer,
    trigger: &Trigger,
    allowed: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> Result<Vec<Found>, AzureError> {
    let lookup = lookup(&trigger.target);
    let query = match &lookup {
        Lookup::Workspaces(ids) => {
            let found = ids.iter().cloned().map(Found::without_hint).collect();
            return Ok(in_scope(found, allowed));
        }
        other => kql(other),
    };
    let found = query_workspaces(observer, &query, allowed, deadline).await?;
    Ok(in_scope(found, allowed))
}

fn lookup(target: &Target) -> Lookup {
    match target {
        Target::Key { vault, .. } => Lookup::ByVault(vault.clone()),
        Target::Arm { id, kind } => match kind {
            ResourceKind::Workspace => Lookup::Workspaces(vec![id.clone()]),
            ResourceKind::OnlineEndpoint | ResourceKind::BatchEndpoint => {
                Lookup::Workspaces(id.top_level_resource().into_iter().collect())
            }
            ResourceKind::Vault | ResourceKind::VaultKey => {
                Lookup::ByVault(id.top_level_resource().unwrap_or_else(|| id.clone()))
            }
            // A purged vault's id no longer names its resource group: match by name.
            ResourceKind::DeletedVault => {
                Lookup::ByVaultName(id.subscription().clone(), id.name().to_owned())
            }
            ResourceKind::RoleAssignment => match id.scope() {
                Some(scope)
                    if scope.is_type("Microsoft.KeyVault/vaults")
                        || scope.is_type("Microsoft.KeyVault/vaults/keys") =>
                {
                    Lookup::ByVault(scope.top_level_resource().unwrap_or(scope))
                }
                Some(scope) if scope.resource_group().is_some() => Lookup::UnderScope(scope),
                _ => Lookup::Subscription(id.subscription().clone()),
            },
            ResourceKind::ResourceGroup => {
                if id
                    .name()
                    .to_ascii_lowercase()
                    .starts_with(MANAGED_RESOURCE_GROUP_PREFIX)
                {
                    Lookup::ByManagedGroup(id.subscription().clone(), id.name().to_owned())
                } else {
                    Lookup::UnderScope(id.clone())
                }
            }
            ResourceKind::ManagedResourceGroupMember => Lookup::ByManagedGroup(
                id.subscription().clone(),
                id.resource_group().unwrap_or_default().to_owned(),
            ),
            ResourceKind::ProviderRegistration => Lookup::Subscription(id.subscription().clone()),
        },
    }
}

/// The Kusto query for a lookup. Values are quoted with [`kql_string`].
fn kql(lookup: &Lookup) -> String {
    const WORKSPACES: &str = "resources | where type =~ 'microsoft.machinelearningservices/workspaces' \
        | extend vault = tolower(tostring(properties.encryption.keyVaultProperties.keyVaultArmId))";
    let condition = match lookup {
        Lookup::ByVault(vault) => format!(
            "vault == {}",
            kql_string(&vault.as_str().to_ascii_lowercase())
        ),
        Lookup::UnderScope(scope) => {
            let prefix = kql_string(&format!("{}/", scope.as_str().to_ascii_lowercase()));
            format!("vault startswith {prefix} or tolower(id) startswith {prefix}")
        }
        // A bare name matches only in the event's subscription, not same-named groups elsewhere.
        Lookup::ByManagedGroup(subscription, name) => {
            let name = name.to_ascii_lowercase();
            format!(
                "subscriptionId =~ {} and (tolower(tostring(properties.serviceProvisionedResourceGroup)) == {} or tolower(tostring(properties.serviceProvisionedResourceGroup)) endswith {})",
                kql_string(subscription.as_str()),
                kql_string(&name),
                kql_string(&format!("/resourcegroups/{name}"))
            )
        }
        Lookup::ByVaultName(subscription, name) => format!(
            "vault startswith {} and vault endswith {}",
            kql_string(&format!("/subscriptions/{subscription}/")),
            kql_string(&format!(
                "/providers/microsoft.keyvault/vaults/{}",
                name.to_ascii_lowercase()
            ))
        ),
        Lookup::Subscription(subscription) => format!(
            "subscriptionId == {} and tostring(properties.encryption.status) =~ 'Enabled'",
            kql_string(subscription.as_str())
        ),
        Lookup::Workspaces(_) => "false".to_owned(),
    };
    format!("{WORKSPACES} | where {condition} | {WORKSPACE_COLUMNS} | order by id asc")
}

/// A single-quoted Kusto string literal with `\` and `'` escaped.
pub fn kql_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            c if c.is_control() => {}
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// Runs a Resource Graph query of workspaces projecting [`WORKSPACE_COLUMNS`] (all pages,
/// `$skipToken` replayed with the same query and scopes, azure-notes Trap T11). Cached briefly
/// through the observer.
pub async fn query_workspaces(
    observer: &Observer,
    query: &str,
    subscriptions: Option<&[SubscriptionId]>,
    deadline: Instant,
) -> Result<Vec<Found>, AzureError> {
    let mut ids = Vec::new();
    observer
        .resource_graph_rows(
            query,
            subscriptions,
            (PAGE_SIZE, MAX_PAGES),
            deadline,
            |row| {
                if let Some(id) = row
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| ArmResourceId::parse(id).ok())
                {
                    ids.push(Found {
                        hint: hint(row),
                        id,
                    });
                }
            },
        )
        .await?;
    Ok(ids)
}

/// The workspace a Resource Graph row describes, when the row has the hint's columns.
fn hint(row: &Value) -> Option<Workspace> {
    let encryption = row.get("encryption").filter(|e| e.is_object())?;
    let workspace = json!({
        "id": row.get("id"),
        "identity": row.get("identity"),
        "properties": { "encryption": encryption },
    });
    Some(parse::workspace(&workspace))
}

fn in_scope(mut found: Vec<Found>, allowed: Option<&[SubscriptionId]>) -> Vec<Found> {
    if let Some(allowed) = allowed {
        found.retain(|f| allowed.contains(f.id.subscription()));
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|f| seen.insert(f.id.clone()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

    fn arm(id: &str, kind: ResourceKind) -> Target {
        Target::Arm {
            id: ArmResourceId::parse(id).unwrap(),
            kind,
        }
    }

    #[test]
    fn every_workspace_query_projects_the_hint() {
        assert!(ALL_WORKSPACES.contains(WORKSPACE_COLUMNS));
        assert!(
            kql(&Lookup::Subscription(SubscriptionId::parse(SUB).unwrap()))
                .contains(WORKSPACE_COLUMNS)
        );
    }

    #[test]
    fn a_row_with_encryption_is_a_hint_and_one_without_is_not() {
        let id = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
        );
        let row = json!({
            "id": id,
            "identity": {"type": "SystemAssigned", "principalId": "p1", "tenantId": "t1"},
            "encryption": {"status": "Enabled", "keyVaultProperties": {
                "keyVaultArmId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
                "keyIdentifier": "https://kv.vault.azure.net/keys/k/v1"}},
        });
        let found = hint(&row).expect("a hint");
        assert_eq!(found.id, id);
        assert_eq!(
            found.cmk_principal().map(|p| p.principal_id),
            Some("p1".into())
        );
        assert_eq!(
            found.encryption.and_then(|e| e.key_identifier),
            Some("https://kv.vault.azure.net/keys/k/v1".into())
        );
        assert!(hint(&json!({"id": id, "identity": null, "encryption": null})).is_none());
        assert!(hint(&json!({"id": id})).is_none());
    }

    #[test]
    fn maps_each_kind_of_target() {
        let vault = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
        );
        let ws = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
        );
        assert_eq!(
            lookup(&arm(&ws, ResourceKind::Workspace)),
            Lookup::Workspaces(vec![ArmResourceId::parse(&ws).unwrap()])
        );
        assert_eq!(
            lookup(&arm(
                &format!("{ws}/onlineEndpoints/ep"),
                ResourceKind::OnlineEndpoint
            )),
            Lookup::Workspaces(vec![ArmResourceId::parse(&ws).unwrap()])
        );
        assert_eq!(
            lookup(&arm(&format!("{vault}/keys/k"), ResourceKind::VaultKey)),
            Lookup::ByVault(ArmResourceId::parse(&vault).unwrap())
        );
        assert_eq!(
            lookup(&arm(
                &format!("{vault}/providers/Microsoft.Authorization/roleAssignments/a1"),
                ResourceKind::RoleAssignment
            )),
            Lookup::ByVault(ArmResourceId::parse(&vault).unwrap())
        );
        assert_eq!(
            lookup(&arm(
                &format!(
                    "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/a1"
                ),
                ResourceKind::RoleAssignment
            )),
            Lookup::UnderScope(
                ArmResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg")).unwrap()
            )
        );
        assert_eq!(
            lookup(&arm(
                &format!(
                    "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws1_x/providers/Microsoft.Storage/storageAccounts/st"
                ),
                ResourceKind::ManagedResourceGroupMember
            )),
            Lookup::ByManagedGroup(
                SubscriptionId::parse(SUB).unwrap(),
                "azureml-rg-ws1_x".into()
            )
        );
        // The group itself, learned or by its prefix, as intake classifies it.
        for group in ["azureml-rg-ws1_x", "Contoso-ML-Managed"] {
            assert_eq!(
                lookup(&arm(
                    &format!("/subscriptions/{SUB}/resourceGroups/{group}"),
                    ResourceKind::ManagedResourceGroupMember
                )),
                Lookup::ByManagedGroup(SubscriptionId::parse(SUB).unwrap(), group.into())
            );
        }
        assert_eq!(
            lookup(&arm(
                &format!("/subscriptions/{SUB}/resourceGroups/rg"),
                ResourceKind::ResourceGroup
            )),
            Lookup::UnderScope(
                ArmResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg")).unwrap()
            )
        );
        assert_eq!(
            lookup(&arm(
                &format!(
                    "/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/westus/deletedVaults/KV1"
                ),
                ResourceKind::DeletedVault
            )),
            Lookup::ByVaultName(SubscriptionId::parse(SUB).unwrap(), "KV1".into())
        );
        assert_eq!(
            lookup(&arm(
                &format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault"),
                ResourceKind::ProviderRegistration
            )),
            Lookup::Subscription(SubscriptionId::parse(SUB).unwrap())
        );
    }

    #[test]
    fn queries_quote_their_values() {
        assert_eq!(kql_string(r"a'b\c"), r"'a\'b\\c'");
        let query = kql(&Lookup::ByVault(
            ArmResourceId::parse(&format!(
                "/subscriptions/{SUB}/resourceGroups/R(G)/providers/Microsoft.KeyVault/vaults/KV1"
            ))
            .unwrap(),
        ));
        assert!(query.contains(r"vault == '/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourcegroups/r(g)/providers/microsoft.keyvault/vaults/kv1'"), "{query}");
    }

    /// Intake carries the fact that a group is a learned service-provisioned one: a write or
    /// delete of the group itself maps to its workspace, not to what lies under the group.
    #[test]
    fn a_learned_managed_group_itself_resolves_to_its_workspace() {
        use crate::intake::{Classified, IntakeSettings, RawEvent, classify};
        let settings = IntakeSettings {
            subscriptions: crate::ids::Allowlist::listed(Some(vec![
                SubscriptionId::parse(SUB).unwrap(),
            ])),
            keyvault_dns_suffix: "vault.azure.net".into(),
            managed_groups: crate::ids::ManagedGroups::default(),
        };
        settings.managed_groups.learn("Contoso-ML-Managed");
        let lookup_of = |verb: &str, group: &str| {
            let uri = format!("/subscriptions/{SUB}/resourceGroups/{group}");
            let event = RawEvent::from_binding(json!({
                "id": "e1", "topic": format!("/subscriptions/{SUB}"), "subject": uri,
                "eventType": format!("Microsoft.Resources.Resource{verb}Success"), "eventTime": "2026-11-28T09:20:13Z",
                "data": {"operationName": format!("Microsoft.Resources/subscriptions/resourceGroups/{}", verb.to_ascii_lowercase()),
                         "resourceUri": uri, "subscriptionId": SUB},
                "dataVersion": "2", "metadataVersion": "1"
            }))
            .unwrap();
            match classify(&event, &settings) {
                Ok(Classified::Relevant(trigger)) => lookup(&trigger.target),
                other => panic!("expected relevant, got {other:?}"),
            }
        };
        let sub = || SubscriptionId::parse(SUB).unwrap();
        for verb in ["Delete", "Write"] {
            assert_eq!(
                lookup_of(verb, "CONTOSO-ML-MANAGED"),
                Lookup::ByManagedGroup(sub(), "CONTOSO-ML-MANAGED".into())
            );
            assert_eq!(
                lookup_of(verb, "azureml-rg-ws1_x"),
                Lookup::ByManagedGroup(sub(), "azureml-rg-ws1_x".into())
            );
            // Any other group is still looked inside.
            assert_eq!(
                lookup_of(verb, "contoso-ml-managed-2"),
                Lookup::UnderScope(
                    ArmResourceId::parse(&format!(
                        "/subscriptions/{SUB}/resourceGroups/contoso-ml-managed-2"
                    ))
                    .unwrap()
                )
            );
        }
    }

    #[test]
    fn a_managed_group_matches_only_in_its_own_subscription() {
        let query = kql(&Lookup::ByManagedGroup(
            SubscriptionId::parse(SUB).unwrap(),
            "Contoso-ML-Managed".into(),
        ));
        assert!(
            query.contains(&format!(
                "subscriptionId =~ '{SUB}' and (tolower(tostring(properties.serviceProvisionedResourceGroup)) == 'contoso-ml-managed' or "
            )),
            "{query}"
        );
        assert!(
            query.contains("endswith '/resourcegroups/contoso-ml-managed')"),
            "{query}"
        );
    }

    #[test]
    fn results_are_limited_to_the_allowlist_and_deduplicated() {
        let a = ArmResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/a")).unwrap();
        let b = ArmResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/b").unwrap();
        let allowed = [SubscriptionId::parse(SUB).unwrap()];
        let ids = |found: Vec<Found>| found.into_iter().map(|f| f.id).collect::<Vec<_>>();
        let found = |ids: &[&ArmResourceId]| {
            ids.iter()
                .map(|id| Found::without_hint((*id).clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(in_scope(found(&[&a, &b, &a]), Some(&allowed))),
            vec![a.clone()]
        );
        assert_eq!(ids(in_scope(found(&[&a, &b]), None)), vec![a, b]);
    }
}
