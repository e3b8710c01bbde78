//! SARIF 2.1.0, for GitHub code scanning and other SARIF viewers (docs/architecture.md *SARIF*).
//!
//! What the log holds, and why:
//! - **Rules**: every rule id of the catalogue, in its order, each with the advice table's text
//!   (problem, why, how to fix, the Microsoft doc as `helpUri`). All of them, not only those
//!   with results, so a result's `ruleIndex` means the same rule in every log and a viewer can
//!   show what was checked. A rule's `security-severity` (what GitHub ranks alerts by) is the
//!   worst severity among its results in this log, since severity belongs to a finding (
//!   `key.expiry` is medium, high or critical by the days left) and the policy may override it;
//!   a rule without results has none. Each result's `level` carries its own severity.
//! - **Results**: one per open finding, and one per exempted finding with an external
//!   suppression (its reason as the justification). Resolved findings are left out: code
//!   scanning closes an alert that the next upload no longer reports.
//! - **Locations**: the finding's resource, as a logical location (the ARM id or key URL,
//!   kind `resource`) and — because code scanning accepts only results with a physical
//!   location — as an artifact whose path is that ARM id under the base `ARM` (a key URL: its
//!   host and path under `KEYVAULT`). No file of the repository holds a workspace, so the
//!   path names the resource, not a template; the alert shows the ARM id where a file path
//!   would be. The workspace, when it is another resource, is a related location.
//! - **Fingerprints**: `partialFingerprints` from the finding's key (workspace, rule,
//!   resource; ids folded to lower case), so code scanning tracks one alert per finding
//!   across runs.
//! - **Invocation**: `executionSuccessful` is false when the result is incomplete (an open
//!   `guard.visibility` finding) or an event was rejected; each is a notification.
//!
//! Every string from Azure is bounded and stripped of controls; JSON escaping is serde's.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::Context;
use crate::catalogue::{Remediation, RuleId};
use crate::notify::advice;
use crate::outcome::{Disposition, Finding, FindingState, Outcome, Severity};
use crate::text::{Limit, clean};

/// The schema the log names (OASIS, SARIF 2.1.0 Errata 01).
pub const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// Where a reader learns what cmk-guard checks: the requirement it enforces (cmk-guard has no
/// public home page of its own).
const INFORMATION_URI: &str =
    "https://learn.microsoft.com/azure/machine-learning/concept-customer-managed-keys";

/// The base of the artifact path of an ARM id.
pub const ARM_BASE: &str = "ARM";
/// The base of the artifact path of a Key Vault URL (a key).
pub const KEYVAULT_BASE: &str = "KEYVAULT";

/// The name of the fingerprint of a finding's key; the version changes if its input does.
pub const FINGERPRINT: &str = "cmkGuardFindingKey/v1";

/// Longest observed or expected text in a message, and longest resource id.
const PART: Limit = Limit::chars(1000);
/// Longest exemption reason or notification detail.
const NOTE: Limit = Limit::chars(500);

/// The SARIF log of `outcomes`.
pub fn sarif(outcomes: &[Outcome], context: &Context<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&log(outcomes, context))
}

/// The log as a JSON value.
fn log(outcomes: &[Outcome], context: &Context<'_>) -> Value {
    let mut seen = HashSet::new();
    let mut reported: Vec<(&Finding, Option<&str>)> = Vec::new();
    for outcome in outcomes {
        let open = outcome
            .findings
            .iter()
            .filter(|f| f.state == FindingState::Open)
            .map(|f| (f, None));
        let exempted = outcome
            .exempted
            .iter()
            .map(|e| (&e.finding, Some(e.exemption_reason.as_str())));
        for (finding, exemption) in open.chain(exempted) {
            // The same finding reached through two events of one `evaluate` is one result.
            if seen.insert(fingerprint(finding)) {
                reported.push((finding, exemption));
            }
        }
    }
    let mut worst: BTreeMap<RuleId, Severity> = BTreeMap::new();
    for (finding, exemption) in &reported {
        if exemption.is_none() {
            let entry = worst.entry(finding.rule).or_insert(finding.severity);
            *entry = (*entry).max(finding.severity);
        }
    }
    let rules: Vec<Value> = RuleId::ALL
        .into_iter()
        .map(|rule| descriptor(rule, worst.get(&rule).copied()))
        .collect();
    let results: Vec<Value> = reported
        .iter()
        .map(|(finding, exemption)| result(finding, *exemption))
        .collect();
    let notifications = notifications(outcomes);
    let mut invocation = json!({
        "executionSuccessful": notifications.is_empty(),
        "toolExecutionNotifications": notifications,
    });
    if let Ok(end) = context.generated.format(&Rfc3339) {
        invocation["endTimeUtc"] = Value::String(end);
    }
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "cmk-guard",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }},
            "originalUriBaseIds": {
                ARM_BASE: {"description": {"text":
                    "Azure Resource Manager: the path is the resource's ARM id."}},
                KEYVAULT_BASE: {"description": {"text":
                    "Azure Key Vault: the path is the key's URL without https://."}},
            },
            "invocations": [invocation],
            "results": results,
        }],
    })
}

/// The rule's `reportingDescriptor`: the advice table's text, static (no Azure string in it).
fn descriptor(rule: RuleId, worst: Option<Severity>) -> Value {
    let advice = advice::advice(rule);
    let problem = sentence(advice.problem);
    let fix = how_to_fix(rule);
    let mut properties = json!({
        "tags": ["security", "cmk", "azure", area(rule)],
        "precision": "very-high",
    });
    if let Some(severity) = worst {
        properties["security-severity"] = Value::String(security_severity(severity).to_owned());
        properties["severity"] = Value::String(severity.as_str().to_owned());
    }
    json!({
        "id": rule.as_str(),
        "shortDescription": {"text": problem},
        "fullDescription": {"text": advice.why},
        "helpUri": advice.doc,
        "help": {
            "text": format!("{problem}.\n\nWhy it matters: {}\n\nHow to fix: {fix}\n\nDocumentation: {}", advice.why, advice.doc),
            "markdown": format!("**{problem}.**\n\n{}\n\n**How to fix:** {fix}\n\n[Microsoft documentation]({})", advice.why, advice.doc),
        },
        "properties": properties,
    })
}

/// What fixes a finding of `rule`, from the catalogue's remediation.
fn how_to_fix(rule: RuleId) -> &'static str {
    match rule.remediation() {
        Remediation::Manual => {
            "a person fixes it: each result's message names the resource and, where one exists, the az command; the documentation explains the fix."
        }
        Remediation::Reversible => {
            "cmk-guard fixes it in remediate mode when the policy allows the remediation; otherwise run the az command in the result's message."
        }
        Remediation::Irreversible => {
            "cmk-guard fixes it in remediate mode when the policy allows the remediation with irreversible_ok = true, because the fix cannot be undone; otherwise run the az command in the result's message."
        }
    }
}

/// The part of the CMK chain a rule checks, as a tag.
fn area(rule: RuleId) -> &'static str {
    rule.as_str().split('.').next().unwrap_or("cmk")
}

/// `text` with a capital first letter.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The SARIF level of a severity.
pub fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// GitHub's `security-severity` (a score from 0.0 to 10.0; over 9.0 is critical, 7.0 to 8.9
/// high, 4.0 to 6.9 medium, below that low).
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
    }
}

/// The stable identity of a finding across runs: its key, ids folded to lower case as the
/// state store compares them.
pub fn fingerprint(finding: &Finding) -> String {
    crate::state::digest(&[
        &finding.workspace.to_ascii_lowercase(),
        finding.rule.as_str(),
        &finding.resource.to_ascii_lowercase(),
    ])
}

/// One result.
fn result(finding: &Finding, exemption: Option<&str>) -> Value {
    let advice = advice::advice(finding.rule);
    let observed = clean(&finding.observed, PART);
    let expected = clean(&finding.expected, PART);
    let mut message = format!(
        "{}: {}. Expected: {}.",
        sentence(advice.problem),
        observed.trim_end_matches('.'),
        expected.trim_end_matches('.')
    );
    if let Some(command) = advice::fix_command(
        finding.rule,
        &finding.resource,
        &finding.observed,
        &finding.workspace,
    ) {
        message.push_str(&format!(" Fix: {}", clean(&command, PART)));
    }
    let rule_index = RuleId::ALL
        .iter()
        .position(|rule| *rule == finding.rule)
        .unwrap_or_default();
    let mut value = json!({
        "ruleId": finding.rule.as_str(),
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": level(finding.severity),
        "message": {"text": message},
        "locations": [location(&finding.resource)],
        "partialFingerprints": {FINGERPRINT: fingerprint(finding)},
        "properties": {
            "severity": finding.severity.as_str(),
            "workspace": clean(&finding.workspace, PART),
            "resource": clean(&finding.resource, PART),
            "observed": observed,
            "expected": expected,
        },
    });
    if !finding.workspace.eq_ignore_ascii_case(&finding.resource) {
        let mut related = location(&finding.workspace);
        related["id"] = json!(1);
        related["message"] = json!({"text": "the workspace whose CMK chain this is"});
        value["relatedLocations"] = json!([related]);
    }
    if let Some(reason) = exemption {
        value["suppressions"] = json!([{
            "kind": "external",
            "status": "accepted",
            "justification": clean(reason, NOTE),
        }]);
    }
    value
}

/// Where a finding is: the resource as a logical location and as an artifact path.
fn location(resource: &str) -> Value {
    let resource = clean(resource, PART);
    let (base, path) = match resource.strip_prefix("https://") {
        Some(url) => (KEYVAULT_BASE, url),
        None => (ARM_BASE, resource.trim_start_matches('/')),
    };
    json!({
        "physicalLocation": {
            "artifactLocation": {"uri": artifact_path(path), "uriBaseId": base},
            "region": {"startLine": 1},
        },
        "logicalLocations": [{"fullyQualifiedName": resource, "kind": "resource"}],
    })
}

/// `path` as a relative URI reference: each segment percent-encoded but for RFC 3986's
/// unreserved characters, so no name can add a query, a fragment, a scheme or a `..` step.
pub fn artifact_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        if segment == "." || segment == ".." {
            out.push_str(&segment.replace('.', "%2E"));
            continue;
        }
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// What keeps the run from being complete: each unread resource and each rejected event.
fn notifications(outcomes: &[Outcome]) -> Vec<Value> {
    let mut notes = Vec::new();
    for outcome in outcomes {
        if outcome.disposition == Disposition::Rejected {
            let reason = outcome.reason.as_deref().unwrap_or("no reason given");
            notes.push(json!({
                "level": "error",
                "message": {"text": format!("an event was rejected: {}", clean(reason, NOTE))},
            }));
        }
        for finding in outcome
            .findings
            .iter()
            .filter(|f| f.state == FindingState::Open && f.rule == crate::rules::VISIBILITY)
        {
            notes.push(json!({
                "level": "warning",
                "message": {"text": format!(
                    "incomplete: cmk-guard could not read {}: {}",
                    clean(&finding.resource, PART),
                    clean(&finding.observed, PART)
                )},
            }));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{EventRef, Exempted};

    const WS: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1";
    const VAULT: &str = "/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";

    fn finding(rule: RuleId, resource: &str, severity: Severity) -> Finding {
        Finding {
            rule,
            resource: resource.into(),
            workspace: WS.into(),
            severity,
            state: FindingState::Open,
            observed: "enablePurgeProtection is not set".into(),
            expected: "purge protection is on".into(),
        }
    }

    fn context() -> Context<'static> {
        Context {
            generated: time::macros::datetime!(2026-12-04 10:00 UTC),
            history: None,
        }
    }

    fn outcome(findings: Vec<Finding>) -> Outcome {
        let mut outcome = Outcome::new(EventRef::default(), Disposition::Evaluated, None);
        outcome.workspaces.push(WS.into());
        outcome.findings = findings;
        outcome
    }

    fn run(outcomes: &[Outcome]) -> Value {
        let text = sarif(outcomes, &context()).unwrap();
        let log: Value = serde_json::from_str(&text).unwrap();
        log["runs"][0].clone()
    }

    #[test]
    fn every_rule_is_described_and_results_point_at_theirs() {
        let run = run(&[outcome(vec![
            finding(RuleId::VaultPurgeProtection, VAULT, Severity::High),
            finding(RuleId::KeyRotationPolicy, VAULT, Severity::Low),
        ])]);
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), RuleId::ALL.len());
        for result in run["results"].as_array().unwrap() {
            let index = result["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[index]["id"], result["ruleId"]);
        }
        let purge = &rules[6];
        assert_eq!(purge["id"], "vault.purge-protection");
        assert_eq!(
            purge["shortDescription"]["text"],
            "Purge protection is off on the key vault"
        );
        assert_eq!(
            purge["helpUri"],
            advice::advice(RuleId::VaultPurgeProtection).doc
        );
        assert!(
            purge["help"]["markdown"]
                .as_str()
                .unwrap()
                .contains("irreversible_ok")
        );
        assert_eq!(purge["properties"]["security-severity"], "8.0");
        assert_eq!(purge["properties"]["tags"][0], "security");
        assert!(
            rules[0]["properties"].get("security-severity").is_none(),
            "no results, no severity"
        );
        let levels: Vec<&str> = run["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["error", "note"]);
        assert_eq!(run["invocations"][0]["executionSuccessful"], true);
        assert_eq!(run["invocations"][0]["endTimeUtc"], "2026-12-04T10:00:00Z");
    }

    #[test]
    fn levels_follow_severity() {
        assert_eq!(level(Severity::Critical), "error");
        assert_eq!(level(Severity::High), "error");
        assert_eq!(level(Severity::Medium), "warning");
        assert_eq!(level(Severity::Low), "note");
    }

    #[test]
    fn the_location_is_the_arm_id_logically_and_as_a_path() {
        let run = run(&[outcome(vec![finding(
            RuleId::VaultPurgeProtection,
            VAULT,
            Severity::High,
        )])]);
        let result = &run["results"][0];
        let location = &result["locations"][0];
        assert_eq!(location["logicalLocations"][0]["fullyQualifiedName"], VAULT);
        assert_eq!(location["logicalLocations"][0]["kind"], "resource");
        let artifact = &location["physicalLocation"]["artifactLocation"];
        assert_eq!(artifact["uri"], VAULT.trim_start_matches('/'));
        assert_eq!(artifact["uriBaseId"], ARM_BASE);
        assert_eq!(
            result["relatedLocations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            WS
        );
        let message = result["message"]["text"].as_str().unwrap();
        assert!(
            message.starts_with("Purge protection is off on the key vault: enablePurgeProtection is not set. Expected: purge protection is on. Fix: az keyvault update --name kv1 "),
            "{message}"
        );
    }

    #[test]
    fn a_key_url_is_a_path_under_the_key_vault_base() {
        let key = "https://kv1.vault.azure.net/keys/cmk/0123";
        let run = run(&[outcome(vec![finding(
            RuleId::KeyExpiry,
            key,
            Severity::Critical,
        )])]);
        let artifact = &run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(artifact["uri"], "kv1.vault.azure.net/keys/cmk/0123");
        assert_eq!(artifact["uriBaseId"], KEYVAULT_BASE);
    }

    #[test]
    fn hostile_names_cannot_escape_the_path_or_the_message() {
        assert_eq!(
            artifact_path("subscriptions/s/resourceGroups/a b?c#d/../%2e:x"),
            "subscriptions/s/resourceGroups/a%20b%3Fc%23d/%2E%2E/%252e%3Ax"
        );
        let mut hostile = finding(RuleId::VaultPurgeProtection, VAULT, Severity::High);
        hostile.observed = format!("line\n\u{1b}[31m{}", "x".repeat(5000));
        let run = run(&[outcome(vec![hostile])]);
        let message = run["results"][0]["message"]["text"].as_str().unwrap();
        assert!(!message.contains('\n') && !message.contains('\u{1b}'));
        assert!(message.chars().count() < 1500, "bounded");
    }

    #[test]
    fn fingerprints_are_stable_per_finding_key() {
        let a = finding(RuleId::VaultPurgeProtection, VAULT, Severity::High);
        let mut same = a.clone();
        same.resource = VAULT.to_uppercase();
        same.severity = Severity::Critical;
        same.observed = "something else".into();
        assert_eq!(fingerprint(&a), fingerprint(&same));
        let other = finding(RuleId::VaultSoftDelete, VAULT, Severity::High);
        assert_ne!(fingerprint(&a), fingerprint(&other));
        let run = run(&[outcome(vec![a.clone()]), outcome(vec![same])]);
        assert_eq!(
            run["results"].as_array().unwrap().len(),
            1,
            "one result per key"
        );
        assert_eq!(
            run["results"][0]["partialFingerprints"][FINGERPRINT],
            fingerprint(&a)
        );
    }

    #[test]
    fn resolved_are_left_out_exempted_are_suppressed() {
        let mut resolved = finding(RuleId::KeyEnabled, VAULT, Severity::Critical);
        resolved.state = FindingState::Resolved;
        let mut outcome = outcome(vec![resolved]);
        outcome.exempted.push(Exempted {
            finding: finding(RuleId::VaultPurgeProtection, VAULT, Severity::High),
            exemption_reason: "legacy vault, ticket 42".into(),
            exemption_expires: None,
        });
        let run = run(&[outcome]);
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["ruleId"], "vault.purge-protection");
        assert_eq!(results[0]["suppressions"][0]["kind"], "external");
        assert_eq!(
            results[0]["suppressions"][0]["justification"],
            "legacy vault, ticket 42"
        );
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .all(|r| r["properties"].get("security-severity").is_none()),
            "suppressed results do not rank a rule"
        );
    }

    #[test]
    fn incomplete_runs_are_not_successful() {
        let unseen = finding(RuleId::GuardVisibility, VAULT, Severity::High);
        let run = run(&[
            outcome(vec![unseen]),
            Outcome::new(
                EventRef::default(),
                Disposition::Rejected,
                Some("not JSON".into()),
            ),
        ]);
        let invocation = &run["invocations"][0];
        assert_eq!(invocation["executionSuccessful"], false);
        let notes = invocation["toolExecutionNotifications"].as_array().unwrap();
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0]["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with("incomplete: cmk-guard could not read /subscriptions/")
        );
        assert_eq!(notes[1]["level"], "error");
        assert_eq!(run["results"][0]["ruleId"], "guard.visibility");
    }
}
