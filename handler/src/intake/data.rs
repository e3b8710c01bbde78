//! The typed `data` of the events cmk-guard reads: the `Microsoft.Resources.*` events of
//! subscription and resource-group topics (camelCase) and the `Microsoft.KeyVault.*` events
//! (PascalCase, with `NBF`/`EXP` as a number, a numeric string or null).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// The claim that holds the caller's object id in ARM events.
pub(super) const OBJECT_ID_CLAIM: &str =
    "http://schemas.microsoft.com/identity/claims/objectidentifier";
/// The claim that holds a person's sign-in name in ARM events.
pub(super) const UPN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";

/// `data` of `Microsoft.Resources.Resource{Write,Delete,Action}{Success,Failure,Cancel}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceEventData {
    #[serde(default, deserialize_with = "object_or_json_text")]
    pub authorization: Option<Authorization>,
    /// JWT claims of the caller; keys are often URIs.
    #[serde(default, deserialize_with = "object_or_json_text")]
    pub claims: Option<Map<String, Value>>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Only present when an existing resource was updated or deleted.
    #[serde(default, deserialize_with = "object_or_json_text")]
    pub http_request: Option<HttpRequest>,
    #[serde(default)]
    pub resource_provider: Option<String>,
    #[serde(default)]
    pub resource_uri: Option<String>,
    #[serde(default)]
    pub operation_name: Option<String>,
    /// Not trustworthy: the official Failure/Cancel samples say `Succeeded` (azure-notes Trap H12).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl ResourceEventData {
    /// The caller's application id, from the `appid` (v1) or `azp` (v2) claim.
    pub fn caller_app_id(&self) -> Option<&str> {
        let claims = self.claims.as_ref()?;
        ["appid", "azp"]
            .iter()
            .find_map(|key| claims.get(*key).and_then(Value::as_str))
    }

    /// The caller's sign-in name (the `upn` claim), else its display `name`.
    pub fn caller_name(&self) -> Option<&str> {
        let claims = self.claims.as_ref()?;
        [UPN_CLAIM, "name"]
            .iter()
            .find_map(|key| claims.get(*key).and_then(Value::as_str))
    }

    /// The caller's object id, from the `objectidentifier` claim (or a bare `oid`).
    pub fn caller_object_id(&self) -> Option<&str> {
        let claims = self.claims.as_ref()?;
        [OBJECT_ID_CLAIM, "oid"]
            .iter()
            .find_map(|key| claims.get(*key).and_then(Value::as_str))
    }
}

/// `data.authorization`: who was allowed to do what, and why.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub evidence: Option<Map<String, Value>>,
}

/// `data.httpRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    #[serde(default)]
    pub client_request_id: Option<String>,
    #[serde(default)]
    pub client_ip_address: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// `data` of every `Microsoft.KeyVault.*` event.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyVaultEventData {
    /// The object URL including its version (for vault events, the vault URL).
    #[serde(rename = "Id", alias = "id")]
    pub id: String,
    #[serde(rename = "VaultName", alias = "vaultName", default)]
    pub vault_name: Option<String>,
    #[serde(rename = "ObjectType", alias = "objectType", default)]
    pub object_type: Option<String>,
    #[serde(rename = "ObjectName", alias = "objectName", default)]
    pub object_name: Option<String>,
    #[serde(rename = "Version", alias = "version", default)]
    pub version: Option<String>,
    /// Not-before, seconds since 1970.
    #[serde(
        rename = "NBF",
        alias = "nbf",
        default,
        deserialize_with = "unix_seconds"
    )]
    pub not_before: Option<i64>,
    /// Expiry, seconds since 1970.
    #[serde(
        rename = "EXP",
        alias = "exp",
        default,
        deserialize_with = "unix_seconds"
    )]
    pub expires: Option<i64>,
}

/// Accepts an object, JSON text holding one, or null (older publishers encode these as text).
fn object_or_json_text<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            D::Error::custom(format!("expected an object or JSON text holding one ({e})"))
        }),
        value @ Value::Object(_) => T::deserialize(value).map(Some).map_err(D::Error::custom),
        _ => Err(D::Error::custom(
            "expected an object or JSON text holding one",
        )),
    }
}

/// Accepts `1559081980`, `"1559081980"` or null (azure-notes Trap H11).
fn unix_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    const EXPECTED: &str = "expected seconds since 1970 as a number, a numeric string or null";
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(seconds), _) => Ok(Some(seconds)),
            (None, Some(seconds))
                if seconds.is_finite() && seconds.fract() == 0.0 && seconds.abs() < 1e15 =>
            {
                Ok(Some(seconds as i64))
            }
            _ => Err(D::Error::custom(format!("{EXPECTED}, got {number}"))),
        },
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
            D::Error::custom(format!("{EXPECTED}, got \"{}\"", crate::text::field(&text)))
        }),
        other => Err(D::Error::custom(format!(
            "{EXPECTED}, got {}",
            super::kind_of(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::event::deserialize;
    use serde_json::json;

    #[test]
    fn key_vault_times_in_every_form() {
        for (nbf, expected) in [
            (json!(1559081980), Some(1559081980)),
            (json!("1559081980"), Some(1559081980)),
            (json!(null), None),
            (json!(1.5e9), Some(1_500_000_000)),
        ] {
            let data: KeyVaultEventData = deserialize(
                "data",
                json!({"Id":"https://kv.vault.azure.net/keys/k/v","NBF":nbf}),
            )
            .unwrap();
            assert_eq!(data.not_before, expected);
            assert_eq!(data.expires, None);
        }
        let err =
            deserialize::<KeyVaultEventData>("data", json!({"Id":"x","EXP":"soon"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data.EXP: expected seconds since 1970"),
            "{err}"
        );
        let err = deserialize::<KeyVaultEventData>("data", json!({"VaultName":"kv"})).unwrap_err();
        assert!(err.to_string().contains("missing field `Id`"), "{err}");
    }

    #[test]
    fn arm_sub_objects_as_objects_or_text() {
        let claims =
            json!({"http://schemas.microsoft.com/identity/claims/objectidentifier": "oid-1"});
        for form in [claims.clone(), Value::String(claims.to_string())] {
            let data: ResourceEventData = deserialize(
                "data",
                json!({"claims": form, "authorization": "{\"scope\":\"/s\",\"action\":\"a/write\"}", "httpRequest": null, "operationName": "a/write"}),
            )
            .unwrap();
            assert_eq!(data.caller_object_id(), Some("oid-1"));
            assert_eq!(
                data.authorization.unwrap().action.as_deref(),
                Some("a/write")
            );
        }
        let err = deserialize::<ResourceEventData>("data", json!({"claims": 7})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data.claims: expected an object"),
            "{err}"
        );
        let err =
            deserialize::<ResourceEventData>("data", json!({"claims": "{broken"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("data.claims: expected an object or JSON text"),
            "{err}"
        );
    }
}
