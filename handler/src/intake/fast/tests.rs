use super::*;
use crate::intake::{Invocation, RawEvent, classify, test_settings};
use serde_json::{Value, json};

const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

/// Why the general path refused a body.
#[derive(Debug, PartialEq)]
struct Refused(String);

/// What the general path answers: the event's id, type and subject and the verdict, or the
/// rejection.
fn general(body: &[u8], settings: &IntakeSettings) -> Result<String, Refused> {
    let refused = |r: Rejection| Refused(r.to_string());
    let mut invocation = Invocation::parse(body).map_err(refused)?;
    let (value, source) = invocation.take_binding("event").map_err(refused)?;
    if source != crate::intake::BindingSource::Named {
        return Err(Refused("another binding".into()));
    }
    let event = RawEvent::from_binding(value).map_err(refused)?;
    let classified = classify(&event, settings).map_err(refused)?;
    Ok(format!(
        "{} {} {:?} {classified:?}",
        event.id, event.event_type, event.subject
    ))
}

fn fast(body: &[u8], settings: &IntakeSettings) -> Option<String> {
    read_event(body, "event", settings).map(|event| {
        format!(
            "{} {} {:?} {:?}",
            event.id, event.event_type, event.subject, event.classified
        )
    })
}

/// The typed read answers exactly as the general path, or leaves the body to it.
fn same_or_left(body: &[u8]) -> bool {
    let mut decided = false;
    for settings in [test_settings(None), test_settings(Some(&[SUB]))] {
        let general = general(body, &settings);
        if let Some(fast) = fast(body, &settings) {
            assert_eq!(Ok(fast), general, "{}", String::from_utf8_lossy(body));
            decided = true;
        }
    }
    decided
}

fn envelope(event: &Value) -> Vec<u8> {
    json!({
        "Data": {"event": event},
        "Metadata": {"data": event.get("data"), "sys": {"MethodName": "OnSubscriptionEvent", "UtcNow": "2026-11-28T10:00:01.0131455Z", "RandGuid": "g"}}
    })
    .to_string()
    .into_bytes()
}

fn arm_event(operation: &str, resource: &str) -> Value {
    json!({
        "id": "e1", "topic": format!("/subscriptions/{SUB}"), "subject": resource,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00.1234567Z",
        "data": {"operationName": operation, "resourceUri": resource, "subscriptionId": SUB, "status": "Succeeded",
                 "correlationId": "c1", "authorization": {"scope": resource, "action": operation, "evidence": {"role": "Owner"}},
                 "httpRequest": {"clientRequestId": "r", "clientIpAddress": "10.0.0.1", "method": "PUT", "url": "https://x"},
                 "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "oid-1", "appid": "app-1", "aud": ["a"]}},
        "dataVersion": "2", "metadataVersion": "1"
    })
}

fn storage() -> Value {
    arm_event(
        "Microsoft.Storage/storageAccounts/write",
        &format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
        ),
    )
}

fn workspace() -> Value {
    arm_event(
        "Microsoft.MachineLearningServices/workspaces/write",
        &format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
        ),
    )
}

fn key_event(event_type: &str) -> Value {
    json!({
        "id": "k1", "topic": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"),
        "subject": "key1", "eventType": event_type, "eventTime": "2026-11-28T09:20:13Z",
        "data": {"Id": "https://kv1.vault.azure.net/keys/key1/0123456789abcdef0123456789abcdef", "VaultName": "kv1",
                 "ObjectType": "Key", "ObjectName": "key1", "Version": null, "NBF": 1766913611, "EXP": "1798449611"},
        "dataVersion": "1", "metadataVersion": "1"
    })
}

fn cloud_event() -> Value {
    let mut event = workspace();
    let object = event.as_object_mut().unwrap();
    let topic = object.remove("topic").unwrap();
    object.insert("source".into(), topic);
    let event_type = object.remove("eventType").unwrap();
    object.insert("type".into(), event_type);
    let time = object.remove("eventTime").unwrap();
    object.insert("time".into(), time);
    object.remove("dataVersion");
    object.remove("metadataVersion");
    object.insert("specversion".into(), json!("1.0"));
    event
}

#[test]
fn decides_the_usual_events_as_the_general_path_does() {
    let mut events = vec![storage(), workspace(), cloud_event()];
    for event_type in [
        "Microsoft.KeyVault.KeyNearExpiry",
        "Microsoft.KeyVault.KeyNewVersionCreated",
        "Microsoft.KeyVault.VaultAccessPolicyChanged",
        "Microsoft.KeyVault.SecretNewVersionCreated",
        "Microsoft.KeyVault.CertificateNearExpiry",
    ] {
        events.push(key_event(event_type));
    }
    let mut failed = storage();
    failed["eventType"] = json!("Microsoft.Resources.ResourceWriteFailure");
    let mut other_type = storage();
    other_type["eventType"] = json!("Microsoft.Storage.BlobCreated");
    let mut spec_version = cloud_event();
    let version = spec_version.as_object_mut().unwrap().remove("specversion");
    spec_version["specVersion"] = version.unwrap();
    let mut oid_only = workspace();
    oid_only["data"]["claims"] = json!({"oid": "oid-2", "azp": "app-2", "appid": 5});
    let mut escaped = workspace();
    escaped["id"] = json!("e\"1\u{e9}");
    events.extend([failed, other_type, spec_version, oid_only, escaped]);
    for event in &events {
        assert!(same_or_left(&envelope(event)), "left: {event}");
    }
    // Escapes in keys and values, and a body with no Metadata at all.
    let body = br#"{"D\u0061ta":{"ev\u0065nt":{"id":"e\u0031","eventType":"Microsoft.Resources.ResourceWriteSuccess","subject":"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1","data":{"operationN\u0061me":"Microsoft.MachineLearningServices/workspaces/write","claims":{"\u0061ppid":"app"}}}}}"#;
    assert!(same_or_left(body));
    let relevant = fast(&envelope(&workspace()), &test_settings(None)).unwrap();
    assert!(
        relevant.contains("Relevant") && relevant.contains("oid-1") && relevant.contains("app-1"),
        "{relevant}"
    );
    let ignored = fast(&envelope(&storage()), &test_settings(None)).unwrap();
    assert!(ignored.contains("cannot change a CMK chain"), "{ignored}");
}

#[test]
fn leaves_every_unusual_body_to_the_general_path() {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let event = storage();
    let mut variant = |edit: &dyn Fn(&mut Value)| {
        let mut event = event.clone();
        edit(&mut event);
        bodies.push(envelope(&event));
    };
    // Rejections, and shapes only the general path reads.
    variant(&|e| e["eventType"] = json!(5));
    variant(&|e| e["eventType"] = json!(null));
    variant(&|e| e["eventTime"] = json!("yesterday"));
    variant(&|e| {
        e.as_object_mut().unwrap().remove("id");
    });
    variant(&|e| e["data"] = json!(null));
    variant(&|e| e["data"] = json!("text"));
    variant(&|e| e["data"]["claims"] = json!(7));
    variant(&|e| e["data"]["claims"] = json!("{\"appid\":\"x\"}"));
    variant(&|e| e["data"]["authorization"] = json!("{\"scope\":\"/s\"}"));
    variant(&|e| e["data"]["authorization"]["evidence"] = json!([1]));
    variant(&|e| e["data"]["httpRequest"]["url"] = json!(1));
    variant(&|e| e["data"]["status"] = json!(true));
    variant(&|e| e["data"]["NBF"] = json!("soon"));
    variant(&|e| e["data"]["EXP"] = json!(1e300));
    variant(&|e| e["eventType"] = json!("Microsoft.Resources.ResourceBogusSuccess"));
    variant(&|e| e["specversion"] = json!("0.3"));
    variant(&|e| e["data_base64"] = json!("AA=="));
    variant(&|e| {
        e.as_object_mut().unwrap().remove("eventType");
    });
    variant(&|e| {
        let mut inner = e.clone();
        inner.as_object_mut().unwrap().remove("data");
        e["data"]["claims"] = json!({});
        *e = json!([inner]);
    });
    variant(&|e| *e = Value::String(e.to_string()));
    // Outside the allowlist: a rejection under one of the two settings.
    variant(&|e| e["data"]["subscriptionId"] = json!("00000000-0000-0000-0000-000000000001"));
    // Malformed JSON anywhere, and keys given twice.
    let good = String::from_utf8(envelope(&storage())).unwrap();
    bodies.extend([
        good.replacen(r#""Metadata":{"#, r#""Metadata":{"x":"\ud800","#, 1)
            .into_bytes(),
        good.replacen(r#""Data":{"#, r#""Data":{"other":[1,],"#, 1)
            .into_bytes(),
        good.replacen(
            r#""dataVersion":"2""#,
            r#""dataVersion":"2","id":"again""#,
            1,
        )
        .into_bytes(),
        good.replacen(
            r#""status":"Succeeded""#,
            r#""status":"Succeeded","status":"x""#,
            1,
        )
        .into_bytes(),
        good.replacen(
            r#""MethodName":"OnSubscriptionEvent""#,
            r#""MethodName":5"#,
            1,
        )
        .into_bytes(),
        good.replacen(r#""Data":{"event""#, r#""Data":{"eventGridEvent""#, 1)
            .into_bytes(),
        format!("{good} {{}}").into_bytes(),
        format!(
            r#"{{"Other":{}{}, {}"#,
            "[".repeat(200),
            "]".repeat(200),
            &good[1..]
        )
        .into_bytes(),
        good.replacen("Succeeded", "Succ\u{1}eeded", 1).into_bytes(),
        [&good.as_bytes()[..20], b"\xff", &good.as_bytes()[20..]].concat(),
    ]);
    for end in (1..good.len()).step_by(7) {
        bodies.push(good.as_bytes()[..end].to_vec());
    }
    for body in &bodies {
        for settings in [test_settings(None), test_settings(Some(&[SUB]))] {
            let general = general(body, &settings);
            match fast(body, &settings) {
                None => {}
                Some(fast) => {
                    assert_eq!(Ok(fast), general, "{}", String::from_utf8_lossy(body))
                }
            }
        }
    }
    // The ones the general path refuses are never decided here.
    let refused = bodies
        .iter()
        .filter(|body| general(body, &test_settings(None)).is_err())
        .count();
    assert!(refused > 30, "{refused}");
    for body in &bodies {
        if general(body, &test_settings(None)).is_err() {
            assert!(
                fast(body, &test_settings(None)).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
