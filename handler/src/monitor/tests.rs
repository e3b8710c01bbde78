use super::*;
use crate::catalogue::RuleId;
use crate::outcome::Severity;

use crate::settings::tests::lookup as env;

#[test]
fn settings_need_an_https_endpoint_and_a_rule() {
    assert_eq!(LogsSettings::from_lookup(env(&[])).unwrap(), None);
    let settings = LogsSettings::from_lookup(env(&[
        (
            ENDPOINT_VARIABLE,
            "https://dce-1.westeurope-1.ingest.monitor.azure.com",
        ),
        (RULE_VARIABLE, "dcr-00112233445566778899aabbccddeeff"),
    ]))
    .unwrap()
    .expect("configured");
    assert_eq!(settings.stream, DEFAULT_STREAM);
    assert_eq!(
        settings.upload_url().as_str(),
        "https://dce-1.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-00112233445566778899aabbccddeeff/streams/Custom-CmkGuardFindings?api-version=2023-01-01"
    );
    for bad in [
        &[(ENDPOINT_VARIABLE, "https://dce.example")][..],
        &[(RULE_VARIABLE, "dcr-1")][..],
        &[
            (ENDPOINT_VARIABLE, "http://dce.example"),
            (RULE_VARIABLE, "dcr-1"),
        ][..],
        &[
            (ENDPOINT_VARIABLE, "https://dce.example"),
            (RULE_VARIABLE, "dcr-1/../x"),
        ][..],
    ] {
        let pairs: &'static [(&'static str, &'static str)] =
            Box::leak(bad.to_vec().into_boxed_slice());
        assert!(LogsSettings::from_lookup(env(pairs)).is_err(), "{bad:?}");
    }
}

fn finding(state: FindingState) -> Finding {
    Finding {
        rule: RuleId::VaultPurgeProtection,
        resource: "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv".into(),
        workspace: "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w".into(),
        severity: Severity::Critical,
        state,
        observed: "off".into(),
        expected: "on".into(),
    }
}

#[test]
fn rows_name_the_change_and_the_remediation() {
    let now = OffsetDateTime::UNIX_EPOCH;
    let opened = FindingRow::new(&finding(FindingState::Open), Change::New, None, now);
    assert_eq!(opened.change, "opened");
    assert_eq!(opened.severity, "critical");
    assert_eq!(opened.state, "open");
    assert_eq!(opened.subscription_id, "s1");
    assert_eq!(opened.remediation, "");
    let action = Action {
        kind: ActionKind::Remediate,
        rule: "vault.purge-protection".into(),
        target: "kv".into(),
        result: ActionResult::Applied,
        detail: String::new(),
    };
    let fixed = FindingRow::new(
        &finding(FindingState::Resolved),
        Change::Resolved,
        Some(&action),
        now,
    );
    assert_eq!(fixed.change, "remediated");
    assert_eq!(fixed.remediation, "applied");
    let json = serde_json::to_value(&fixed).unwrap();
    assert_eq!(json["TimeGenerated"], "1970-01-01T00:00:00Z");
    assert_eq!(json["Rule"], "vault.purge-protection");
    let at_once = FindingRow::new(
        &finding(FindingState::Resolved),
        Change::New,
        Some(&action),
        now,
    );
    assert_eq!(at_once.change, "remediated");
    let resolved = FindingRow::new(
        &finding(FindingState::Resolved),
        Change::Resolved,
        None,
        now,
    );
    assert_eq!(resolved.change, "resolved");
}
