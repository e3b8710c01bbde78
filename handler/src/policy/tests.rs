//! The policy file end to end: defaults, a full file, and the message for every mistake.

use super::remediation::iso_duration_days;
use super::*;
use time::macros::date;

const FULL: &str = r#"
# every section of the policy file
[rules."key.expiry"]
warn_days = 45
critical_days = 10

[rules."key.type-size"]
min_rsa_bits = 4096
severity = "high"

[rules."workspace.unsupported-endpoints"]
enabled = false

[rules."managed-resources.tamper"]
azure_ml_object_ids = ["dddddddd-0000-0000-0000-000000000001"]

[remediation."vault.purge-protection"]
enabled = true
irreversible_ok = true

[remediation."key.rotation-policy"]
enabled = true

[notify]
teams = ["critical", "high", "medium"]
email = ["critical"]
reminder_hours = 12
digest_hours = 6

[[exemptions]]
rule = "vault.purge-protection"
resource = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/legacy-kv"
reason = "migration, change 4711"
expires = "2027-01-31"

[[exemptions]]
rule = "key.expiry-set"
resource = "https://kv1.vault.azure.net/keys/cmk"
reason = "HSM key rotated by hand"
expires = 2026-01-31

[scope]
require_cmk_tag = "cmk-required"
"#;

fn error(text: &str) -> String {
    Policy::from_toml_str(text, "policy.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn the_built_in_policy_has_the_documented_defaults() {
    let policy = Policy::default();
    assert_eq!(policy.source, BUILT_IN);
    assert_eq!(
        policy.key_expiry(),
        ExpiryThresholds {
            warn_days: 30,
            critical_days: 7
        }
    );
    assert_eq!(policy.min_rsa_bits(), 3072);
    assert!(RuleId::evaluated().all(|r| policy.rule_enabled(r)));
    assert!(RuleId::evaluated().all(|r| !policy.allows_remediation(r)));
    assert_eq!(policy.notify.email, [Severity::Critical, Severity::High]);
    assert_eq!(policy.notify.reminder_hours, 24);
    assert_eq!(policy.notify.digest_hours, 24);
    assert!(policy.scope.requires_cmk(&BTreeMap::new()));
    assert_eq!(
        Policy::from_toml_str("", "empty.toml").unwrap().source,
        "empty.toml"
    );
    assert_eq!(
        Policy::from_toml_str("", BUILT_IN).unwrap(),
        Policy::default()
    );
}

#[test]
fn a_full_policy_parses() {
    let policy = Policy::from_toml_str(FULL, "policy.toml").unwrap();
    assert_eq!(
        policy.key_expiry(),
        ExpiryThresholds {
            warn_days: 45,
            critical_days: 10
        }
    );
    assert_eq!(policy.min_rsa_bits(), 4096);
    assert_eq!(
        policy.severity_override(RuleId::KeyTypeSize),
        Some(Severity::High)
    );
    assert_eq!(policy.severity_override(RuleId::KeyExpiry), None);
    assert!(!policy.rule_enabled(RuleId::WorkspaceUnsupportedEndpoints));
    assert!(policy.rule_enabled(RuleId::VaultExists));
    assert_eq!(
        policy.azure_ml_object_ids(),
        ["dddddddd-0000-0000-0000-000000000001"]
    );
    assert!(policy.allows_remediation(RuleId::parse("vault.purge-protection").unwrap()));
    assert!(policy.allows_remediation(RuleId::parse("key.rotation-policy").unwrap()));
    assert!(!policy.allows_remediation(RuleId::parse("workspace.key-access").unwrap()));
    assert_eq!(
        policy.remediation(RuleId::parse("vault.purge-protection").unwrap()),
        RemediationConsent {
            enabled: true,
            irreversible_ok: true
        }
    );
    assert_eq!(policy.notify.email, [Severity::Critical]);
    assert_eq!(policy.notify.webhook, Notify::default().webhook);
    assert_eq!(policy.notify.reminder_hours, 12);
    assert_eq!(policy.notify.digest_hours, 6);
    assert_eq!(policy.exemptions.len(), 2);
    assert_eq!(policy.exemptions[0].expires, Some(date!(2027 - 01 - 31)));
    assert_eq!(policy.exemptions[1].expires, Some(date!(2026 - 01 - 31)));
    assert_eq!(
        policy.scope.require_cmk_tag.as_deref(),
        Some("cmk-required")
    );
    let summary = policy.summary(date!(2026 - 11 - 28));
    assert!(
        summary.contains("disabled: workspace.unsupported-endpoints"),
        "{summary}"
    );
    assert!(summary.contains("2 exemption(s), 1 expired"), "{summary}");
    assert!(
        summary.contains("remediation allowed: vault.purge-protection, key.rotation-policy"),
        "{summary}"
    );
}

#[test]
fn errors_name_the_line_and_key() {
    let cases = [
        (
            "[notify]\ndigest_hours = 169\n",
            "policy.toml: line 2, key `notify.digest_hours`: digest_hours must be at most 168 (a week)",
        ),
        (
            "[rules.\"key.expiry\"]\nwarn_dayz = 3\n",
            "policy.toml: line 2, key `rules.\"key.expiry\".warn_dayz`: unknown field `warn_dayz`",
        ),
        (
            "[rules.\"key.expiry\"]\nwarn_days = \"soon\"\n",
            "policy.toml: line 2, key `rules.\"key.expiry\".warn_days`: invalid type: string \"soon\", expected u32",
        ),
        (
            "\n[rules.\"vault.purge-protect\"]\nenabled = false\n",
            "policy.toml: line 2, key `rules.\"vault.purge-protect\"`: unknown rule `vault.purge-protect`",
        ),
        (
            "[rules.\"vault.exists\"]\nseverity = \"urgent\"\n",
            "policy.toml: line 2, key `rules.\"vault.exists\".severity`: unknown variant `urgent`",
        ),
        (
            "[rules.\"vault.exists\"]\nwarn_days = 3\n",
            "policy.toml: line 2, key `rules.\"vault.exists\".warn_days`: `warn_days` applies only to rule `key.expiry`",
        ),
        (
            "[rules.\"key.expiry\"]\nwarn_days = 5\n",
            "policy.toml: line 2, key `rules.\"key.expiry\".warn_days`: critical_days (7) must not exceed warn_days (5)",
        ),
        (
            "[rules.\"key.type-size\"]\nmin_rsa_bits = 1024\n",
            "policy.toml: line 2, key `rules.\"key.type-size\".min_rsa_bits`: min_rsa_bits must be 2048, 3072 or 4096",
        ),
        (
            "[rules.\"managed-resources.tamper\"]\nazure_ml_object_ids = [\"azure-ml\"]\n",
            "policy.toml: line 2, key `rules.\"managed-resources.tamper\".azure_ml_object_ids`: `azure-ml` is not an object id",
        ),
        (
            "[remediation.\"vault.purge-protection\"]\nenabled = true\n",
            "policy.toml: line 2, key `remediation.\"vault.purge-protection\".enabled`: the remediation of `vault.purge-protection` cannot be undone",
        ),
        (
            "[remediation.\"vault.soft-delete\"]\nenabled = true\n",
            "policy.toml: line 1, key `remediation.\"vault.soft-delete\"`: rule `vault.soft-delete` has no remediation",
        ),
        (
            "[remediation.\"key.rotation-policy\"]\nenabled = true\nirreversible_ok = true\n",
            "policy.toml: line 3, key `remediation.\"key.rotation-policy\".irreversible_ok`: the remediation of `key.rotation-policy` can be undone",
        ),
        (
            "[notify]\nteams = [\"critical\",\n  \"severe\"]\n",
            "policy.toml: line 3, key `notify.teams[1]`: unknown variant `severe`",
        ),
        (
            "[notify]\nslack = [\"critical\"]\n",
            "policy.toml: line 2, key `notify.slack`: unknown field `slack`",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"ok\"\n[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\n",
            "policy.toml: line 5, key `exemptions[1]`: missing field `reason`",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"  \"\n",
            "policy.toml: line 4, key `exemptions[0].reason`: an exemption needs a reason",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exist\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\n",
            "policy.toml: line 2, key `exemptions[0].rule`: unknown rule `vault.exist`",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"legacy-kv\"\nreason = \"r\"\n",
            "policy.toml: line 3, key `exemptions[0].resource`: `legacy-kv` is neither an ARM resource id nor a Key Vault key URL",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\nexpires = \"31.01.2027\"\n",
            "policy.toml: line 5, key `exemptions[0].expires`: expires must be a date",
        ),
        (
            "[[exemptions]]\nrule = \"vault.exists\"\nresource = \"/subscriptions/00000000-1111-2222-3333-444444444444\"\nreason = \"r\"\nexpires = 2027-01-31T10:00:00Z\n",
            "policy.toml: line 5, key `exemptions[0].expires`: expires must be a date",
        ),
        (
            "[scope]\nrequire_cmk_tag = \"\"\n",
            "policy.toml: line 2, key `scope.require_cmk_tag`: require_cmk_tag must name a tag",
        ),
        (
            "mode = \"remediate\"\n",
            "policy.toml: line 1, key `mode`: unknown field `mode`",
        ),
        ("[rules\n", "policy.toml: line 1"),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(
            message.starts_with(expected),
            "for {text:?}\n  got      {message}\n  expected {expected}…"
        );
    }
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../docs/rules.md");
    let example = doc
        .rsplit("```toml\n")
        .next()
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let policy = Policy::from_toml_str(example, "docs/rules.md").unwrap();
    assert!(policy.allows_remediation(RuleId::parse("vault.purge-protection").unwrap()));
    assert_eq!(policy.exemptions.len(), 1);
}

#[test]
fn the_rotation_policy_remediation_has_defaults_and_validated_settings() {
    assert_eq!(
        Policy::default().key_rotation_policy(),
        &RotationPolicySettings {
            expiry_time: "P1Y".into(),
            rotate_before_expiry: "P30D".into(),
            notify_before_expiry: "P30D".into(),
        }
    );
    let policy = Policy::from_toml_str(
        "[remediation.\"key.rotation-policy\"]\nenabled = true\nexpiry_time = \"P2Y\"\nrotate_before_expiry = \"P60D\"\n",
        "policy.toml",
    )
    .unwrap();
    assert!(policy.allows_remediation(RuleId::parse("key.rotation-policy").unwrap()));
    assert_eq!(
        policy.key_rotation_policy(),
        &RotationPolicySettings {
            expiry_time: "P2Y".into(),
            rotate_before_expiry: "P60D".into(),
            notify_before_expiry: "P30D".into(),
        }
    );
    let cases = [
        (
            "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"90 days\"\n",
            "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: `90 days` is not an ISO-8601 duration",
        ),
        (
            "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"PT12H\"\n",
            "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: `PT12H` is not an ISO-8601 duration",
        ),
        (
            "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"P3W\"\n",
            "policy.toml: line 2, key `remediation.\"key.rotation-policy\".expiry_time`: expiry_time must be at least 28 days",
        ),
        (
            "[remediation.\"key.rotation-policy\"]\nexpiry_time = \"P90D\"\nnotify_before_expiry = \"P3M\"\n",
            "policy.toml: line 3, key `remediation.\"key.rotation-policy\".notify_before_expiry`: notify_before_expiry must be at least 7 days and shorter than expiry_time (P90D)",
        ),
        (
            "[remediation.\"key.rotation-policy\"]\nrotate_before_expiry = \"P1D\"\n",
            "policy.toml: line 2, key `remediation.\"key.rotation-policy\".rotate_before_expiry`: rotate_before_expiry must be at least 7 days",
        ),
        (
            "[remediation.\"key.expiry\"]\nenabled = true\nexpiry_time = \"P1Y\"\n",
            "policy.toml: line 3, key `remediation.\"key.expiry\".expiry_time`: `expiry_time` applies only to remediation `key.rotation-policy`",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(
            message.starts_with(expected),
            "for {text:?}\n  got      {message}\n  expected {expected}…"
        );
    }
    assert_eq!(iso_duration_days("P1Y6M"), Some(545));
    assert_eq!(iso_duration_days("P2W"), Some(14));
    assert_eq!(iso_duration_days("P"), None);
    assert_eq!(iso_duration_days("P30"), None);
    assert_eq!(iso_duration_days("P1D1Y"), None);
}

#[test]
fn guard_visibility_can_be_neither_turned_off_nor_exempted() {
    let off = error("[rules.\"guard.visibility\"]\nenabled = false\n");
    assert!(
        off.starts_with("policy.toml: line 2, key `rules.\"guard.visibility\".enabled`: `guard.visibility` cannot be turned off"),
        "{off}"
    );
    let exempted = error(
        "[[exemptions]]\nrule = \"guard.visibility\"\nresource = \"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34\"\nreason = \"no access\"\n",
    );
    assert!(exempted.contains("cannot be exempted"), "{exempted}");
    // Its severity may still be set, and other rules may still be turned off.
    assert!(
        Policy::from_toml_str(
            "[rules.\"guard.visibility\"]\nseverity = \"critical\"\nenabled = true\n[rules.\"key.rotation-policy\"]\nenabled = false\n",
            "policy.toml"
        )
        .is_ok()
    );
}

#[test]
fn loading_a_missing_file_names_it() {
    let message = Policy::load(Path::new("/nonexistent/policy.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("cannot read the policy file /nonexistent/policy.toml"),
        "{message}"
    );
}
