//! Access tokens: JWT-shaped (`header.payload.signature`, base64url) with the claims Entra puts
//! in managed-identity tokens (`aud`, `iss`, `iat`, `nbf`, `exp`, `appid`, `oid`, `sub`, `tid`,
//! `uti`, `ver`, `xms_mirid`). They are signed with an HMAC key that lives only in this process,
//! so ARM and Key Vault accept exactly the tokens this simulator issued.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

/// Token lifetime, like managed-identity tokens (24 hours).
pub const LIFETIME_SECONDS: i64 = 24 * 3600;

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Object id (`oid`).
    pub object_id: String,
    /// Client id (`appid`).
    pub client_id: String,
    /// Managed identity resource id (`xms_mirid`), if any.
    pub mi_resource_id: Option<String>,
}

/// The validated claims of a presented token.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `oid`.
    pub object_id: String,
    /// `appid`.
    pub client_id: String,
    /// `tid`.
    pub tenant_id: String,
    /// `aud`.
    pub audience: String,
    /// All claims as issued.
    pub raw: Value,
}

/// Why a presented token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url JSON parts.
    #[error("malformed token")]
    Malformed,
    /// Not signed by this simulator.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

/// Issues and verifies tokens.
pub struct TokenIssuer {
    key: hmac::Key,
    tenant_id: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// A new issuer with a random signing key.
    pub fn new(tenant_id: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes()));
        Self {
            key,
            tenant_id: tenant_id.to_owned(),
        }
    }

    /// Issues a token for `subject` with audience `resource` at time `now`; returns it with its `exp`.
    pub fn issue(&self, subject: &Subject, resource: &str, now: i64) -> (String, i64) {
        let exp = now + LIFETIME_SECONDS;
        let issuer = format!("https://sts.windows.net/{}/", self.tenant_id);
        let mut claims = json!({
            "aud": resource,
            "iss": issuer,
            "iat": now,
            "nbf": now - 300,
            "exp": exp,
            "aio": "azure-sim",
            "appid": subject.client_id,
            "appidacr": "2",
            "idp": issuer,
            "idtyp": "app",
            "oid": subject.object_id,
            "sub": subject.object_id,
            "tid": self.tenant_id,
            "uti": URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
            "ver": "1.0",
        });
        if let (Some(mirid), Some(obj)) = (&subject.mi_resource_id, claims.as_object_mut()) {
            obj.insert("xms_mirid".to_owned(), json!(mirid));
        }
        let header = json!({"typ": "JWT", "alg": "HS256", "kid": "azure-sim"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = hmac::sign(&self.key, signing_input.as_bytes());
        (
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.as_ref())
            ),
            exp,
        )
    }

    /// Verifies signature and lifetime; the audience is the caller's to check.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(
            &self.key,
            format!("{header}.{payload}").as_bytes(),
            &signature,
        )
        .map_err(|_| TokenError::BadSignature)?;
        let raw: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        let int = |name: &str| raw.get(name).and_then(Value::as_i64).unwrap_or(0);
        if int("exp") <= now {
            return Err(TokenError::Expired);
        }
        if int("nbf") > now {
            return Err(TokenError::NotYetValid);
        }
        let text = |name: &str| {
            raw.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Claims {
            object_id: text("oid"),
            client_id: text("appid"),
            tenant_id: text("tid"),
            audience: text("aud"),
            raw,
        })
    }
}

/// Audience check: the resource a token was requested for, ignoring one trailing slash.
pub fn audience_is(audience: &str, accepted: &[&str]) -> bool {
    let a = audience.trim_end_matches('/');
    accepted
        .iter()
        .any(|x| a.eq_ignore_ascii_case(x.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            object_id: "oid-1".into(),
            client_id: "cid-1".into(),
            mi_resource_id: None,
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_claims() {
        let issuer = TokenIssuer::new("tid-1");
        let (token, exp) = issuer.issue(&subject(), "https://vault.azure.net", 1000);
        assert_eq!(exp, 1000 + LIFETIME_SECONDS);
        let claims = issuer.verify(&token, 1001).unwrap();
        assert_eq!(claims.object_id, "oid-1");
        assert_eq!(claims.tenant_id, "tid-1");
        assert!(audience_is(&claims.audience, &["https://vault.azure.net/"]));
    }

    #[test]
    fn foreign_tampered_and_expired_tokens_fail() {
        let issuer = TokenIssuer::new("t");
        let (token, exp) = issuer.issue(&subject(), "aud", 1000);
        assert_eq!(issuer.verify(&token, exp).err(), Some(TokenError::Expired));
        let other = TokenIssuer::new("t");
        assert_eq!(
            other.verify(&token, 1001).err(),
            Some(TokenError::BadSignature)
        );
        assert_eq!(
            issuer.verify("abc", 1001).err(),
            Some(TokenError::Malformed)
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"oid":"x","exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(
            issuer.verify(&parts.join("."), 1001).err(),
            Some(TokenError::BadSignature)
        );
    }
}
