use super::*;

#[test]
fn time_names_sort_like_times_and_parse_back() {
    let early = time::macros::datetime!(2026-11-28 09:00:00.5 UTC);
    let late = time::macros::datetime!(2026-11-28 10:00 UTC);
    let a = timed_name("audit", early).unwrap();
    let b = timed_name("audit", late).unwrap();
    assert!(a < b, "{a} {b}");
    assert_eq!(name_time(&a), Some(early));
    assert_eq!(name_time("attempts/abc/not-a-time"), None);
    assert!(nanos_text(time::macros::datetime!(1960-01-01 0:00 UTC)).is_err());
}

#[test]
fn scrubbing_removes_the_sas_even_outside_urls() {
    let secrets = sas_secrets("sv=1&sig=abc%2Bdef");
    assert_eq!(secrets, ["sv=1&sig=abc%2Bdef", "abc%2Bdef", "abc+def"]);
    let text = "request to http://127.0.0.1:1/a/b?sv=1&sig=abc%2Bdef failed; sig abc+def";
    let scrubbed = crate::text::redact(text, &secrets);
    assert!(!scrubbed.contains("abc"), "{scrubbed}");
    assert!(
        scrubbed.contains("http://127.0.0.1:1/a/b?[redacted]"),
        "{scrubbed}"
    );
}

#[test]
fn finding_names_are_fixed_length_and_grouped_by_workspace() {
    let key = FindingKey {
        workspace: "/subscriptions/s/resourceGroups/rg/providers/x/workspaces/ws".into(),
        rule: "vault.purge-protection".into(),
        resource: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
            .into(),
    };
    let name = finding_name(&key);
    assert_eq!(name.len(), "findings/".len() + 64 + 1 + 64);
    assert!(name.starts_with(&format!("findings/{}/", digest(&[&key.workspace]))));
}
