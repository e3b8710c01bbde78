//! Errors from Azure calls, with the one decision callers need: is it worth retrying?

use std::fmt;

use azure_core::http::StatusCode;

/// Whether a failed call may succeed if repeated later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 408, 429, 5xx, timeouts, connection failures, token acquisition failures: retried within
    /// the deadline, then surfaced as a failed invocation so Event Grid redelivers.
    Transient,
    /// 400, 401, 403, 404, 409, …: repeating will not help; recorded as a finding.
    Permanent,
    /// The request was refused before it was sent (untrusted host, bad URL).
    Refused,
}

/// A failed Azure call. The message never holds a token or a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureError {
    pub kind: ErrorKind,
    /// The HTTP status, when Azure answered.
    pub status: Option<StatusCode>,
    /// The ARM / Key Vault error code (`AuthorizationFailed`, `ResourceNotFound`, …).
    pub code: Option<String>,
    pub message: String,
    /// `GET https://host/path` of the failed request (no query).
    pub request: String,
}

impl AzureError {
    /// An error for a response with a non-success status and its body.
    pub fn from_response(request: String, status: StatusCode, body: &[u8]) -> Self {
        let (code, message) = error_body(body);
        let kind = if is_transient_status(status) {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        Self {
            kind,
            status: Some(status),
            code,
            message: message.unwrap_or_else(|| format!("HTTP {status}")),
            request,
        }
    }

    /// An error before or instead of a response (transport, credential).
    pub fn transport(request: String, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            code: None,
            message: message.into(),
            request,
        }
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(StatusCode::NotFound)
    }

    /// True when a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl fmt::Display for AzureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.request)?;
        if let Some(status) = self.status {
            write!(f, "HTTP {status} ")?;
        }
        if let Some(code) = &self.code {
            write!(f, "{code}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for AzureError {}

/// Statuses retried within the deadline (the azure_core defaults).
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(u16::from(status), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Reads `{"error":{"code","message"}}` (ARM, Key Vault, Resource Graph all use it).
fn error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let error = value.get("error").unwrap_or(&value);
    let text = |key: &str| {
        error
            .get(key)
            .and_then(|v| v.as_str())
            .map(crate::ids::truncate)
    };
    (text("code"), text("message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses_and_reads_the_error_body() {
        let throttled = AzureError::from_response(
            "GET x".into(),
            StatusCode::TooManyRequests,
            br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
        );
        assert!(throttled.is_transient());
        assert_eq!(throttled.code.as_deref(), Some("TooManyRequests"));
        let forbidden =
            AzureError::from_response("GET x".into(), StatusCode::Forbidden, b"not json");
        assert_eq!(forbidden.kind, ErrorKind::Permanent);
        assert_eq!(forbidden.message, "HTTP 403");
        assert!(
            AzureError::from_response("GET x".into(), StatusCode::NotFound, b"{}").is_not_found()
        );
        assert_eq!(
            throttled.to_string(),
            "GET x: HTTP 429 TooManyRequests: slow down"
        );
    }
}
