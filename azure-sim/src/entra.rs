//! Entra ID's token endpoint for workload identity federation: `POST /{tenant}/oauth2/v2.0/token`
//! with `grant_type=client_credentials`,
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a
//! `client_assertion` JWT from another issuer (GitHub Actions, Azure Pipelines, Kubernetes).
//! As Entra does, the assertion must be within its lifetime and its issuer, subject and
//! audience must equal one of the app's federated identity credentials exactly; the token then
//! issued is the app's service principal's, so its role assignments apply.
//!
//! Errors have Entra's body (`error`, `error_description` starting with the `AADSTS` code,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`) and codes:
//! AADSTS700016 (no such application), AADSTS50027 (malformed assertion), AADSTS700024
//! (assertion outside its valid time range), AADSTS70021 (no matching federated identity
//! record). Not simulated: the assertion's signature (Entra checks it against the issuer's
//! published keys; the simulator has none to fetch), client secrets and certificates.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::http::{Ctx, Reply, Route};
use crate::token::{Claims, Subject};

/// The only assertion type accepted.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an issued token lasts, in seconds (Entra: about an hour).
const EXPIRES_IN: i64 = 3599;

/// `/{tenant}/oauth2/v2.0/token`.
pub fn is_token_path(ctx: &Ctx) -> bool {
    ctx.segs.len() == 4
        && ctx.seg_is(1, "oauth2")
        && ctx.seg_is(2, "v2.0")
        && ctx.seg_is(3, "token")
}

/// The token operation (any method: a GET is refused by the handler, as Entra does).
pub fn route(_ctx: &Ctx) -> Route {
    Route {
        operation: "Entra_Token",
        resource: None,
        handler: token,
        action: None,
    }
}

/// Entra's error body: `status`, the OAuth `error`, the AADSTS number and its message.
fn entra_error(status: u16, error: &str, code: u32, message: &str) -> Reply {
    let trace_id = crate::ids::random_uuid();
    let correlation_id = crate::ids::random_uuid();
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default();
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn token(ctx: &mut Ctx) -> Reply {
    if ctx.method != "POST" {
        return entra_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let form = crate::http::parse_query(&String::from_utf8_lossy(&ctx.body));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let tenant_id = ctx.tenant().tenant_id.clone();
    if !ctx.segs[0].eq_ignore_ascii_case(&tenant_id) {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{}' not found.", ctx.segs[0]),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = field("client_id") else {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = field("scope") else {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let app = ctx
        .tenant()
        .federated_apps
        .iter()
        .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        .cloned();
    let Some(app) = app else {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_id}'."
            ),
        );
    };
    if field("client_assertion_type") != Some(JWT_BEARER) {
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    let Some(assertion) = field("client_assertion").and_then(claims_of) else {
        return entra_error(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        );
    };
    let number = |name: &str| assertion.get(name).and_then(Value::as_i64);
    let (not_before, expires) = (number("nbf").or(number("iat")), number("exp"));
    // Entra allows five minutes of clock skew.
    let valid = expires.is_some_and(|exp| ctx.now < exp + 300)
        && not_before.is_none_or(|nbf| ctx.now + 300 >= nbf);
    if !valid {
        let show = |t: Option<i64>| t.map_or_else(String::new, crate::clock::rfc3339);
        return entra_error(
            400,
            "invalid_client",
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
                crate::clock::rfc3339(ctx.now),
                show(not_before),
                show(expires)
            ),
        );
    }
    let text = |name: &str| assertion.get(name).and_then(Value::as_str).unwrap_or("");
    let (issuer, subject) = (text("iss"), text("sub"));
    let audiences: Vec<&str> = match assertion.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let matched = app.credentials.iter().any(|c| {
        c.issuer == issuer
            && c.subject == subject
            && audiences.iter().any(|a| c.audiences.iter().any(|e| e == a))
    });
    if !matched {
        return entra_error(
            400,
            "invalid_request",
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{}'. https://docs.microsoft.com/azure/active-directory/develop/workload-identity-federation",
                audiences.join(",")
            ),
        );
    }
    let resource = ctx.shared.cloud.inbound(
        scope
            .split(' ')
            .next()
            .unwrap_or(scope)
            .trim_end_matches("/.default"),
    );
    let subject = Subject {
        object_id: app.principal_id.clone(),
        client_id: app.client_id.clone(),
        mi_resource_id: None,
    };
    let (access_token, _) = ctx.shared.issuer.issue(&subject, &resource, ctx.now);
    // The request is recorded as the service principal's: the test sees who signed in.
    ctx.caller = Some(Claims {
        object_id: app.principal_id,
        client_id: app.client_id,
        tenant_id,
        audience: resource,
        raw: Value::Null,
    });
    Reply::ok(json!({
        "token_type": "Bearer",
        "expires_in": EXPIRES_IN,
        "ext_expires_in": EXPIRES_IN,
        "access_token": access_token,
    }))
}

/// The claims of a JWT, unverified (see the module documentation); `None` when it is not three
/// base64url parts with a JSON object in the middle, or is implausibly large.
fn claims_of(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    if jwt.len() > 16 * 1024 {
        return None;
    }
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn only_a_jwt_with_a_json_object_has_claims() {
        let claims = claims_of(&jwt(&json!({"iss": "i", "sub": "s"}))).unwrap();
        assert_eq!(claims["sub"], "s");
        assert!(claims_of("a.b").is_none());
        assert!(claims_of("a.b.c.d").is_none());
        assert!(claims_of(&jwt(&json!(["not", "an", "object"]))).is_none());
        assert!(claims_of(&"a".repeat(20_000)).is_none());
    }
}
