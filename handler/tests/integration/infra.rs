//! infra/ and the code cannot drift apart silently. The Bicep templates are read as text (the
//! Bicep CLI cannot run offline; `scripts/validate-infra` parses them with pycep and scans them
//! with checkov), and what they set is compared with what the binary reads and classifies:
//!
//! - the app settings in `infra/modules/app.bicep` are configuration variables cmk-guard reads
//!   (`settings::VARIABLES`), platform settings named here with their reason, or the host's
//!   identity-based trigger connections, and every variable a deployment needs is set;
//! - the Event Grid filter lists exactly `RELEVANT_OPERATIONS`, and the managed resource groups
//!   are matched with intake's prefix, and those of any other name, when listed, with exactly
//!   their subject (`infra/managed_groups.rs`);
//! - the event subscriptions (and the self-wiring target) deliver to functions that exist and
//!   have an Event Grid trigger;
//! - least privilege: the custom roles hold exactly the actions listed here, the write rights
//!   exist only in remediate mode with their consent, no broad built-in role is assigned, and
//!   no list of vaults remains (the sweep wires vaults itself).
//!
//! A file that cannot be read or a literal that cannot be found fails the test with its path.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use cmk_guard::functions::{FUNCTIONS, TriggerType};
use cmk_guard::intake::{MANAGED_RESOURCE_GROUP_PREFIX, RELEVANT_OPERATIONS};
use cmk_guard::settings::VARIABLES;

mod managed_groups;
mod monitor;
mod roles;
mod scale;

const APP_TEMPLATE: &str = "infra/modules/app.bicep";
const MAIN_TEMPLATE: &str = "infra/main.bicep";
const SUBSCRIPTION_TEMPLATE: &str = "infra/modules/subscription.bicep";
const SUBSCRIPTION_EVENTS_TEMPLATE: &str = "infra/modules/subscription-events.bicep";
const AUDIT_ACCESS_TEMPLATE: &str = "infra/modules/audit-access.bicep";
const AUDIT_FUNCTION: &str = "function-definitions/OnKeyVaultAudit/function.json";

/// App settings that are not cmk-guard's own variables, each read by the platform.
const PLATFORM_SETTINGS: &[(&str, &str)] = &[
    (
        "AzureWebJobsStorage__credential",
        "host storage through the managed identity, no account key",
    ),
    (
        "AzureWebJobsStorage__clientId",
        "which user-assigned identity the host uses for its storage",
    ),
    (
        "AzureWebJobsStorage__blobServiceUri",
        "the host storage's blobs: keys, timer leases, the package",
    ),
    (
        "AzureWebJobsStorage__tableServiceUri",
        "the host storage's tables: the host's diagnostic events",
    ),
    (
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "where the host sends logs and traces",
    ),
    (
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "Entra authentication for Application Insights (local auth is off)",
    ),
    (
        "AZURE_CLIENT_ID",
        "cmk-guard's credential picks the user-assigned identity (azure/credential.rs)",
    ),
];

/// Settings a deployment cannot do without, besides the `%NAME%` placeholders that the
/// function definitions ask the host to fill in.
const REQUIRED_SETTINGS: &[(&str, &str)] = &[
    (
        "CMKGUARD_MODE",
        "the mode is chosen at deployment, never left implicit",
    ),
    (
        "CMKGUARD_SUBSCRIPTIONS",
        "events from other subscriptions must be refused",
    ),
    (
        "CMKGUARD_STATE",
        "instances must share one store; the SQLite default is local to one instance",
    ),
    (
        "AZURE_CLIENT_ID",
        "without it the credential looks for a system-assigned identity, which the app has not",
    ),
    (
        "CMKGUARD_KEYVAULT_EVENTS_TARGET",
        "self-wiring subscribes each CMK vault's events to this function",
    ),
    (
        "CMKGUARD_AUDIT_EVENTHUB_RULE_ID",
        "self-wiring streams each CMK vault's AuditEvent logs with this rule",
    ),
    (
        "CMKGUARD_MANAGEMENT_GROUPS",
        "set even when empty, so that the deployed scope is what the parameters say",
    ),
];

/// Only for pointing the binary at a simulator: never deployed.
const TEST_ONLY_VARIABLES: &[&str] = &["CMKGUARD_CONNECT_TO"];

/// Event Grid allows at most 25 advanced-filter values per event subscription.
const EVENT_GRID_MAX_FILTER_VALUES: usize = 25;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the handler crate sits in the workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` (relative to the repository root), recursively, in a stable order.
fn files_under(dir: &str) -> Vec<PathBuf> {
    let mut pending = vec![repo_root().join(dir)];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "{dir}/ holds no files");
    files
}

/// The top-level items of the literal that follows `var <name> = ` in a Bicep text (one per
/// line or comma, comments dropped), so nested objects, arrays, calls and quoted text stay
/// whole.
fn literal_items(text: &str, name: &str, open: char) -> Vec<String> {
    let head = format!("var {name} = {open}");
    let start = text
        .find(&head)
        .unwrap_or_else(|| panic!("`{head}` not found"))
        + head.len();
    let close = if open == '{' { '}' } else { ']' };
    let mut items = Vec::new();
    let mut item = String::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut chars = text[start..].chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            item.push(c);
            match c {
                '\\' => item.extend(chars.next()),
                '\'' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                while chars.next_if(|&next| next != '\n').is_some() {}
                continue;
            }
            '\'' => in_string = true,
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' if depth == 0 => {
                assert_eq!(c, close, "`{head}` closes with `{c}`");
                items.extend(Some(item.trim().to_owned()).filter(|i| !i.is_empty()));
                return items;
            }
            '}' | ']' | ')' => depth -= 1,
            '\n' | ',' if depth == 0 => {
                items.extend(Some(item.trim().to_owned()).filter(|i| !i.is_empty()));
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    panic!("`{head}` is never closed");
}

/// The text of a single-quoted Bicep string literal without interpolation.
fn unquote(item: &str) -> String {
    let inner = item
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("`{item}` is not a quoted string"));
    assert!(
        !inner.contains("${") && !inner.contains('\''),
        "`{item}` is not a plain string literal"
    );
    inner.to_owned()
}

/// The keys of the object literal `var <name> = { … }`, in order.
fn object_keys(text: &str, name: &str) -> Vec<String> {
    literal_items(text, name, '{')
        .iter()
        .map(|item| {
            let (key, _) = item
                .split_once(':')
                .unwrap_or_else(|| panic!("`{item}` in `{name}` is not `key: value`"));
            let key = key.trim();
            if key.starts_with('\'') {
                unquote(key)
            } else {
                key.to_owned()
            }
        })
        .collect()
}

fn app_settings() -> Vec<String> {
    let text = read(APP_TEMPLATE);
    assert!(
        text.contains("properties: appSettings\n"),
        "{APP_TEMPLATE}: the appsettings resource must take `appSettings` as it is, so that this \
         test sees every setting"
    );
    let keys = object_keys(&text, "appSettings");
    assert!(!keys.is_empty(), "{APP_TEMPLATE}: `appSettings` is empty");
    keys
}

/// The `connection` of every function binding: the host reads an identity-based connection
/// from the app settings `<connection>__<property>`.
fn function_connections() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for path in files_under("function-definitions") {
        if path.file_name().is_none_or(|name| name != "function.json") {
            continue;
        }
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let definition: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let bindings = definition["bindings"].as_array().into_iter().flatten();
        names.extend(
            bindings
                .filter_map(|binding| binding["connection"].as_str())
                .map(str::to_owned),
        );
    }
    names
}

/// Whether `key` is `<connection>__<property>` for a binding's connection.
fn is_connection_setting(key: &str, connections: &BTreeSet<String>) -> bool {
    key.split_once("__").is_some_and(|(connection, property)| {
        connections.contains(connection) && !property.is_empty()
    })
}

/// The value of `key: value` in the `appSettings` literal, as written.
fn app_setting_value(key: &str) -> String {
    let text = read(APP_TEMPLATE);
    literal_items(&text, "appSettings", '{')
        .iter()
        .find_map(|item| {
            let (name, value) = item.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{APP_TEMPLATE}: `{key}` is not in `appSettings`"))
}

/// `NAME` for every `%NAME%` in the function definitions: the host fills these in from app
/// settings, and a missing one stops the function from loading.
fn function_placeholders() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for path in files_under("function-definitions") {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut parts = text.split('%');
        parts.next();
        while let (Some(name), Some(_)) = (parts.next(), parts.next()) {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn every_app_setting_is_read_by_the_binary_or_the_platform() {
    let settings = app_settings();
    let connections = function_connections();
    let mut seen = BTreeSet::new();
    for key in &settings {
        assert!(seen.insert(key), "{APP_TEMPLATE}: `{key}` is set twice");
        let known = VARIABLES.contains(&key.as_str())
            || PLATFORM_SETTINGS.iter().any(|(name, _)| name == key)
            || is_connection_setting(key, &connections);
        assert!(
            known,
            "{APP_TEMPLATE}: app setting `{key}` is neither a variable cmk-guard reads \
             (settings::VARIABLES), a platform setting listed in this test, nor a property of a \
             function binding's connection ({connections:?})"
        );
        assert!(
            !TEST_ONLY_VARIABLES.contains(&key.as_str()),
            "{APP_TEMPLATE}: `{key}` points cmk-guard at a simulator; it is never deployed"
        );
    }
}

#[test]
fn every_setting_a_deployment_needs_is_set() {
    let settings = app_settings();
    let required = REQUIRED_SETTINGS
        .iter()
        .map(|(name, _)| name.to_string())
        .chain(function_placeholders());
    for name in required {
        assert!(
            settings.contains(&name),
            "{APP_TEMPLATE}: `{name}` is not set, and a deployment needs it"
        );
    }
    assert!(
        function_placeholders().contains("CMKGUARD_SWEEP_SCHEDULE"),
        "the Sweep schedule is no longer a %placeholder%; update this test"
    );
}

#[test]
fn every_cmkguard_name_in_infra_is_a_variable_the_binary_reads() {
    let mut files = files_under("infra");
    files.push(repo_root().join("azure.yaml"));
    let connections = function_connections();
    let mut names = 0;
    for path in files {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for (at, _) in text.match_indices("CMKGUARD_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `CMKGUARD_AUDIT_EVENTHUB__fullyQualifiedNamespace`: a binding's connection, read
            // by the host, not by cmk-guard.
            if let Some(connection) = name
                .strip_suffix("__")
                .or_else(|| connections.contains(&name).then_some(name.as_str()))
            {
                assert!(
                    connections.contains(connection),
                    "{}: `{name}…` is not the connection of a function binding",
                    path.display()
                );
                continue;
            }
            assert!(
                VARIABLES.contains(&name.as_str()),
                "{}: `{name}` is not a variable cmk-guard reads (settings::VARIABLES)",
                path.display()
            );
            names += 1;
        }
    }
    assert!(names > 0, "infra/ names no CMKGUARD_ variable at all");
}

#[test]
fn event_grid_filter_lists_exactly_the_relevant_operations() {
    let text = read(SUBSCRIPTION_EVENTS_TEMPLATE);
    let filter: Vec<String> = literal_items(&text, "relevantOperations", '[')
        .iter()
        .map(|item| unquote(item))
        .collect();
    let relevant: Vec<String> = RELEVANT_OPERATIONS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<_> = relevant.iter().filter(|op| !filter.contains(op)).collect();
    let extra: Vec<_> = filter.iter().filter(|op| !relevant.contains(op)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: the operationName filter differs from \
         RELEVANT_OPERATIONS; missing {missing:?}, not relevant {extra:?}"
    );
    let distinct: BTreeSet<String> = filter.iter().map(|op| op.to_ascii_lowercase()).collect();
    assert_eq!(
        distinct.len(),
        filter.len(),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: an operation is listed twice (Event Grid compares \
         case-insensitively)"
    );
    assert!(
        filter.len() <= EVENT_GRID_MAX_FILTER_VALUES,
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: {} operations exceed Event Grid's {} advanced-filter \
         values per event subscription; split the filter over two event subscriptions",
        filter.len(),
        EVENT_GRID_MAX_FILTER_VALUES
    );
    assert!(
        text.contains("key: 'data.operationName'\n")
            && text.contains("operatorType: 'StringIn'\n")
            && text.contains("values: relevantOperations\n"),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: the filter must be StringIn on data.operationName over \
         `relevantOperations`"
    );
}

#[test]
fn managed_resource_groups_are_matched_with_the_intake_prefix() {
    let text = read(SUBSCRIPTION_EVENTS_TEMPLATE);
    let head = "var managedResourceGroupPrefix = ";
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(head))
        .unwrap_or_else(|| panic!("{SUBSCRIPTION_EVENTS_TEMPLATE}: `{head}…` not found"));
    assert_eq!(unquote(line.trim()), MANAGED_RESOURCE_GROUP_PREFIX);
    assert!(
        text.contains(
            "subjectBeginsWith: '${subscription().id}/resourceGroups/${managedResourceGroupPrefix}'"
        ),
        "{SUBSCRIPTION_EVENTS_TEMPLATE}: the managed resource groups are no longer matched by \
         subject prefix"
    );
}

#[test]
fn event_subscriptions_deliver_to_event_grid_functions() {
    let mut targeted = BTreeSet::new();
    for path in files_under("infra") {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        // A function's ARM id is written `${<app id>}/functions/<name>`; a bare
        // `Microsoft.Web/sites/functions/…` is a role's action, not a destination.
        for (at, _) in text.match_indices("}/functions/") {
            let at = at + 1;
            let name: String = text[at + "/functions/".len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let function = FUNCTIONS.iter().find(|f| f.name == name);
            assert!(
                function.is_some_and(|f| f.trigger == TriggerType::EventGrid),
                "{}: events go to `{name}`, which is not an Event Grid function of FUNCTIONS",
                path.display()
            );
            targeted.insert(name);
        }
    }
    for function in FUNCTIONS {
        if function.trigger == TriggerType::EventGrid {
            assert!(
                targeted.contains(function.name),
                "no event subscription in infra/ delivers to {}",
                function.name
            );
        }
    }
}

#[test]
fn the_audit_hub_is_read_with_the_managed_identity() {
    let text = fs::read_to_string(repo_root().join(AUDIT_FUNCTION))
        .unwrap_or_else(|e| panic!("cannot read {AUDIT_FUNCTION}: {e}"));
    let definition: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{AUDIT_FUNCTION}: {e}"));
    let trigger = &definition["bindings"][0];
    assert_eq!(trigger["type"], "eventHubTrigger", "{AUDIT_FUNCTION}");
    let connection = trigger["connection"]
        .as_str()
        .unwrap_or_else(|| panic!("{AUDIT_FUNCTION}: the trigger names no connection"));

    // Identity-based: the namespace's host name and the user-assigned identity, no
    // connection string (a bare `<connection>` setting would be one).
    let settings = app_settings();
    assert!(
        !settings.iter().any(|key| key == connection),
        "{APP_TEMPLATE}: `{connection}` would be a connection string; use the identity"
    );
    assert!(
        app_setting_value(&format!("{connection}__fullyQualifiedNamespace"))
            .contains("auditEventHubNamespace"),
        "{APP_TEMPLATE}: the connection must name the audit namespace"
    );
    assert_eq!(
        app_setting_value(&format!("{connection}__credential")),
        "'managedidentity'"
    );
    assert_eq!(
        app_setting_value(&format!("{connection}__clientId")),
        "identity.properties.clientId",
        "{APP_TEMPLATE}: the app has a user-assigned identity only; the host must be told which"
    );

    // The hub the trigger reads is the one main.bicep creates, with the consumer group the
    // trigger names.
    let main = read(MAIN_TEMPLATE);
    let consumer_group = trigger["consumerGroup"]
        .as_str()
        .unwrap_or_else(|| panic!("{AUDIT_FUNCTION}: no consumerGroup"));
    assert!(
        main.contains(&format!("consumerGroupName: '{consumer_group}'\n")),
        "{MAIN_TEMPLATE}: the audit hub's consumer group is not `{consumer_group}`"
    );
    assert_eq!(
        trigger["eventHubName"], "%CMKGUARD_AUDIT_EVENTHUB_NAME%",
        "{AUDIT_FUNCTION}"
    );
    assert_eq!(
        app_setting_value("CMKGUARD_AUDIT_EVENTHUB_NAME"),
        "auditEventHubName"
    );

    // Azure Event Hubs Data Receiver, on the hub rather than the namespace.
    let access = read(AUDIT_ACCESS_TEMPLATE);
    let receiver = access
        .split("\nresource receiver ")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .unwrap_or_else(|| panic!("{AUDIT_ACCESS_TEMPLATE}: no `receiver` role assignment"));
    assert!(
        access.contains("var eventHubsDataReceiverRoleId = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'")
            && receiver.contains("eventHubsDataReceiverRoleId")
            && receiver.contains("  scope: hub\n")
            && !receiver.contains("if ("),
        "{AUDIT_ACCESS_TEMPLATE}: Azure Event Hubs Data Receiver must always be granted on the hub"
    );
}

#[test]
fn the_self_wiring_target_is_the_key_vault_event_function() {
    assert_eq!(
        app_setting_value("CMKGUARD_KEYVAULT_EVENTS_TARGET"),
        "'${site.id}/functions/OnKeyVaultEvent'"
    );
    assert!(
        FUNCTIONS
            .iter()
            .any(|f| f.name == "OnKeyVaultEvent" && f.trigger == TriggerType::EventGrid),
        "OnKeyVaultEvent is no longer an Event Grid function"
    );
    assert_eq!(
        app_setting_value("CMKGUARD_MANAGEMENT_GROUPS"),
        "join(managementGroups, ',')"
    );
}

/// The sweep fan-out: its queue is on the host's storage (the connection SweepSubscription's
/// trigger uses), the poison queue is the one the host writes, and Storage Queue Data
/// Contributor is granted on those two queues only, never on the account.
#[test]
fn the_sweep_queue_and_its_poison_queue_are_granted_one_by_one() {
    assert_eq!(app_setting_value("CMKGUARD_SWEEP_QUEUE"), "sweepQueue.name");
    assert_eq!(
        app_setting_value("AzureWebJobsStorage__queueServiceUri"),
        "hostStorage.properties.primaryEndpoints.queue"
    );
    assert!(
        FUNCTIONS
            .iter()
            .any(|f| f.name == "SweepSubscription" && f.trigger == TriggerType::Queue),
        "SweepSubscription is no longer a queue-triggered function"
    );
    let text = read(APP_TEMPLATE);
    assert!(
        text.contains(&format!(
            "name: '${{sweepQueueName}}{}'",
            cmk_guard::queue::POISON_SUFFIX
        )),
        "{APP_TEMPLATE}: the poison queue must be named as the host names it"
    );
    let scopes: Vec<&str> = text
        .split("resource ")
        .filter(|block| block.contains("roles.storageQueueDataContributor)"))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix("scope: "))
        })
        .collect();
    assert_eq!(scopes, ["sweepQueue", "sweepPoisonQueue"], "{APP_TEMPLATE}");
}
