use super::*;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

#[test]
fn subscription_ids_must_be_guids() {
    assert_eq!(
        SubscriptionId::parse(&SUB.to_uppercase()).unwrap().as_str(),
        SUB
    );
    for bad in [
        "",
        "{subscription-id}",
        "3f7b2c1d8e4a4b6f9c2d5a1e0f9b7c34",
        "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c3g",
    ] {
        assert!(SubscriptionId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_guid_is_five_groups_of_8_4_4_4_12_hex_digits() {
    assert!(is_guid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
    assert!(is_guid("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"));
    for not in [
        "",
        "-",
        "0f1e2d3c-4b5a-6978-8796",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-00",
        "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
        "0f1e2d3-c4b5a-6978-8796-a5b4c3d2e1f0",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 ",
    ] {
        assert!(!is_guid(not), "{not:?}");
    }
}

#[test]
fn parses_resources_children_and_extensions() {
    let ws = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1/onlineEndpoints/ep"
    ))
    .unwrap();
    assert_eq!(
        ws.resource_type(),
        "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
    );
    assert_eq!(ws.name(), "ep");
    assert_eq!(ws.resource_group(), Some("rg"));
    assert_eq!(
        ws.top_level_resource().unwrap().as_str(),
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
        )
    );

    let ra = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/a1"
    ))
    .unwrap();
    assert!(ra.is_type("microsoft.authorization/roleassignments"));
    assert!(ra.scope().unwrap().is_type("Microsoft.KeyVault/vaults"));
    let at_subscription = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/a1"
    ))
    .unwrap();
    assert!(
        at_subscription
            .scope()
            .unwrap()
            .is_type("Microsoft.Resources/subscriptions")
    );

    let provider = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.KeyVault"
    ))
    .unwrap();
    assert_eq!(provider.resource_type(), "Microsoft.Resources/providers");
    assert_eq!(provider.name(), "Microsoft.KeyVault");

    let rg = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws_1/"
    ))
    .unwrap();
    assert_eq!(rg.resource_type(), "Microsoft.Resources/resourceGroups");
    assert_eq!(rg.name(), "azureml-rg-ws_1");
}

#[test]
fn ids_compare_case_insensitively() {
    let a = ArmResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV"
    ))
    .unwrap();
    let b = ArmResourceId::parse(&format!(
        "/SUBSCRIPTIONS/{SUB}/resourcegroups/rg/providers/microsoft.keyvault/vaults/kv"
    ))
    .unwrap();
    assert_eq!(a, b);
    let mut set = std::collections::HashSet::new();
    set.insert(a);
    assert!(set.contains(&b));
}

#[test]
fn rejects_ids_too_long_to_be_real() {
    let prefix = format!("/subscriptions/{SUB}/resourceGroups/");
    let longest = format!("{prefix}{}", "r".repeat(MAX_ARM_ID_BYTES - prefix.len()));
    assert!(ArmResourceId::parse(&longest).is_ok());
    let err = ArmResourceId::parse(&format!("{longest}r"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 4096"), "{err}");
    assert!(err.len() < 1024, "{}", err.len());
}

#[test]
fn rejects_malformed_ids_with_a_reason() {
    for (bad, why) in [
        ("subscriptions/x", "must start"),
        (
            "/subscriptions/{subscription-id}/resourceGroups/rg",
            "not a GUID",
        ),
        (
            &format!("/subscriptions/{SUB}/resourceGroups"),
            "resource group name is missing",
        ),
        (
            &format!("/subscriptions/{SUB}/foo/bar"),
            "expected `providers`",
        ),
        (
            &format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults"),
            "name after `vaults`",
        ),
        (
            &format!("/subscriptions/{SUB}//resourceGroups/rg"),
            "empty segment",
        ),
    ] {
        let err = ArmResourceId::parse(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn rejects_ids_that_a_url_would_read_differently() {
    const OTHER: &str = "00000000-0000-0000-0000-00000000000b";
    let tail = "resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv";
    for bad in [
        format!("/subscriptions/{SUB}/../{OTHER}/{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/../../{OTHER}/{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/./{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/%2e%2e/%2E%2E/{OTHER}/{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/.%2e/x/{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/rg%2F..%2F..%2F{OTHER}/{tail}"),
        format!("/subscriptions/{SUB}/resourceGroups/rg\\..\\..\\{OTHER}/{tail}"),
        format!("/subscriptions/{SUB}\\..\\{OTHER}/{tail}"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv?x=1"
        ),
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv#f"),
        format!("/subscriptions/{SUB}/resourceGroups/r g/providers/Microsoft.KeyVault/vaults/kv"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg\u{0}/providers/Microsoft.KeyVault/vaults/kv"
        ),
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg\u{202e}/providers/Microsoft.KeyVault/vaults/kv"
        ),
        format!("/subscriptions/{SUB}/resourceGroups/rg;/providers/Microsoft.KeyVault/vaults/kv"),
        format!("/subscriptions/{SUB}/resourceGroups/.../providers/Microsoft.KeyVault/vaults/kv"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/subscriptions/{OTHER}/{tail}"
        ),
        format!(
            "/subscriptions/{SUB}/resourceGroups/x/providers/Microsoft.Resources/deployments/d/SUBSCRIPTIONS/{OTHER}/{tail}"
        ),
        format!("/subscriptions/{SUB}/providers/Microsoft.KeyVault/vaults/kv/resourcegroups/rg"),
    ] {
        let err = ArmResourceId::parse(&bad).expect_err(&bad).to_string();
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
    // What ARM names do hold stays accepted: dots inside names, parentheses, other scripts.
    for good in [
        format!("/subscriptions/{SUB}/resourceGroups/rg.prod_(eu)-1"),
        format!("/subscriptions/{SUB}/resourceGroups/Ressourcengruppe-Ä"),
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv.1"),
    ] {
        assert!(ArmResourceId::parse(&good).is_ok(), "{good}");
    }
}

#[test]
fn parses_key_urls() {
    let key = KeyUrl::parse("https://kv-mlw-cmk-prod.vault.azure.net:443/keys/mlw-cmk-key/4D8A2F6C1E9B47A3B5C0D7E2F8A1C6B9").unwrap();
    assert_eq!(key.vault_name(), "kv-mlw-cmk-prod");
    assert_eq!(key.name(), "mlw-cmk-key");
    assert_eq!(key.version(), Some("4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9"));
    assert!(key.is_under("vault.azure.net"));
    assert!(!key.is_under("vault.azure.cn"));
    assert_eq!(
        key.to_string(),
        "https://kv-mlw-cmk-prod.vault.azure.net/keys/mlw-cmk-key/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9"
    );
    assert_eq!(
        KeyUrl::parse("https://kv1.vault.azure.net/keys/k/")
            .unwrap()
            .version(),
        None
    );
}

#[test]
fn a_lookalike_host_is_not_under_the_suffix() {
    let key = KeyUrl::parse("https://kv1.evilvault.azure.net/keys/k").unwrap();
    assert!(!key.is_under("vault.azure.net"));
    let key = KeyUrl::parse("https://kv1.vault.azure.net.evil.com/keys/k").unwrap();
    assert!(!key.is_under("vault.azure.net"));
}

#[test]
fn rejects_bad_key_urls() {
    for bad in [
        "http://kv1.vault.azure.net/keys/k",
        "https://kv1.vault.azure.net:8443/keys/k",
        "https://kv1.vault.azure.net/secrets/s/0123",
        "https://kv1.vault.azure.net/keys/k/not-a-version",
        "https://user:pw@kv1.vault.azure.net/keys/k",
        "https://localhost/keys/k",
        "not a url",
    ] {
        assert!(KeyUrl::parse(bad).is_err(), "{bad}");
    }
}
