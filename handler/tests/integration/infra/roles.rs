//! Least privilege in infra/: the custom roles hold exactly the actions listed here, the
//! write rights exist only in remediate mode with their consent, no broad built-in role is
//! assigned anywhere, and no list of vaults remains (the sweep finds and wires the vaults).

use std::fs;

use super::{
    AUDIT_ACCESS_TEMPLATE, MAIN_TEMPLATE, SUBSCRIPTION_TEMPLATE, files_under, literal_items, read,
    unquote,
};

/// The role that lets cmk-guard send email through Azure Communication Services.
const EMAIL_ACCESS_TEMPLATE: &str = "infra/modules/email-access.bicep";

/// What each custom role may do, exactly (least privilege). A change here is a change of the
/// rights cmk-guard asks for: docs/deploy.md's role table says why each one is needed.
const ROLE_ACTIONS: &[(&str, &str, &[&str])] = &[
    (
        MAIN_TEMPLATE,
        "selfWiringActions",
        &[
            "Microsoft.EventGrid/systemTopics/read",
            "Microsoft.EventGrid/systemTopics/write",
            "Microsoft.EventGrid/systemTopics/eventSubscriptions/read",
            "Microsoft.EventGrid/systemTopics/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.Insights/diagnosticSettings/read",
            "Microsoft.Insights/diagnosticSettings/write",
        ],
    ),
    (
        AUDIT_ACCESS_TEMPLATE,
        "ruleKeyActions",
        &["Microsoft.EventHub/namespaces/authorizationRules/listkeys/action"],
    ),
    (
        AUDIT_ACCESS_TEMPLATE,
        "functionSubscriberActions",
        &[
            "Microsoft.Web/sites/functions/read",
            "Microsoft.Web/sites/functions/write",
        ],
    ),
    (
        SUBSCRIPTION_TEMPLATE,
        "keyRotationDataActions",
        &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/rotate/action",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
        ],
    ),
    (
        EMAIL_ACCESS_TEMPLATE,
        "emailSendActions",
        &[
            "Microsoft.Communication/CommunicationServices/Read",
            "Microsoft.Communication/CommunicationServices/Write",
            "Microsoft.Communication/EmailServices/write",
        ],
    ),
];

/// Built-in roles far wider than anything cmk-guard does; none may be assigned by infra/.
const BROAD_BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    (
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
    ),
    (
        "1e241071-0855-49ea-94dc-649edcd759de",
        "EventGrid Contributor",
    ),
    (
        "428e0ff0-5e57-4d9c-a221-2c70d0e0a443",
        "EventGrid EventSubscription Contributor",
    ),
    (
        "749f88d5-cbae-40b8-bcfc-e573ddc772fa",
        "Monitoring Contributor",
    ),
    (
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Key Vault Administrator",
    ),
    (
        "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        "Key Vault Crypto Officer",
    ),
    (
        "f25e0fa2-a7c8-4377-a976-54943a77a395",
        "Key Vault Contributor",
    ),
    (
        "f526a384-b230-433a-b45c-95f59c4a2dec",
        "Azure Event Hubs Data Owner",
    ),
    (
        "de139f84-1756-47ae-9be6-808fbbe84772",
        "Website Contributor",
    ),
];

#[test]
fn custom_roles_hold_exactly_the_listed_actions() {
    for (template, name, expected) in ROLE_ACTIONS {
        let text = read(template);
        let actions: Vec<String> = literal_items(&text, name, '[')
            .iter()
            .map(|item| unquote(item))
            .collect();
        assert_eq!(
            actions, *expected,
            "{template}: `{name}` differs from the rights cmk-guard asks for"
        );
    }
    // Each list is what its role grants, and no role grants anything else.
    let main = read(MAIN_TEMPLATE);
    assert!(main.contains("wiringActions: grantWiring ? selfWiringActions : []\n"));
    let subscription = read(SUBSCRIPTION_TEMPLATE);
    assert!(subscription.contains("actions: wiringActions\n"));
    assert!(subscription.contains("dataActions: keyRotationDataActions\n"));
    let access = read(AUDIT_ACCESS_TEMPLATE);
    assert!(access.contains("actions: ruleKeyActions\n"));
    assert!(access.contains("actions: functionSubscriberActions\n"));
    assert!(read(EMAIL_ACCESS_TEMPLATE).contains("actions: emailSendActions\n"));
    for path in files_under("infra") {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for line in text.lines() {
            let quoted = line.trim().trim_matches('\'');
            assert!(
                !(quoted.starts_with("Microsoft.") && quoted.contains('*')),
                "{}: `{quoted}` is a wildcard action",
                path.display()
            );
        }
        for (id, role) in BROAD_BUILT_IN_ROLES {
            assert!(
                !text.contains(id),
                "{}: assigns {role}, far more than cmk-guard needs",
                path.display()
            );
        }
    }
}

#[test]
fn write_rights_need_remediate_mode_and_their_consent() {
    let main = read(MAIN_TEMPLATE);
    for line in [
        "var remediate = mode == 'remediate'\n",
        "var grantWiring = remediate && consent.eventsWiring\n",
        "var grantKeyRotation = remediate && consent.keyRotation\n",
        "var grantKeyAccess = remediate && consent.keyAccessRbac\n",
        "    grantWiring: grantWiring\n",
    ] {
        assert!(
            main.contains(line),
            "{MAIN_TEMPLATE}: `{}` is gone",
            line.trim()
        );
    }
    let defaults = main
        .split_once("var consent = union({\n")
        .and_then(|(_, rest)| rest.split_once("}, remediations)\n"))
        .map(|(defaults, _)| defaults.lines().map(str::trim).collect::<Vec<_>>())
        .unwrap_or_else(|| {
            panic!("{MAIN_TEMPLATE}: `var consent = union({{…}}, remediations)` not found")
        });
    for consent in [
        "purgeProtection",
        "keyAccessPolicy",
        "keyAccessRbac",
        "keyExpiry",
        "keyRotation",
        "providers",
        "eventsWiring",
    ] {
        assert!(
            defaults.contains(&format!("{consent}: false").as_str()),
            "{MAIN_TEMPLATE}: the consent `{consent}` must default to false"
        );
    }
    // Every custom role and its assignment is conditional: nothing writes by default.
    for template in [SUBSCRIPTION_TEMPLATE, AUDIT_ACCESS_TEMPLATE] {
        let text = read(template);
        for block in text.split("\nresource ").skip(1) {
            let head = block.lines().next().unwrap_or_default();
            let custom = head.contains("'Microsoft.Authorization/roleDefinitions@")
                || (head.contains("'Microsoft.Authorization/roleAssignments@")
                    && !block.contains("readerRoleId")
                    && !block.contains("eventHubsDataReceiverRoleId"));
            assert!(
                !custom || head.contains("= if ("),
                "{template}: `{head}` is granted unconditionally"
            );
        }
    }
}

#[test]
fn email_rights_are_on_the_communication_services_resource_only() {
    let main = read(MAIN_TEMPLATE);
    for line in [
        "param acsResourceId string = ''\n",
        "module emailAccess 'modules/email-access.bicep' = if (!empty(acsResourceId)) {\n",
        "  scope: resourceGroup(split(acsResourceId, '/')[2], split(acsResourceId, '/')[4])\n",
        "    communicationServiceName: last(split(acsResourceId, '/'))\n",
    ] {
        assert!(
            main.contains(line),
            "{MAIN_TEMPLATE}: `{}` is gone",
            line.trim()
        );
    }
    let access = read(EMAIL_ACCESS_TEMPLATE);
    let assignment = access
        .split("\nresource ")
        .find(|block| block.starts_with("emailSenderAssignment "))
        .unwrap_or_else(|| panic!("{EMAIL_ACCESS_TEMPLATE}: `emailSenderAssignment` not found"));
    assert!(
        assignment.contains("  scope: communicationService\n"),
        "{EMAIL_ACCESS_TEMPLATE}: the email role must be assigned on the resource, not its group"
    );
    let parameters: serde_json::Value = serde_json::from_str(&read("infra/main.parameters.json"))
        .unwrap_or_else(|e| panic!("infra/main.parameters.json: {e}"));
    assert_eq!(
        parameters["parameters"]["acsResourceId"]["value"], "${CMK_GUARD_ACS_RESOURCE_ID}",
        "infra/main.parameters.json: acsResourceId comes from the azd environment"
    );
}

#[test]
fn no_list_of_vaults_remains() {
    let main = read(MAIN_TEMPLATE);
    for line in main.lines().filter(|line| line.starts_with("param ")) {
        let name = line["param ".len()..].split(' ').next().unwrap_or_default();
        assert!(
            !name.to_ascii_lowercase().contains("vault") || name == "alertSecretsVaultId",
            "{MAIN_TEMPLATE}: `{name}` lists vaults; the sweep finds and wires them itself"
        );
    }
    let parameters: serde_json::Value = serde_json::from_str(&read("infra/main.parameters.json"))
        .unwrap_or_else(|e| panic!("infra/main.parameters.json: {e}"));
    assert!(
        parameters["parameters"].get("keyVaults").is_none(),
        "infra/main.parameters.json still sets keyVaults"
    );
    for path in files_under("infra") {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for leftover in [
            "Microsoft.KeyVault.vaults",
            "KEY_VAULT_TOPICS",
            "keyVaultTopics",
        ] {
            assert!(
                !text.contains(leftover),
                "{}: `{leftover}` belongs to the removed vault list",
                path.display()
            );
        }
    }
}
