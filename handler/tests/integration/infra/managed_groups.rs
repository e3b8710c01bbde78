//! Service-provisioned resource groups of any name in infra/: each name in
//! `managedResourceGroups` (main.bicep, its output, the postdeploy hook, events.bicep,
//! subscription-events.bicep) gets one event subscription, delivered and retried like the
//! prefix one, whose subject filter lets through exactly what intake treats as relevant in that
//! group; by default there is none.

use cmk_guard::ids::{Allowlist, ManagedGroups, SubscriptionId};
use cmk_guard::intake::{Classified, IntakeSettings, RELEVANT_OPERATIONS, RawEvent, classify};
use serde_json::json;

use super::{MAIN_TEMPLATE, SUBSCRIPTION_EVENTS_TEMPLATE, read};

const EVENTS_TEMPLATE: &str = "infra/events.bicep";
const PARAMETERS_FILE: &str = "infra/main.parameters.json";
const POSTDEPLOY_HOOK: &str = "infra/hooks/postdeploy.sh";

/// The symbols of the two subject-filtered event subscriptions in subscription-events.bicep.
const PREFIX_SUBSCRIPTION: &str = "managedResourceGroups";
const NAMED_SUBSCRIPTION: &str = "namedManagedResourceGroups";

const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const GROUP: &str = "Contoso-ML-Managed";

/// The text of `resource <symbol> …` up to its closing `}` or `}]` line.
fn resource_block<'a>(text: &'a str, symbol: &str) -> &'a str {
    let head = format!("\nresource {symbol} ");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("{SUBSCRIPTION_EVENTS_TEMPLATE}: `resource {symbol}` not found"))
        + 1;
    let mut end = start;
    for line in text[start..].split_inclusive('\n') {
        end += line.len();
        if matches!(line.trim_end(), "}" | "}]") {
            return &text[start..end];
        }
    }
    panic!("{SUBSCRIPTION_EVENTS_TEMPLATE}: `resource {symbol}` is never closed");
}

/// The value of the first `<key>: '…'` line of a block, without the quotes.
fn quoted_value<'a>(block: &'a str, key: &str) -> &'a str {
    let head = format!("{key}: '");
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix(head.as_str()))
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{SUBSCRIPTION_EVENTS_TEMPLATE}: no `{key}: '…'` in {block}"))
}

/// A block's body without its first and last lines, comments, and its `name` and
/// `subjectBeginsWith` lines: what two subject-filtered event subscriptions must share.
fn shared_body(block: &str) -> Vec<&str> {
    let lines: Vec<&str> = block.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .copied()
        .filter(|line| {
            let line = line.trim();
            !line.starts_with("//")
                && !line.starts_with("name: ")
                && !line.starts_with("subjectBeginsWith: ")
        })
        .collect()
}

/// The named subscription's subject filter for one group in subscription `SUB`, as deployed.
fn rendered_subject(block: &str, group: &str) -> String {
    let loop_variable = block
        .split_once("[for ")
        .and_then(|(_, rest)| rest.split_once(" in "))
        .map(|(variable, _)| variable)
        .unwrap_or_else(|| {
            panic!("{SUBSCRIPTION_EVENTS_TEMPLATE}: `{NAMED_SUBSCRIPTION}` is not a loop")
        });
    quoted_value(block, "subjectBeginsWith")
        .replace("${subscription().id}", &format!("/subscriptions/{SUB}"))
        .replace(
            &format!("${{{loop_variable}}}"),
            &group.to_ascii_lowercase(),
        )
}

fn write_event(operation: &str, resource: &str) -> RawEvent {
    RawEvent::from_binding(json!({
        "id": "e1", "topic": format!("/subscriptions/{SUB}"), "subject": resource,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-12-04T01:00:00Z",
        "data": {"operationName": operation, "resourceUri": resource, "subscriptionId": SUB,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "caller-1"}},
        "dataVersion": "2", "metadataVersion": "1"
    }))
    .unwrap_or_else(|e| panic!("{resource}: {e:?}"))
}

#[test]
fn a_named_group_gets_an_event_subscription_filtered_on_exactly_its_subject() {
    let text = read(SUBSCRIPTION_EVENTS_TEMPLATE);
    let named = resource_block(&text, NAMED_SUBSCRIPTION);
    let prefix = resource_block(&text, PREFIX_SUBSCRIPTION);

    let subject = rendered_subject(named, GROUP);
    assert_eq!(
        subject,
        format!("/subscriptions/{SUB}/resourceGroups/contoso-ml-managed/"),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: the subject filter of `{GROUP}`"
    );
    assert_eq!(
        shared_body(named),
        shared_body(prefix),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: a named group's subscription must deliver, filter event \
         types, retry and dead-letter like `{PREFIX_SUBSCRIPTION}`"
    );
    assert!(
        named.contains("isSubjectCaseSensitive: false\n"),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: resource-group names are case-insensitive"
    );

    // Event subscription names: 3-64 letters, digits and hyphens, whatever the group's name.
    let name = quoted_value(named, "name").replace("${uniqueString(group)}", "abcdefghijklm");
    assert!(
        name.starts_with("cmk-guard-")
            && (3..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: `{name}` is not a valid, stable event subscription name \
         (expected `cmk-guard-…${{uniqueString(group)}}`)"
    );
    assert!(
        named.contains(": if (!empty(group) && !startsWith(group, managedResourceGroupPrefix)) {"),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: a name with the prefix (covered by \
         `{PREFIX_SUBSCRIPTION}`) or an empty one must get no subscription of its own"
    );
}

/// Every write in subscription `SUB` that either subscription delivers (the operations one
/// lets through exactly RELEVANT_OPERATIONS, a test in infra.rs says so; the named one the
/// subject prefix) is relevant to intake once the group's name is learned, and nothing else
/// in or near the group is.
#[test]
fn the_named_filter_delivers_what_intake_treats_as_relevant_in_the_group() {
    let text = read(SUBSCRIPTION_EVENTS_TEMPLATE);
    let subject = rendered_subject(resource_block(&text, NAMED_SUBSCRIPTION), GROUP);
    let settings = IntakeSettings {
        subscriptions: Allowlist::listed(Some(vec![SubscriptionId::parse(SUB).unwrap()])),
        managed_groups: ManagedGroups::default(),
        keyvault_dns_suffix: "vault.azure.net".into(),
    };
    settings.managed_groups.learn(GROUP);

    let group = format!("/subscriptions/{SUB}/resourceGroups/{GROUP}");
    let other = format!("/subscriptions/{SUB}/resourceGroups/{GROUP}-2");
    let cases = [
        (
            "Microsoft.Storage/storageAccounts/write",
            format!("{group}/providers/Microsoft.Storage/storageAccounts/st1"),
        ),
        (
            "Microsoft.Network/privateEndpoints/write",
            format!(
                "/subscriptions/{SUB}/resourceGroups/{}/providers/Microsoft.Network/privateEndpoints/pe1",
                GROUP.to_uppercase()
            ),
        ),
        // The group itself: no slash after the name, so through `cmk-guard-operations`.
        (
            "Microsoft.Resources/subscriptions/resourceGroups/write",
            group.clone(),
        ),
        (
            "Microsoft.Storage/storageAccounts/write",
            format!("{other}/providers/Microsoft.Storage/storageAccounts/st1"),
        ),
        ("Microsoft.Storage/storageAccounts/write", other.clone()),
    ];
    let mut delivered_by_subject = 0;
    for (operation, resource) in &cases {
        let by_subject = resource
            .to_ascii_lowercase()
            .starts_with(&subject.to_ascii_lowercase());
        let by_operation = RELEVANT_OPERATIONS
            .iter()
            .any(|(listed, _)| listed.eq_ignore_ascii_case(operation));
        delivered_by_subject += usize::from(by_subject);
        let relevant = matches!(
            classify(&write_event(operation, resource), &settings),
            Ok(Classified::Relevant(_))
        );
        assert_eq!(
            by_subject || by_operation,
            relevant,
            "{operation} on {resource}: delivered by the filters ({by_subject} by subject \
             `{subject}`, {by_operation} by operation) but relevant to intake: {relevant}"
        );
    }
    assert_eq!(
        delivered_by_subject, 2,
        "the writes inside the group, in any casing"
    );
}

#[test]
fn no_named_group_is_subscribed_by_default_and_the_names_reach_the_module() {
    let main = read(MAIN_TEMPLATE);
    let events = read(EVENTS_TEMPLATE);
    let module = read(SUBSCRIPTION_EVENTS_TEMPLATE);
    for (path, text) in [
        (MAIN_TEMPLATE, &main),
        (EVENTS_TEMPLATE, &events),
        (SUBSCRIPTION_EVENTS_TEMPLATE, &module),
    ] {
        assert!(
            text.contains("\nparam managedResourceGroups array = []\n"),
            "{path}: `managedResourceGroups` must be an array parameter, empty by default"
        );
    }
    let parameters: serde_json::Value = serde_json::from_str(&read(PARAMETERS_FILE))
        .unwrap_or_else(|e| panic!("{PARAMETERS_FILE}: not JSON: {e}"));
    assert_eq!(
        parameters["parameters"]["managedResourceGroups"]["value"],
        json!([]),
        "{PARAMETERS_FILE}: no named group by default"
    );

    // main.bicep → azd environment → postdeploy hook → events.bicep → each topic's module.
    assert!(
        main.contains("\noutput CMK_GUARD_MANAGED_RESOURCE_GROUPS array = managedResourceGroups\n"),
        "{MAIN_TEMPLATE}: the names must reach the azd environment for the postdeploy hook"
    );
    let hook = read(POSTDEPLOY_HOOK);
    assert!(
        hook.contains(
            "\"managedResourceGroups\": resource_group_names(\"CMK_GUARD_MANAGED_RESOURCE_GROUPS\"),"
        ),
        "{POSTDEPLOY_HOOK}: the hook must check the names and pass them to events.bicep"
    );
    assert!(
        events.contains("    managedResourceGroups: managedResourceGroups\n"),
        "{EVENTS_TEMPLATE}: every topic's module must get the names"
    );

    // The named subscriptions come from the parameter alone, so none exists by default.
    assert!(
        module.contains(
            "\nvar managedResourceGroupNames = [for group in managedResourceGroups: toLower(trim(group))]\n"
        ) && module.contains("\nvar namedResourceGroups = union(managedResourceGroupNames, [])\n")
            && resource_block(&module, NAMED_SUBSCRIPTION)
                .contains("[for group in namedResourceGroups: if ("),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: the named subscriptions must loop over the \
         `managedResourceGroups` names (lowercased, each once)"
    );
    assert_eq!(
        module
            .matches("'Microsoft.EventGrid/systemTopics/eventSubscriptions@")
            .count(),
        3,
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: operations, the prefix and the named groups; a new \
         event subscription needs its test here"
    );
}
