//! The simulator's responses have the field sets of the official examples in
//! `tests/fixtures`, compared recursively, so drift on either side is caught. Differences are
//! listed explicitly with the reason each is allowed.

use crate::helpers::{TestSim, spawn};
use azure_sim::scenario::{
    DEFAULT_KEY, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT, DEFAULT_WORKSPACE,
};
use azure_sim::{KeyVersionSpec, Tenant, UserAssignedSpec, ids};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn fixture(path: &str) -> Value {
    let file = fixtures_dir().join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("fixture {} missing: {e}", file.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn response(path: &str, status: &str) -> Value {
    fixture(path)["responses"][status]["body"].clone()
}

/// Paths of every key, arrays as `[]`; below a path listed in `maps` keys are wildcards (`*`).
fn key_paths(v: &Value, prefix: &str, maps: &[&str], out: &mut BTreeSet<String>) {
    match v {
        Value::Object(obj) => {
            let is_map = maps.iter().any(|m| prefix.ends_with(m));
            for (k, child) in obj {
                let name = if is_map { "*" } else { k.as_str() };
                let path = if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}.{name}")
                };
                out.insert(path.clone());
                key_paths(child, &path, maps, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), maps, out);
            }
        }
        _ => {}
    }
}

const MAPS: &[&str] = &[
    "tags",
    "userAssignedIdentities",
    "outboundRules",
    "traffic",
    "properties.properties",
    "claims",
];

/// Asserts the sim's key paths equal the fixture's, except the listed, justified differences.
fn assert_same_shape(
    name: &str,
    sim: &Value,
    fixture: &Value,
    sim_only: &[&str],
    fixture_only: &[&str],
) {
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    key_paths(sim, "", MAPS, &mut a);
    key_paths(fixture, "", MAPS, &mut b);
    let allowed = |p: &String, list: &[&str]| {
        list.iter()
            .any(|x| p == x || p.starts_with(&format!("{x}.")) || p.starts_with(&format!("{x}[")))
    };
    let extra: Vec<&String> = a.difference(&b).filter(|p| !allowed(p, sim_only)).collect();
    let missing: Vec<&String> = b
        .difference(&a)
        .filter(|p| !allowed(p, fixture_only))
        .collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{name}: fields only in sim {extra:?}; only in fixture {missing:?}"
    );
}

const SYSTEM_DATA: &str = "systemData";

fn tenant() -> Tenant {
    let uai = UserAssignedSpec::new(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, "id-ws-cmk");
    Tenant::compliant_builder()
        .with_vault(DEFAULT_VAULT, |v| {
            v.rbac = Some(false);
            v.access_policies
                .push(azure_sim::scenario::AccessPolicySpec {
                    object_id: "44444444-4444-4444-8444-444444444444".into(),
                    keys: vec!["get".into()],
                    secrets: vec!["get".into()],
                    certificates: vec!["get".into()],
                    ..Default::default()
                });
        })
        .with_key(DEFAULT_VAULT, DEFAULT_KEY, |k| {
            k.older_versions.push(KeyVersionSpec::default());
            k.tags.insert("purpose".into(), json!("cmk"));
        })
        .with_workspace(DEFAULT_WORKSPACE, move |w| {
            w.online_endpoints.push("ep".into());
            w.batch_endpoints.push("batch".into());
            w.user_assigned.push(uai.clone());
            if let Some(c) = w.cmk.as_mut() {
                c.encryption_identity = Some(uai.resource_id.clone());
            }
        })
        .build()
        .unwrap()
}

async fn arm(t: &TestSim, path: &str) -> Value {
    let r = t.arm_get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

#[tokio::test]
async fn arm_responses_match_the_official_examples() {
    let t = spawn(tenant()).await;
    let vault = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT);
    let v = "api-version=2026-02-01";
    let flags = [
        "properties.enableSoftDelete",
        "properties.softDeleteRetentionInDays",
        "properties.enableRbacAuthorization",
        "properties.enablePurgeProtection",
    ];
    assert_same_shape(
        "Vaults_Get",
        &arm(&t, &format!("{vault}?{v}")).await,
        &response("arm/keyvault-vaults-get.json", "200"),
        &flags,
        &["properties.hsmPoolResourceId"],
    );

    let key = format!("{vault}/keys/{DEFAULT_KEY}");
    let key_extra = [
        "properties.attributes.exp",
        "properties.attributes.exportable",
        "properties.rotationPolicy",
        "tags",
    ];
    assert_same_shape(
        "Keys_Get",
        &arm(&t, &format!("{key}?{v}")).await,
        &response("arm/keyvault-vaults-keys-get.json", "200"),
        &key_extra,
        &[],
    );
    let versions = arm(&t, &format!("{key}/versions?{v}")).await;
    assert_same_shape(
        "Keys_ListVersions",
        &versions,
        &response("arm/keyvault-vaults-keys-listversions.json", "200"),
        &[
            "value[].properties.attributes.exp",
            "value[].properties.attributes.exportable",
            "value[].tags",
        ],
        &[],
    );
    let first = versions["value"][0]["name"].as_str().unwrap().to_owned();
    assert_same_shape(
        "Keys_GetVersion",
        &arm(&t, &format!("{key}/versions/{first}?{v}")).await,
        &response("arm/keyvault-vaults-keys-getversion.json", "200"),
        &key_extra,
        &[],
    );

    let tenant_id = t.sim.info().tenant_id.clone();
    let add = json!({"properties": {"accessPolicies": [{"tenantId": tenant_id, "objectId": "55555555-5555-4555-8555-555555555555", "permissions": {"keys": ["get"], "secrets": ["get"], "certificates": ["get"]}}]}});
    let r = t
        .arm(
            Method::PUT,
            &format!("{vault}/accessPolicies/add?{v}"),
            Some(add),
        )
        .await;
    assert_same_shape(
        "Vaults_UpdateAccessPolicy",
        &r.body,
        &response("arm/keyvault-vaults-accesspolicies-update.json", "200"),
        &[],
        &[],
    );

    let ws = ids::workspace_id(
        DEFAULT_SUBSCRIPTION,
        DEFAULT_RESOURCE_GROUP,
        DEFAULT_WORKSPACE,
    );
    let m = "api-version=2026-09-01";
    assert_same_shape(
        "Workspaces_Get",
        &arm(&t, &format!("{ws}?{m}")).await,
        &response("arm/machinelearningservices-workspaces-get.json", "200"),
        // ARM envelope fields present on real responses; read-only properties in the spec.
        &[
            "kind",
            "sku",
            "tags",
            SYSTEM_DATA,
            "properties.provisioningState",
            "properties.tenantId",
            "properties.workspaceId",
        ],
        // Features the simulator does not model (managed network, private link, image build).
        &[
            "properties.imageBuildCompute",
            "properties.managedNetwork",
            "properties.privateEndpointConnections",
            "properties.sharedPrivateLinkResources",
        ],
    );
    assert_same_shape(
        "OnlineEndpoints_List",
        &arm(&t, &format!("{ws}/onlineEndpoints?{m}")).await,
        &response(
            "arm/machinelearningservices-onlineendpoints-list.json",
            "200",
        ),
        &[],
        // Single page; endpoints use a system identity; sku and compute are not modelled.
        &[
            "nextLink",
            "value[].identity.userAssignedIdentities",
            "value[].sku",
            "value[].properties.compute",
        ],
    );
    assert_same_shape(
        "BatchEndpoints_Get",
        &arm(&t, &format!("{ws}/batchEndpoints/batch?{m}")).await,
        &response("arm/machinelearningservices-batchendpoints-get.json", "200"),
        &["properties.provisioningState"],
        &["identity.userAssignedIdentities", "sku"],
    );

    let scope = format!("/subscriptions/{DEFAULT_SUBSCRIPTION}");
    assert_same_shape(
        "RoleAssignments_ListForScope",
        &arm(&t, &format!("{scope}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter=atScope()")).await,
        &response("arm/authorization-roleassignments-listforscope.json", "200"),
        // 2022-04-01 fields the example leaves out.
        &[
            "value[].properties.condition",
            "value[].properties.conditionVersion",
            "value[].properties.createdOn",
            "value[].properties.updatedOn",
            "value[].properties.createdBy",
            "value[].properties.updatedBy",
            "value[].properties.delegatedManagedIdentityResourceId",
            "value[].properties.description",
        ],
        &[],
    );

    let query = json!({"subscriptions": [DEFAULT_SUBSCRIPTION], "query": "Resources | project id, name, type, location", "options": {"$top": 1}});
    let graph = t
        .arm(
            Method::POST,
            "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01",
            Some(query),
        )
        .await;
    assert_same_shape(
        "Resources",
        &graph.body,
        &response("arm/resourcegraph-resources-firstpage.json", "200"),
        &[],
        &[],
    );
    t.stop().await;
}

#[tokio::test]
async fn key_vault_responses_match_the_official_examples() {
    let t = spawn(tenant()).await;
    let a = "api-version=2025-07-01";
    let attrs = [
        "attributes.exp",
        "attributes.recoverableDays",
        "attributes.exportable",
    ];
    let get = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}?{a}"),
            None,
        )
        .await;
    assert_same_shape(
        "GetKey",
        &get.body,
        &response("keyvault/keys-get.json", "200"),
        &attrs,
        &[],
    );
    let update = t
        .kv(
            Method::PATCH,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}?{a}"),
            Some(json!({"attributes": {"nbf": 631180800, "exp": 662716800}})),
        )
        .await;
    assert_same_shape(
        "UpdateKey",
        &update.body,
        &response("keyvault/keys-update.json", "200"),
        &[
            "attributes.recoverableDays",
            "attributes.exportable",
            "tags",
        ],
        &[],
    );
    let rotate = t
        .kv(
            Method::POST,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotate?{a}"),
            None,
        )
        .await;
    assert_same_shape(
        "RotateKey",
        &rotate.body,
        &response("keyvault/keys-rotate.json", "200"),
        &attrs,
        &[],
    );
    let versions = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/versions?{a}&maxresults=1"),
            None,
        )
        .await;
    assert_same_shape(
        "GetKeyVersions",
        &versions.body,
        &response("keyvault/keys-list-versions.json", "200"),
        &[
            "value[].attributes.exp",
            "value[].attributes.recoverableDays",
            "value[].attributes.exportable",
        ],
        &[],
    );
    let keys = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys?{a}&maxresults=1"),
            None,
        )
        .await;
    assert_same_shape(
        "GetKeys",
        &keys.body,
        &response("keyvault/keys-list.json", "200"),
        &[
            "value[].attributes.exp",
            "value[].attributes.recoverableDays",
            "value[].attributes.exportable",
            "value[].tags",
        ],
        &["nextLink"],
    );
    let request =
        fixture("keyvault/keys-rotationpolicy-update.json")["parameters"]["keyRotationPolicy"]
            .clone();
    let put = t
        .kv(
            Method::PUT,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotationpolicy?{a}"),
            Some(request),
        )
        .await;
    assert_same_shape(
        "UpdateKeyRotationPolicy",
        &put.body,
        &response("keyvault/keys-rotationpolicy-update.json", "200"),
        &[],
        &[],
    );
    let policy = t
        .kv(
            Method::GET,
            DEFAULT_VAULT,
            &format!("/keys/{DEFAULT_KEY}/rotationpolicy?{a}"),
            None,
        )
        .await;
    assert_same_shape(
        "GetKeyRotationPolicy",
        &policy.body,
        &response("keyvault/keys-rotationpolicy-get.json", "200"),
        &[],
        &[],
    );
    t.stop().await;
}

#[tokio::test]
async fn recorded_events_match_the_event_grid_examples() {
    let t = spawn(tenant()).await;
    let vault = ids::vault_id(DEFAULT_SUBSCRIPTION, DEFAULT_RESOURCE_GROUP, DEFAULT_VAULT);
    t.arm(
        Method::PATCH,
        &format!("{vault}?api-version=2026-02-01"),
        Some(json!({"tags": {"owner": "ml"}})),
    )
    .await;
    t.kv(
        Method::POST,
        DEFAULT_VAULT,
        &format!("/keys/{DEFAULT_KEY}/rotate?api-version=2025-07-01"),
        None,
    )
    .await;
    let events = t.sim.events();
    let write = events
        .iter()
        .find(|e| e["eventType"] == "Microsoft.Resources.ResourceWriteSuccess")
        .unwrap();
    assert_same_shape(
        "ResourceWriteSuccess",
        write,
        &fixture("events/eventgrid-schema/Microsoft.Resources.ResourceWriteSuccess.json"),
        // Role-assignment evidence fields that real events carry for service principals.
        &[
            "data.authorization.evidence.principalId",
            "data.authorization.evidence.principalType",
        ],
        &[],
    );
    let claims = &write["data"]["claims"];
    for claim in [
        "aud",
        "iss",
        "appid",
        "http://schemas.microsoft.com/identity/claims/objectidentifier",
        "http://schemas.microsoft.com/identity/claims/tenantid",
    ] {
        assert!(claims.get(claim).is_some(), "claims lack {claim}");
    }
    let created = events
        .iter()
        .find(|e| e["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated")
        .unwrap();
    assert_same_shape(
        "KeyNewVersionCreated",
        created,
        &fixture("events/eventgrid-schema/Microsoft.KeyVault.KeyNewVersionCreated.json"),
        &[],
        &[],
    );
    t.stop().await;
}
