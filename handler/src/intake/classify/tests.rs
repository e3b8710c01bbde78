use super::*;
use crate::intake::event::RawEvent;
use serde_json::json;

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
const OTHER_SUB: &str = "00000000-0000-0000-0000-000000000001";

fn settings(subscriptions: Option<&[&str]>) -> IntakeSettings {
    crate::intake::test_settings(subscriptions)
}

fn arm_event(event_type: &str, operation: &str, resource_uri: &str) -> RawEvent {
    RawEvent::from_binding(json!({
        "id": "e1", "topic": format!("/subscriptions/{SUB}"), "subject": resource_uri,
        "eventType": event_type, "eventTime": "2026-11-28T09:20:13Z",
        "data": {"operationName": operation, "resourceUri": resource_uri, "subscriptionId": SUB,
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "caller-1"}},
        "dataVersion": "2", "metadataVersion": "1"
    }))
    .unwrap()
}

fn key_event(event_type: &str, id: &str) -> RawEvent {
    RawEvent::from_binding(json!({
        "id": "k1", "topic": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"),
        "subject": "key1", "eventType": event_type, "eventTime": "2026-11-28T09:20:13Z",
        "data": {"Id": id, "VaultName": "kv1", "ObjectType": "Key", "ObjectName": "key1", "Version": null, "NBF": null, "EXP": "1798449611"},
        "dataVersion": "1", "metadataVersion": "1"
    }))
    .unwrap()
}

fn relevant(result: Result<Classified, Rejection>) -> Trigger {
    match result {
        Ok(Classified::Relevant(trigger)) => *trigger,
        other => panic!("expected relevant, got {other:?}"),
    }
}

#[test]
fn every_listed_operation_is_relevant() {
    for (operation, kind) in RELEVANT_OPERATIONS {
        let resource = match kind {
            ResourceKind::ProviderRegistration => format!(
                "/subscriptions/{SUB}/providers/{}",
                operation.split('/').next().unwrap()
            ),
            ResourceKind::ResourceGroup => format!("/subscriptions/{SUB}/resourceGroups/rg1"),
            ResourceKind::DeletedVault => format!(
                "/subscriptions/{SUB}/providers/Microsoft.KeyVault/locations/westus/deletedVaults/kv1"
            ),
            _ => format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
            ),
        };
        let verb = if operation.ends_with("/delete") {
            "Delete"
        } else if operation.ends_with("/action") {
            "Action"
        } else {
            "Write"
        };
        let trigger = relevant(classify(
            &arm_event(
                &format!("Microsoft.Resources.Resource{verb}Success"),
                &operation.to_lowercase(),
                &resource,
            ),
            &settings(None),
        ));
        assert!(
            matches!(trigger.target, Target::Arm { kind: k, .. } if k == *kind),
            "{operation}"
        );
        assert_eq!(trigger.caller_object_id.as_deref(), Some("caller-1"));
    }
}

#[test]
fn the_vault_is_the_target_of_an_access_policy_change() {
    let uri = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1/accessPolicies/add"
    );
    let trigger = relevant(classify(
        &arm_event(
            "Microsoft.Resources.ResourceWriteSuccess",
            "Microsoft.KeyVault/vaults/accessPolicies/write",
            &uri,
        ),
        &settings(None),
    ));
    let Target::Arm { id, .. } = trigger.target else {
        panic!()
    };
    assert!(id.is_type("Microsoft.KeyVault/vaults"));
    assert_eq!(id.name(), "kv1");
}

#[test]
fn writes_in_the_managed_resource_group_are_relevant() {
    let uri = format!(
        "/subscriptions/{SUB}/resourceGroups/azureml-rg-ws1_0a1b/providers/Microsoft.Storage/storageAccounts/st1"
    );
    let trigger = relevant(classify(
        &arm_event(
            "Microsoft.Resources.ResourceDeleteSuccess",
            "Microsoft.Storage/storageAccounts/delete",
            &uri,
        ),
        &settings(None),
    ));
    assert!(matches!(
        trigger.target,
        Target::Arm {
            kind: ResourceKind::ManagedResourceGroupMember,
            ..
        }
    ));
    let outside = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
    );
    assert!(matches!(
        classify(
            &arm_event(
                "Microsoft.Resources.ResourceDeleteSuccess",
                "Microsoft.Storage/storageAccounts/delete",
                &outside
            ),
            &settings(None)
        ),
        Ok(Classified::Ignored(_))
    ));
}

#[test]
fn writes_in_a_learned_managed_resource_group_of_any_name_are_relevant() {
    let uri = |group: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/st1"
        )
    };
    let delete = |group: &str| {
        arm_event(
            "Microsoft.Resources.ResourceDeleteSuccess",
            "Microsoft.Storage/storageAccounts/delete",
            &uri(group),
        )
    };
    let settings = settings(Some(&[SUB]));
    assert!(matches!(
        classify(&delete("contoso-ml-managed"), &settings),
        Ok(Classified::Ignored(_))
    ));
    // A sweep or an evaluation read the workspace naming it (the setting is shared).
    settings.managed_groups.clone().learn("Contoso-ML-Managed");
    let trigger = relevant(classify(&delete("CONTOSO-ML-MANAGED"), &settings));
    assert!(matches!(
        trigger.target,
        Target::Arm {
            kind: ResourceKind::ManagedResourceGroupMember,
            ..
        }
    ));
    assert!(matches!(
        classify(&delete("contoso-ml-managed-2"), &settings),
        Ok(Classified::Ignored(_))
    ));
    // Still only in scope: the same name in another subscription is refused.
    let elsewhere = uri("contoso-ml-managed").replace(SUB, OTHER_SUB);
    let event = arm_event(
        "Microsoft.Resources.ResourceDeleteSuccess",
        "Microsoft.Storage/storageAccounts/delete",
        &elsewhere,
    );
    assert!(classify(&event, &settings).is_err());
}

#[test]
fn failures_and_cancels_are_ignored() {
    let uri =
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1");
    for event_type in [
        "Microsoft.Resources.ResourceWriteFailure",
        "Microsoft.Resources.ResourceDeleteCancel",
    ] {
        let result = classify(
            &arm_event(event_type, "Microsoft.KeyVault/vaults/write", &uri),
            &settings(None),
        );
        assert!(
            matches!(result, Ok(Classified::Ignored(reason)) if reason.contains("nothing changed"))
        );
    }
}

#[test]
fn key_events_target_the_key_and_its_vault() {
    let trigger = relevant(classify(
        &key_event(
            "Microsoft.KeyVault.KeyNearExpiry",
            "https://kv1.vault.azure.net/keys/key1/4d8a2f6c1e9b47a3b5c0d7e2f8a1c6b9",
        ),
        &settings(Some(&[SUB])),
    ));
    assert_eq!(trigger.change, ChangeKind::KeyNearExpiry);
    let Target::Key { key, vault } = trigger.target else {
        panic!()
    };
    assert_eq!(key.name(), "key1");
    assert_eq!(vault.name(), "kv1");
}

#[test]
fn a_key_on_a_foreign_host_is_rejected() {
    for id in [
        "https://kv1.vault.evil.example/keys/key1",
        "https://kv2.vault.azure.net/keys/key1",
    ] {
        let err = classify(
            &key_event("Microsoft.KeyVault.KeyExpired", id),
            &settings(None),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("data.Id:"), "{err}");
    }
}

#[test]
fn out_of_scope_subscriptions_are_rejected_even_when_irrelevant() {
    let uri = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
    );
    let event = arm_event(
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Storage/storageAccounts/write",
        &uri,
    );
    let err = classify(&event, &settings(Some(&[OTHER_SUB]))).unwrap_err();
    assert!(
        err.to_string().contains("not in CMKGUARD_SUBSCRIPTIONS"),
        "{err}"
    );
    assert!(matches!(
        classify(&event, &settings(Some(&[SUB]))),
        Ok(Classified::Ignored(_))
    ));
}

#[test]
fn secrets_certificates_and_others_are_ignored() {
    let secret = key_event(
        "Microsoft.KeyVault.SecretNewVersionCreated",
        "https://kv1.vault.azure.net/secrets/s/1",
    );
    assert!(
        matches!(classify(&secret, &settings(None)), Ok(Classified::Ignored(r)) if r.contains("secrets"))
    );
    let other = RawEvent::from_binding(
        json!({"id":"1","source":"/x","specversion":"1.0","type":"Contoso.Thing","data":{}}),
    )
    .unwrap();
    assert!(matches!(
        classify(&other, &settings(None)),
        Ok(Classified::Ignored(_))
    ));
}
