//! Least privilege, proven against the code: the rights infra/ grants in `remediate` mode are
//! read out of the Bicep templates (each consent's actions), the app principal gets exactly
//! Reader and those rights as custom roles in azure-sim, and one sweep runs over a tenant with
//! every remediable drift. azure-sim records the RBAC action it checked for every request (the
//! ARM action, or the Key Vault data action), so the test asserts both ways: every
//! remediation is applied and no request is refused (nothing needed is missing), and every
//! granted write or data action is used by a request (nothing more is granted). With only some
//! consents, the rights shrink to theirs and the other remediations are not attempted.

use std::collections::BTreeSet;
use std::fs;

use azure_sim::model::RoleAssignment;
use azure_sim::roles::{self, CustomRole};
use azure_sim::{Grant, KeySpec, KeyVersionSpec, RecordFilter, Tenant, VaultSpec, VersionPin};
use azure_sim::{WorkspaceSpec, ids};
use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{Handler, repo_root, timer_envelope};
use serde_json::Value;

const SUB: &str = "6c1f3a2b-9d4e-4f5a-8b7c-2e1d0f9a8b7c";
/// A subscription where none of the providers a CMK chain needs is registered.
const PROVIDERS_SUB: &str = "0b9e8d7c-6f5a-4e3d-9c2b-1a0f9e8d7c6b";
const PROVIDERS: [&str; 5] = [
    "Microsoft.MachineLearningServices",
    "Microsoft.Storage",
    "Microsoft.KeyVault",
    "Microsoft.DocumentDB",
    "Microsoft.Search",
];
const RG: &str = "rg-least-privilege";
const FUNCTION: &str = "/subscriptions/6c1f3a2b-9d4e-4f5a-8b7c-2e1d0f9a8b7c/resourceGroups/rg-cmkguard/providers/Microsoft.Web/sites/cmkguard-app/functions/OnKeyVaultEvent";
const HUB_RULE: &str = "/subscriptions/6c1f3a2b-9d4e-4f5a-8b7c-2e1d0f9a8b7c/resourceGroups/rg-cmkguard/providers/Microsoft.EventHub/namespaces/cmkguard-ns/authorizationRules/cmk-guard-diagnostics";
const HUB: &str = "kv-audit";

/// The consents of infra/main.bicep, each with the remediation policy entry that uses it
/// (`eventsWiring` is self-wiring, `vault.events-wired`), and the rule it remediates.
const CONSENTS: &[(&str, &str, &str)] = &[
    (
        "purgeProtection",
        "[remediation.\"vault.purge-protection\"]\nenabled = true\nirreversible_ok = true\n",
        "vault.purge-protection",
    ),
    (
        "keyAccessPolicy",
        "[remediation.\"workspace.key-access\"]\nenabled = true\n",
        "workspace.key-access",
    ),
    (
        "keyAccessRbac",
        "[remediation.\"workspace.key-access\"]\nenabled = true\n",
        "workspace.key-access",
    ),
    (
        "keyExpiry",
        "[remediation.\"key.expiry\"]\nenabled = true\n",
        "key.expiry",
    ),
    (
        "keyRotation",
        "[remediation.\"key.rotation-policy\"]\nenabled = true\n[remediation.\"key.enabled\"]\nenabled = true\n",
        "key.rotation-policy",
    ),
    (
        "providers",
        "[remediation.\"subscription.providers\"]\nenabled = true\n",
        "subscription.providers",
    ),
    (
        "eventsWiring",
        "[remediation.\"vault.events-wired\"]\nenabled = true\n",
        "vault.events-wired",
    ),
];

/// Granted actions azure-sim cannot see used, each with the reason. Everything else granted
/// must be checked for at least one request of the sweep.
const CHECKED_ELSEWHERE: &[(&str, &str)] = &[(
    "Microsoft.Web/sites/functions/read",
    "Event Grid reads the AzureFunction destination to validate it; azure-sim checks the write only",
)];

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The quoted strings of `text` up to its first `]`.
fn quoted_until_bracket(text: &str, what: &str) -> Vec<String> {
    let (list, _) = text
        .split_once(']')
        .unwrap_or_else(|| panic!("{what}: no `]`"));
    list.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('\'') && l.ends_with('\''))
        .map(|l| l.trim_matches('\'').to_owned())
        .collect()
}

/// The literal list that follows `var <name> = [` in `text`.
fn var_list(text: &str, name: &str) -> Vec<String> {
    let head = format!("var {name} = [");
    let (_, rest) = text
        .split_once(&head)
        .unwrap_or_else(|| panic!("`{head}` not found"));
    quoted_until_bracket(rest, name)
}

/// The actions a consent adds in infra/: the ARM actions (`actions`) and the data actions
/// (`data`), read out of the templates as `azd provision` would deploy them.
#[derive(Debug, Default)]
struct Rights {
    actions: BTreeSet<String>,
    data: BTreeSet<String>,
}

fn granted_by(consent: &str) -> Rights {
    let main = read("infra/main.bicep");
    let subscription = read("infra/modules/subscription.bicep");
    let audit = read("infra/modules/audit-access.bicep");
    let mut rights = Rights::default();
    // `remediate && consent.<name> ? [ … ] : []` in subscriptionActions and vaultActions.
    let conditional = format!("remediate && consent.{consent} ? [");
    for (_, rest) in main
        .match_indices(&conditional)
        .map(|(i, _)| main.split_at(i))
    {
        let list = &rest[conditional.len()..];
        rights.actions.extend(quoted_until_bracket(list, consent));
    }
    match consent {
        "keyAccessRbac" => {
            assert!(main.contains("var grantKeyAccess = remediate && consent.keyAccessRbac\n"));
            let (_, block) = subscription
                .split_once("resource keyAccessGrants ")
                .expect("subscription.bicep: keyAccessGrants");
            let (_, rest) = block
                .split_once("actions: [")
                .expect("keyAccessGrants actions");
            rights
                .actions
                .extend(quoted_until_bracket(rest, "keyAccessGrants"));
        }
        "keyRotation" => {
            assert!(main.contains("var grantKeyRotation = remediate && consent.keyRotation\n"));
            assert!(subscription.contains("dataActions: keyRotationDataActions\n"));
            rights
                .data
                .extend(var_list(&subscription, "keyRotationDataActions"));
        }
        "eventsWiring" => {
            assert!(main.contains("wiringActions: grantWiring ? selfWiringActions : []\n"));
            rights.actions.extend(var_list(&main, "selfWiringActions"));
            rights.actions.extend(var_list(&audit, "ruleKeyActions"));
            rights
                .actions
                .extend(var_list(&audit, "functionSubscriberActions"));
        }
        _ => {}
    }
    rights
}

/// One CMK chain per drift, each on its own vault, and a subscription with no provider
/// registered.
fn tenant() -> Tenant {
    let ws = |name: &str| WorkspaceSpec::new(SUB, RG, &format!("ws-{name}"));
    let vault = |name: &str, spec: VaultSpec| VaultSpec {
        subscription: SUB.into(),
        resource_group: RG.into(),
        name: format!("kv-{name}"),
        ..spec
    };
    let rsa = || KeySpec::rsa("key", 3072);
    let wired = |spec: VaultSpec, name: &str| vault(name, spec).wired(FUNCTION, HUB_RULE, HUB);
    let chains = [
        (
            "purge",
            wired(VaultSpec::default().purge_protection(None), "purge"),
            rsa(),
        ),
        (
            "apaccess",
            wired(VaultSpec::default().access_policy_model(), "apaccess"),
            rsa(),
        ),
        ("rbac", wired(VaultSpec::default(), "rbac"), rsa()),
        (
            "norotation",
            wired(VaultSpec::default(), "norotation"),
            rsa().no_rotation_policy(),
        ),
        (
            "pinned",
            wired(VaultSpec::default(), "pinned"),
            rsa().older_version(KeyVersionSpec::expiring_in_days(3)),
        ),
        (
            "expiring",
            wired(VaultSpec::default(), "expiring"),
            rsa().expires_in_days(3),
        ),
        (
            "disabled",
            wired(VaultSpec::default(), "disabled"),
            rsa().disabled(),
        ),
        ("unwired", vault("unwired", VaultSpec::default()), rsa()),
    ];
    let mut builder = Tenant::builder().subscription(SUB).no_app_roles();
    for provider in PROVIDERS {
        builder = builder.unregistered_provider(PROVIDERS_SUB, provider);
    }
    let providers_vault = VaultSpec {
        subscription: PROVIDERS_SUB.into(),
        resource_group: RG.into(),
        name: "kv-providers".into(),
        ..VaultSpec::default()
    };
    builder = builder
        .vault(providers_vault.wired(FUNCTION, HUB_RULE, HUB).key(rsa()))
        .workspace(
            WorkspaceSpec::new(PROVIDERS_SUB, RG, "ws-providers").cmk("kv-providers", "key"),
        );
    for (name, vault, key) in chains {
        let workspace = ws(name).cmk(&format!("kv-{name}"), "key");
        let workspace = match name {
            "apaccess" => workspace
                .with_cmk(|c| c.grant_key_permissions = Some(vec!["get".into(), "wrapKey".into()])),
            "rbac" => workspace.with_cmk(|c| c.grant = Grant::None),
            "pinned" => workspace.with_cmk(|c| c.version = VersionPin::Named("oldest".into())),
            _ => workspace,
        };
        builder = builder.vault(vault.key(key)).workspace(workspace);
    }
    builder.build().expect("tenant")
}

/// Gives the app principal Reader on each subscription and `rights` as one custom role there,
/// exactly as infra/modules/subscription.bicep assigns them (at the subscription).
fn grant(tenant: &mut Tenant, rights: &Rights) {
    let app = tenant
        .app
        .principal_id
        .clone()
        .expect("the app has an identity");
    let role = CustomRole {
        guid: ids::stable_uuid("role:least-privilege"),
        role_name: "cmk-guard rights from infra/".into(),
        actions: rights.actions.iter().cloned().collect(),
        data_actions: rights.data.iter().cloned().collect(),
    };
    for subscription in [SUB, PROVIDERS_SUB] {
        let scope = format!("/subscriptions/{subscription}");
        for guid in [roles::READER, role.guid.as_str()] {
            tenant.role_assignments.push(RoleAssignment {
                name: ids::stable_uuid(&format!("assignment:{scope}:{guid}")),
                scope: scope.clone(),
                role_definition_guid: guid.to_owned(),
                principal_id: app.clone(),
                principal_type: "ServicePrincipal".into(),
                condition: None,
                created: 0,
                created_by: app.clone(),
            });
        }
    }
    tenant.custom_roles.push(role);
}

/// What one remediate-mode sweep did with `consents`.
struct Swept {
    rights: Rights,
    outcome: Value,
    /// (status, checked actions, method path) of every request the app made.
    requests: Vec<(u16, Vec<String>, String)>,
}

async fn sweep_with(consents: &[&str]) -> Swept {
    let mut rights = Rights::default();
    let mut policy = String::new();
    for (consent, entry, _) in CONSENTS.iter().filter(|(c, ..)| consents.contains(c)) {
        let granted = granted_by(consent);
        rights.actions.extend(granted.actions);
        rights.data.extend(granted.data);
        if !policy.contains(entry.lines().next().unwrap_or_default()) {
            policy.push_str(entry);
        }
    }
    let mut tenant = tenant();
    grant(&mut tenant, &rights);
    let app = tenant.app.principal_id.clone().unwrap_or_default();
    let scratch = Scratch::new("least-privilege");
    let policy = scratch.write("policy.toml", &policy).display().to_string();
    let handler = Handler::start_with(
        tenant,
        &[
            ("CMKGUARD_MODE", "remediate"),
            ("CMKGUARD_POLICY_FILE", &policy),
            ("CMKGUARD_KEYVAULT_EVENTS_TARGET", FUNCTION),
            ("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", HUB_RULE),
            ("CMKGUARD_AUDIT_EVENTHUB_NAME", HUB),
        ],
    )
    .await;
    let reply = handler.invoke("Sweep", timer_envelope("timer")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let requests = handler
        .sim
        .requests(&RecordFilter::default())
        .into_iter()
        .filter(|r| r.caller.as_deref() == Some(app.as_str()))
        .map(|r| (r.status, r.actions, format!("{} {}", r.method, r.path)))
        .collect();
    Swept {
        rights,
        outcome: reply.outcome().clone(),
        requests,
    }
}

/// The rules whose remediation the sweep applied, and every other remediation result but a
/// skip of a rule applied elsewhere (a subscription's provider is registered once, for the
/// first of its workspaces; the others find it registered).
fn remediations(outcome: &Value) -> (BTreeSet<String>, Vec<String>) {
    let acted: Vec<&Value> = outcome["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "remediate")
        .collect();
    let applied: BTreeSet<String> = acted
        .iter()
        .filter(|a| a["result"] == "applied")
        .filter_map(|a| a["rule"].as_str().map(str::to_owned))
        .collect();
    let other = acted
        .iter()
        .filter(|a| a["result"] != "applied")
        .filter(|a| {
            a["result"] != "skipped" || !applied.contains(a["rule"].as_str().unwrap_or_default())
        })
        .map(|a| a.to_string())
        .collect();
    (applied, other)
}

#[tokio::test]
async fn the_rights_infra_grants_are_exactly_what_a_remediating_sweep_uses() {
    let all: Vec<&str> = CONSENTS.iter().map(|(c, ..)| *c).collect();
    let swept = sweep_with(&all).await;

    // Nothing needed is missing: no request refused, every remediation applied.
    let refused: Vec<&(u16, Vec<String>, String)> =
        swept.requests.iter().filter(|r| r.0 == 403).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let (applied, other) = remediations(&swept.outcome);
    assert!(other.is_empty(), "not applied: {other:#?}");
    let expected: BTreeSet<String> = CONSENTS
        .iter()
        .map(|(.., rule)| (*rule).to_owned())
        .chain(["key.enabled".to_owned()])
        .collect();
    assert_eq!(applied, expected, "{}", swept.outcome);

    // Nothing more is granted: every granted write and data action was checked for a request
    // (or is listed, with its reason, as checked where azure-sim does not look).
    let used: BTreeSet<String> = swept
        .requests
        .iter()
        .flat_map(|r| r.1.iter().map(|a| a.to_ascii_lowercase()))
        .collect();
    let unused: Vec<&String> = swept
        .rights
        .actions
        .iter()
        .chain(&swept.rights.data)
        .filter(|a| !used.contains(&a.to_ascii_lowercase()))
        .filter(|a| !CHECKED_ELSEWHERE.iter().any(|(e, _)| e == a))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
    // The exceptions are all granted and all unseen by azure-sim: none of them is stale.
    for (action, why) in CHECKED_ELSEWHERE {
        assert!(
            swept.rights.actions.contains(*action),
            "`{action}` ({why}) is no longer granted: drop it from CHECKED_ELSEWHERE"
        );
        assert!(
            !used.contains(&action.to_ascii_lowercase()),
            "`{action}` is checked by azure-sim now: drop it from CHECKED_ELSEWHERE"
        );
    }
}

#[tokio::test]
async fn without_a_consent_its_rights_are_not_granted_and_its_remediation_not_attempted() {
    let swept = sweep_with(&["purgeProtection", "providers"]).await;
    let expected: BTreeSet<&str> = [
        "Microsoft.KeyVault/vaults/write",
        "Microsoft.MachineLearningServices/register/action",
        "Microsoft.Storage/register/action",
        "Microsoft.KeyVault/register/action",
        "Microsoft.DocumentDB/register/action",
        "Microsoft.Search/register/action",
    ]
    .into_iter()
    .collect();
    assert_eq!(
        swept
            .rights
            .actions
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        expected
    );
    assert!(swept.rights.data.is_empty(), "{:?}", swept.rights.data);
    let (applied, other) = remediations(&swept.outcome);
    assert_eq!(
        applied,
        ["subscription.providers", "vault.purge-protection"]
            .map(str::to_owned)
            .into(),
        "{other:#?}"
    );
    // The only writes: the two remediations consented to (the other drifts stay reported).
    let writes: BTreeSet<&str> = swept
        .requests
        .iter()
        .filter(|r| !r.2.starts_with("GET ") && r.1.iter().any(|a| !a.ends_with("/read")))
        .map(|r| r.2.as_str())
        .collect();
    let mut expected: BTreeSet<String> = PROVIDERS
        .iter()
        .map(|p| format!("POST /subscriptions/{PROVIDERS_SUB}/providers/{p}/register"))
        .collect();
    expected.insert(format!(
        "PATCH /subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv-purge"
    ));
    assert_eq!(
        writes,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let refused: Vec<&(u16, Vec<String>, String)> =
        swept.requests.iter().filter(|r| r.0 == 403).collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

#[tokio::test]
async fn each_consent_needs_no_right_of_another_but_the_documented_pairs() {
    // docs/deploy.md, "From alert to remediate": `key.expiry` rotates with `keyRotation`'s data
    // actions, and one policy entry (`workspace.key-access`) covers both kinds of vault.
    let groups: &[&[&str]] = &[
        &["purgeProtection"],
        &["keyAccessPolicy", "keyAccessRbac"],
        &["keyExpiry", "keyRotation"],
        &["keyRotation"],
        &["providers"],
        &["eventsWiring"],
    ];
    for group in groups {
        let swept = sweep_with(group).await;
        let refused: Vec<&(u16, Vec<String>, String)> =
            swept.requests.iter().filter(|r| r.0 == 403).collect();
        assert!(refused.is_empty(), "{group:?}: refused: {refused:#?}");
        let (applied, other) = remediations(&swept.outcome);
        assert!(other.is_empty(), "{group:?}: not applied: {other:#?}");
        let mut expected: BTreeSet<String> = CONSENTS
            .iter()
            .filter(|(c, ..)| group.contains(c))
            .map(|(.., rule)| (*rule).to_owned())
            .collect();
        if group.contains(&"keyRotation") {
            expected.insert("key.enabled".to_owned());
        }
        assert_eq!(applied, expected, "{group:?}");
    }
}
