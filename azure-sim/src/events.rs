//! The Event Grid events Azure emits for writes, in the Event Grid schema, so tests can replay
//! them into the handler: `Microsoft.Resources.ResourceWriteSuccess` (and Delete/Action) for
//! ARM writes on the subscription topic, and the Key Vault system-topic events for data-plane
//! writes (`KeyNewVersionCreated`) and access-policy changes (`VaultAccessPolicyChanged`).

use crate::clock::rfc3339_now;
use crate::ids::{ArmIdParts, random_uuid};
use serde_json::{Map, Value, json};

/// Who performed a write, as the event's `claims` and `authorization.evidence` show it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Object id (`http://schemas.microsoft.com/identity/claims/objectidentifier`).
    pub object_id: String,
    /// Client id (`appid`).
    pub client_id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// The token's claims, if the write came through the API with a token.
    pub token_claims: Option<Value>,
    /// Role shown in `authorization.evidence.role`.
    pub role: String,
}

/// The ARM resource event kinds.
#[derive(Debug, Clone, Copy)]
pub enum ResourceEventKind {
    /// `Microsoft.Resources.ResourceWriteSuccess`.
    Write,
    /// `Microsoft.Resources.ResourceDeleteSuccess`.
    Delete,
    /// `Microsoft.Resources.ResourceActionSuccess`.
    Action,
}

impl ResourceEventKind {
    fn event_type(self) -> &'static str {
        match self {
            ResourceEventKind::Write => "Microsoft.Resources.ResourceWriteSuccess",
            ResourceEventKind::Delete => "Microsoft.Resources.ResourceDeleteSuccess",
            ResourceEventKind::Action => "Microsoft.Resources.ResourceActionSuccess",
        }
    }
}

fn claims(actor: &Actor) -> Value {
    let raw = actor.token_claims.clone().unwrap_or(Value::Null);
    let text = |name: &str, default: String| -> String {
        match raw.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => default,
        }
    };
    let now = crate::clock::now_unix();
    let mut c = Map::new();
    c.insert(
        "aud".into(),
        json!(text("aud", "https://management.core.windows.net/".into())),
    );
    c.insert(
        "iss".into(),
        json!(text(
            "iss",
            format!("https://sts.windows.net/{}/", actor.tenant_id)
        )),
    );
    c.insert("iat".into(), json!(text("iat", now.to_string())));
    c.insert("nbf".into(), json!(text("nbf", now.to_string())));
    c.insert("exp".into(), json!(text("exp", (now + 3600).to_string())));
    c.insert("aio".into(), json!(text("aio", "azure-sim".into())));
    c.insert("appid".into(), json!(actor.client_id));
    c.insert("appidacr".into(), json!(text("appidacr", "2".into())));
    c.insert(
        "http://schemas.microsoft.com/identity/claims/identityprovider".into(),
        json!(text(
            "idp",
            format!("https://sts.windows.net/{}/", actor.tenant_id)
        )),
    );
    c.insert(
        "http://schemas.microsoft.com/identity/claims/objectidentifier".into(),
        json!(actor.object_id),
    );
    c.insert(
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier".into(),
        json!(actor.object_id),
    );
    c.insert(
        "http://schemas.microsoft.com/identity/claims/tenantid".into(),
        json!(actor.tenant_id),
    );
    c.insert("uti".into(), json!(text("uti", random_uuid())));
    c.insert("ver".into(), json!("1.0"));
    if let Some(mirid) = raw.get("xms_mirid") {
        c.insert("xms_mirid".into(), mirid.clone());
    }
    Value::Object(c)
}

/// A `Microsoft.Resources.Resource*Success` event for `resource_uri` and `operation_name`.
pub fn resource_event(
    kind: ResourceEventKind,
    resource_uri: &str,
    operation_name: &str,
    actor: &Actor,
) -> Value {
    let parts = ArmIdParts::parse(resource_uri);
    let subscription = parts
        .as_ref()
        .map(|p| p.subscription.clone())
        .or_else(|| {
            let segs: Vec<&str> = resource_uri.split('/').filter(|s| !s.is_empty()).collect();
            segs.iter()
                .position(|s| s.eq_ignore_ascii_case("subscriptions"))
                .and_then(|i| segs.get(i + 1))
                .map(|s| (*s).to_owned())
        })
        .unwrap_or_default();
    let provider = operation_name.split('/').next().unwrap_or_default();
    json!({
        "subject": resource_uri,
        "eventType": kind.event_type(),
        "eventTime": rfc3339_now(),
        "id": random_uuid(),
        "data": {
            "authorization": {
                "scope": resource_uri,
                "action": operation_name,
                "evidence": {
                    "role": actor.role,
                    "principalId": actor.object_id,
                    "principalType": "ServicePrincipal",
                }
            },
            "claims": claims(actor),
            "correlationId": random_uuid(),
            "resourceProvider": provider,
            "resourceUri": resource_uri,
            "operationName": operation_name,
            "status": "Succeeded",
            "subscriptionId": subscription,
            "tenantId": actor.tenant_id,
        },
        "dataVersion": "2",
        "metadataVersion": "1",
        "topic": format!("/subscriptions/{subscription}"),
    })
}

/// A Key Vault system-topic event (`Microsoft.KeyVault.{event}`) in the Event Grid schema.
#[derive(Debug, Clone)]
pub struct KeyVaultEvent<'a> {
    /// Event name without the prefix, e.g. `KeyNewVersionCreated`.
    pub event: &'a str,
    /// The vault's ARM id (the topic).
    pub vault_id: &'a str,
    /// Vault name.
    pub vault_name: &'a str,
    /// `Key`, `Secret`, `Certificate` or `Vault`.
    pub object_type: &'a str,
    /// Object name (the subject).
    pub object_name: &'a str,
    /// Object URL.
    pub id: &'a str,
    /// Object version.
    pub version: Option<&'a str>,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `exp`.
    pub exp: Option<i64>,
}

impl KeyVaultEvent<'_> {
    /// The event JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "id": random_uuid(),
            "topic": self.vault_id,
            "subject": self.object_name,
            "eventType": format!("Microsoft.KeyVault.{}", self.event),
            "eventTime": rfc3339_now(),
            "data": {
                "Id": self.id,
                "VaultName": self.vault_name,
                "ObjectType": self.object_type,
                "ObjectName": self.object_name,
                "Version": self.version,
                "NBF": self.nbf,
                "EXP": self.exp,
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        })
    }
}
