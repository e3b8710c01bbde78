//! Email through Azure Communication Services (azure-notes §C2):
//! `POST {endpoint}/emails:send` with an Entra token from the managed identity, so no mail
//! password or access key has to be stored. ACS answers 202 with `Operation-Location`; the
//! delivery itself is asynchronous.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use lettre::message::Mailbox;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use super::email::EmailContent;
use super::http::post_json;
use super::retry::{Failure, RetryBudget};
use super::secret::redacted_origin;

/// The ACS Email REST api-version: the first stable one, served by every ACS resource.
pub const API_VERSION: &str = "2023-03-31";

/// The ACS endpoint cannot be used to send email.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the send URL: {0}")]
pub(crate) struct AcsSetupError(#[source] url::ParseError);

/// Sends email through one ACS resource.
#[derive(Debug, Clone)]
pub(crate) struct AcsSender {
    send_url: Url,
    endpoint: Url,
    credential: Arc<dyn TokenCredential>,
    /// The token scope of Communication Services in this cloud.
    scope: String,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl AcsSender {
    pub(crate) fn new(
        endpoint: &Url,
        credential: Arc<dyn TokenCredential>,
        cloud: crate::cloud::Cloud,
        from: Mailbox,
        to: Vec<Mailbox>,
    ) -> Result<Self, AcsSetupError> {
        let mut send_url = endpoint.join("/emails:send").map_err(AcsSetupError)?;
        send_url.set_query(Some(&format!("api-version={API_VERSION}")));
        Ok(Self {
            send_url,
            endpoint: endpoint.clone(),
            credential,
            scope: cloud.communication_scope(),
            from,
            to,
        })
    }

    /// Sends `content`; on success, says which operation ACS created. The token is returned
    /// alongside a failure so the caller can scrub it from the reason.
    pub(crate) async fn send(
        &self,
        client: &reqwest::Client,
        content: &EmailContent,
        budget: RetryBudget,
    ) -> Result<String, (Failure, Option<String>)> {
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| {
                (
                    Failure::retryable(format!(
                        "no token for Azure Communication Services from the managed identity: {e}"
                    )),
                    None,
                )
            })?;
        let secret = token.token.secret().to_owned();
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
            (
                Failure::permanent("the managed identity returned an unusable token"),
                Some(secret.clone()),
            )
        })?;
        headers.insert(AUTHORIZATION, bearer);
        // One id for all attempts: ACS can tell a retry from a second email.
        let operation_id = uuid::Uuid::new_v4().to_string();
        for name in ["operation-id", "x-ms-client-request-id"] {
            if let Ok(value) = HeaderValue::from_str(&operation_id) {
                headers.insert(name, value);
            }
        }
        let body = serde_json::to_vec(&body(&self.from, &self.to, content)).map_err(|e| {
            (
                Failure::permanent(format!("cannot encode the email: {e}")),
                None,
            )
        })?;
        let posted = post_json(client, &self.send_url, &headers, &body, budget)
            .await
            .map_err(|failure| (failure, Some(secret)))?;
        // The operation id is in the body and at the end of `Operation-Location`'s path.
        let operation = serde_json::from_str::<Value>(&posted.body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| {
                let location = posted.headers.get("operation-location")?.to_str().ok()?;
                let path = location.split('?').next()?;
                path.rsplit('/').next().map(str::to_owned)
            })
            .unwrap_or(operation_id);
        Ok(format!(
            "HTTP {} from {}, operation {operation}",
            posted.status.as_u16(),
            redacted_origin(&self.endpoint)
        ))
    }
}

/// `https://<resource>.communication.azure.com`, for logs and Action details.
impl std::fmt::Display for AcsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted_origin(&self.endpoint))
    }
}

/// The `EmailMessage` body. The sender is an address of a verified ACS domain; ACS takes no
/// display name for it.
pub(crate) fn body(from: &Mailbox, to: &[Mailbox], content: &EmailContent) -> Value {
    let recipients: Vec<Value> = to
        .iter()
        .map(|mailbox| match &mailbox.name {
            Some(name) => json!({"address": mailbox.email.to_string(), "displayName": name}),
            None => json!({"address": mailbox.email.to_string()}),
        })
        .collect();
    json!({
        "senderAddress": from.email.to_string(),
        "recipients": {"to": recipients},
        "content": {
            "subject": content.subject,
            "plainText": content.text,
            "html": content.html,
        },
        "userEngagementTrackingDisabled": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the scopes tokens are asked for, and gives none.
    #[derive(Debug, Default)]
    struct Scopes(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl TokenCredential for Scopes {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            let mut asked = self.0.lock().unwrap_or_else(|e| e.into_inner());
            asked.extend(scopes.iter().map(|s| (*s).to_owned()));
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "none in tests",
            ))
        }
    }

    /// Email through ACS asks for a token for its cloud's Communication Services audience.
    #[tokio::test]
    async fn the_token_is_for_the_clouds_communication_services() {
        use crate::cloud::Cloud;
        let http = crate::azure::http_client(&crate::azure::TransportSettings::default()).unwrap();
        for cloud in [Cloud::Public, Cloud::UsGovernment, Cloud::China] {
            let credential = Arc::new(Scopes::default());
            let endpoint: Url = format!("https://alerts.{}", cloud.communication_suffix())
                .parse()
                .unwrap();
            let sender = AcsSender::new(
                &endpoint,
                credential.clone(),
                cloud,
                "DoNotReply@contoso.com".parse().unwrap(),
                vec!["oncall@contoso.com".parse().unwrap()],
            )
            .unwrap();
            let content = EmailContent {
                subject: "s".into(),
                text: "t".into(),
                html: "<p>h</p>".into(),
                thread: None,
            };
            let sent = sender.send(&http, &content, RetryBudget::default()).await;
            assert!(sent.is_err());
            let asked = credential.0.lock().unwrap().clone();
            assert_eq!(
                asked,
                [format!("https://{}/.default", cloud.communication_suffix())]
            );
        }
    }

    #[test]
    fn builds_the_documented_body() {
        let content = EmailContent {
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            thread: None,
        };
        let to = vec![
            "oncall@contoso.com".parse().unwrap(),
            "Sec <sec@contoso.com>".parse().unwrap(),
        ];
        let from: Mailbox = "cmk-guard <DoNotReply@contoso.com>".parse().unwrap();
        let body = body(&from, &to, &content);
        assert_eq!(body["senderAddress"], "DoNotReply@contoso.com");
        assert_eq!(body["recipients"]["to"][0]["address"], "oncall@contoso.com");
        assert_eq!(body["recipients"]["to"][1]["displayName"], "Sec");
        assert_eq!(body["content"]["html"], "<p>h</p>");
        assert_eq!(body["content"]["plainText"], "t");
    }
}
