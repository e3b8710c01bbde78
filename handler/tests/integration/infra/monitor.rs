//! Azure Monitor, offline: the table `infra/modules/monitor.bicep` declares is what the handler
//! sends (`cmk_guard::monitor::FindingRow`) and what the rule's stream declares; the workbook
//! JSON parses and has the documented items; every query — the workbook's and the alert rules'
//! (`infra/modules/monitor/*.kql`) — references only columns its table has.
//!
//! The column check is a small KQL reader (strings and comments dropped, function calls,
//! operators and names the query defines itself set aside), not a full KQL parser: the full
//! parse and analysis with Microsoft's engine (npm `@kusto/language-service-next`) is
//! `scripts/check-kql`, run by `scripts/validate-infra`.

use std::collections::BTreeSet;

use cmk_guard::monitor::FindingRow;
use serde_json::Value;

use super::read;

const MONITOR_TEMPLATE: &str = "infra/modules/monitor.bicep";
const WORKBOOK: &str = "infra/modules/monitor/workbook.json";
const ALERT_QUERIES: &[&str] = &[
    "infra/modules/monitor/critical-open.kql",
    "infra/modules/monitor/visibility.kql",
    "infra/modules/monitor/dead-letters.kql",
    "infra/modules/monitor/failing-invocations.kql",
];
const FINDINGS_TABLE: &str = "CmkGuardFindings_CL";

/// Columns of the Azure Monitor tables the queries read besides ours (the documented schemas
/// of the workspace-based Application Insights `AppRequests` and of `StorageBlobLogs`), limited
/// to what the queries may use.
const KNOWN_TABLES: &[(&str, &[&str])] = &[
    (
        "AppRequests",
        &[
            "TimeGenerated",
            "Name",
            "Success",
            "ResultCode",
            "OperationId",
            "AppRoleName",
            "DurationMs",
        ],
    ),
    (
        "StorageBlobLogs",
        &[
            "TimeGenerated",
            "OperationName",
            "StatusCode",
            "Uri",
            "AccountName",
        ],
    ),
];

/// KQL words that are not columns: tabular operators, their keywords, scalar operators and
/// literals.
const KQL_WORDS: &[&str] = &[
    "summarize",
    "by",
    "where",
    "project",
    "extend",
    "order",
    "sort",
    "desc",
    "asc",
    "top",
    "take",
    "limit",
    "count",
    "and",
    "or",
    "not",
    "in",
    "has",
    "contains",
    "startswith",
    "endswith",
    "between",
    "true",
    "false",
    "null",
    "on",
    "join",
    "kind",
    "let",
    "render",
    "distinct",
    "mv",
    "expand",
    "as",
    "with",
    "typeof",
    "dynamic",
    "long",
    "int",
    "string",
    "datetime",
    "timespan",
    "real",
    "bool",
    "m",
    "h",
    "d",
];

/// The `{ name: 'X', type: 'y' }` entries of `findingColumns` in the template.
fn declared_columns() -> Vec<String> {
    let template = read(MONITOR_TEMPLATE);
    let start = template
        .find("var findingColumns = [")
        .unwrap_or_else(|| panic!("{MONITOR_TEMPLATE}: `var findingColumns` not found"));
    let block = &template[start..];
    let block = &block[..block.find("\n]").expect("the end of findingColumns")];
    block
        .lines()
        .filter_map(|line| line.split("name: '").nth(1))
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_owned)
        .collect()
}

/// The identifiers a query uses as columns: everything but strings, comments, numbers and time
/// literals, function names (followed by `(`), KQL words, table names and the names the query
/// defines (`Name =` in summarize, extend, project).
fn column_references(query: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cleaned = String::new();
    for line in query.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut in_string = false;
        for c in line.chars() {
            if c == '"' {
                in_string = !in_string;
                cleaned.push(' ');
            } else if !in_string {
                cleaned.push(c);
            }
        }
        cleaned.push('\n');
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut used = BTreeSet::new();
    let mut defined = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            // A number or a time literal (`1d`, `60m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let rest: String = chars[i..].iter().collect::<String>();
        let rest = rest.trim_start();
        if rest.starts_with('(') || KQL_WORDS.contains(&word.as_str()) {
            continue;
        }
        if rest.starts_with('=') && !rest.starts_with("==") {
            defined.insert(word);
        } else {
            used.insert(word);
        }
    }
    (used, defined)
}

/// The columns of `query`'s source table it references that the table lacks.
fn unknown_columns(query: &str, findings: &[String]) -> Vec<String> {
    let table = query
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("//"))
        .unwrap_or_default()
        .to_owned();
    let columns: Vec<String> = if table == FINDINGS_TABLE {
        findings.to_vec()
    } else {
        KNOWN_TABLES
            .iter()
            .find(|(name, _)| *name == table)
            .unwrap_or_else(|| panic!("a query reads `{table}`, a table this test does not know"))
            .1
            .iter()
            .map(|c| (*c).to_owned())
            .collect()
    };
    let (used, defined) = column_references(query);
    used.into_iter()
        .filter(|word| *word != table && !defined.contains(word) && !columns.contains(word))
        .collect()
}

fn workbook() -> Value {
    serde_json::from_str(&read(WORKBOOK)).unwrap_or_else(|e| panic!("{WORKBOOK}: {e}"))
}

#[test]
fn the_table_the_stream_and_the_rows_the_handler_sends_agree() {
    let columns = declared_columns();
    assert_eq!(columns.len(), 11, "{columns:?}");
    assert_eq!(columns[0], "TimeGenerated");
    let row = cmk_guard::outcome::Finding {
        rule: cmk_guard::catalogue::RuleId::VaultPurgeProtection,
        resource: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv".into(),
        workspace: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w".into(),
        severity: cmk_guard::outcome::Severity::High,
        state: cmk_guard::outcome::FindingState::Open,
        observed: "off".into(),
        expected: "on".into(),
    };
    let row = FindingRow::new(
        &row,
        cmk_guard::notify::Change::New,
        None,
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let sent: BTreeSet<String> = serde_json::to_value(&row)
        .expect("a row serialises")
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let declared: BTreeSet<String> = columns.iter().cloned().collect();
    assert_eq!(sent, declared, "the handler's row vs. the table");
    let template = read(MONITOR_TEMPLATE);
    // One column list serves the table and the rule's stream declaration.
    assert_eq!(template.matches("columns: findingColumns").count(), 2);
    assert!(template.contains(&format!(
        "var streamName = '{}'",
        cmk_guard::monitor::DEFAULT_STREAM
    )));
    assert!(template.contains(&format!("var tableName = '{FINDINGS_TABLE}'")));
    assert!(template.contains("outputStream: 'Custom-${tableName}'"));
}

#[test]
fn the_workbook_parses_and_has_the_documented_items() {
    let workbook = workbook();
    assert_eq!(workbook["version"], "Notebook/1.0");
    let items = workbook["items"].as_array().expect("items");
    for item in items {
        let kind = item["type"].as_i64().unwrap_or_default();
        // 1 text, 3 query, 9 parameters: the item types of the workbook schema used here.
        assert!([1, 3, 9].contains(&kind), "{item}");
        if kind == 3 {
            assert_eq!(item["content"]["version"], "KqlItem/1.0", "{item}");
            assert_eq!(
                item["content"]["resourceType"],
                "microsoft.operationalinsights/workspaces"
            );
        }
    }
    let titles: Vec<&str> = items
        .iter()
        .filter_map(|i| i["content"]["title"].as_str())
        .collect();
    for wanted in [
        "Open findings by severity",
        "Open findings by rule",
        "Open findings by workspace",
        "Open findings by subscription",
        "Time to resolve (hours, by rule)",
        "Remediations",
        "Visibility gaps (guard.visibility)",
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing from {titles:?}");
    }
    // The template deploys this very file.
    assert!(read(MONITOR_TEMPLATE).contains("loadTextContent('monitor/workbook.json')"));
}

#[test]
fn every_query_references_only_columns_its_table_declares() {
    let columns = declared_columns();
    let mut queries: Vec<(String, String)> = workbook()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| {
            Some((
                i["name"].as_str()?.to_owned(),
                i["content"]["query"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let template = read(MONITOR_TEMPLATE);
    for path in ALERT_QUERIES {
        let file = path.rsplit('/').next().unwrap_or_default();
        assert!(
            template.contains(&format!("monitor/{file}")),
            "{path} is not deployed"
        );
        queries.push((
            (*path).to_owned(),
            read(path).replace("{openMinutes}", "60"),
        ));
    }
    assert!(queries.len() >= 11, "{queries:?}");
    for (name, query) in &queries {
        assert_eq!(
            unknown_columns(query, &columns),
            Vec::<String>::new(),
            "{name}"
        );
    }
}

#[test]
fn the_column_check_catches_an_undeclared_column() {
    let columns = declared_columns();
    let query = "CmkGuardFindings_CL\n| where Severty == \"critical\" // a typo\n| summarize N = count() by Rule\n| where N > 1d";
    assert_eq!(unknown_columns(query, &columns), ["Severty"]);
}
