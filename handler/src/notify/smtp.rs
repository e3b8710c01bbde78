//! Email through an SMTP submission server with lettre. TLS is required (STARTTLS): a server
//! that does not offer it is refused before any credential is sent. The TLS roots are the same
//! as for HTTPS — Mozilla's plus `CMKGUARD_CA_BUNDLE` — and `CMKGUARD_CONNECT_TO` applies too,
//! keeping the configured host name for certificate checks.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::email::EmailContent;
use super::retry::{Attempt, Failure, RetryBudget, with_retries};
use super::settings::SmtpSettings;
use crate::azure::TransportSettings;

/// Time for one SMTP conversation.
const CONVERSATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the SMTP transport cannot be built: the configuration is wrong, so the app must not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SmtpSetupError {
    #[error("CMKGUARD_CA_BUNDLE {}: cannot read: {source}", path.display())]
    CaBundleUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CMKGUARD_CA_BUNDLE {}: not a PEM certificate bundle: {source}", path.display())]
    CaBundleNotPem {
        path: PathBuf,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("SMTP TLS setup failed: {0}")]
    Tls(#[source] lettre::transport::smtp::Error),
}

impl SmtpSetupError {
    /// The variable to fix.
    pub(crate) fn variable(&self) -> &'static str {
        match self {
            Self::CaBundleUnreadable { .. } | Self::CaBundleNotPem { .. } => "CMKGUARD_CA_BUNDLE",
            Self::Tls(_) => "CMKGUARD_SMTP_URL",
        }
    }
}

/// Sends email through one SMTP server.
#[derive(Clone)]
pub(crate) struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `smtp://host:port`, never the credentials.
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The server, as its settings show it: `smtp://host:port`.
impl std::fmt::Display for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.server)
    }
}

impl SmtpSender {
    /// Builds the transport; fails when the CA bundle is unusable.
    pub(crate) fn new(
        settings: &SmtpSettings,
        transport: &TransportSettings,
        from: Mailbox,
        to: Vec<Mailbox>,
    ) -> Result<Self, SmtpSetupError> {
        let mut tls = TlsParameters::builder(settings.host.clone())
            .certificate_store(CertificateStore::WebpkiRoots);
        // The system store too, as every HTTPS client trusts it (`transport::trusted_roots`).
        for certificate in crate::azure::transport::system_certificates() {
            if let Ok(certificate) = Certificate::from_der(certificate.to_vec()) {
                tls = tls.add_root_certificate(certificate);
            }
        }
        if let Some(path) = &transport.ca_bundle {
            let pem = std::fs::read(path).map_err(|source| SmtpSetupError::CaBundleUnreadable {
                path: path.clone(),
                source,
            })?;
            let certificates =
                Certificate::from_pem(&pem).map_err(|source| SmtpSetupError::CaBundleNotPem {
                    path: path.clone(),
                    source,
                })?;
            tls = tls.add_root_certificate(certificates);
        }
        let tls = tls.build_rustls().map_err(SmtpSetupError::Tls)?;
        let host = settings.host.to_ascii_lowercase();
        let (server, port) = match transport.connect_to.iter().find(|o| {
            host == o.host_suffix
                || host
                    .strip_suffix(&o.host_suffix)
                    .is_some_and(|head| head.ends_with('.'))
        }) {
            Some(forced) => (forced.address.ip().to_string(), forced.address.port()),
            None => (settings.host.clone(), settings.port),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
            .port(port)
            .tls(Tls::Required(tls))
            .timeout(Some(CONVERSATION_TIMEOUT));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.secret().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            server: settings.to_string(),
            from,
            to,
        })
    }

    /// Sends `content`, retrying transient failures (4xx replies, network errors) within the
    /// budget.
    pub(crate) async fn send(
        &self,
        content: &EmailContent,
        budget: RetryBudget,
    ) -> Result<String, Failure> {
        let message = self.message(content)?;
        with_retries(budget, |_| {
            let message = message.clone();
            async move {
                let error = match self.transport.send(message).await {
                    Ok(response) => {
                        return Attempt::Sent(format!(
                            "{} from {} for {} recipient(s)",
                            response.code(),
                            self.server,
                            self.to.len()
                        ));
                    }
                    Err(error) => error,
                };
                let reason = describe(&error);
                let transient = !error.is_tls()
                    && !is_certificate_failure(&error)
                    && !error.is_permanent()
                    && !error.is_client()
                    && (error.is_transient() || error.status().is_none());
                if transient {
                    Attempt::Failed {
                        reason,
                        server_wait: None,
                    }
                } else {
                    Attempt::Refused(reason)
                }
            }
        })
        .await
    }

    fn message(&self, content: &EmailContent) -> Result<Message, Failure> {
        // A unique Message-ID lets mail clients de-duplicate alerts; `In-Reply-To` and
        // `References` naming the workspace's stable thread id group its alerts.
        let mut builder = Message::builder()
            .message_id(None)
            .from(self.from.clone())
            .subject(content.subject.clone());
        if let Some(thread) = &content.thread {
            builder = builder
                .in_reply_to(thread.clone())
                .references(thread.clone());
        }
        for recipient in &self.to {
            builder = builder.to(recipient.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                content.text.clone(),
                content.html.clone(),
            ))
            .map_err(|e| Failure::permanent(format!("cannot build the email: {e}")))
    }
}

/// lettre's error with its causes, and what it means for a STARTTLS refusal.
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = crate::text::chain(error);
    if error.is_client() && text.to_ascii_lowercase().contains("starttls") {
        text.push_str(" (cmk-guard requires STARTTLS and does not send mail in clear)");
    }
    if is_certificate_failure(error) {
        text.push_str(
            " (the server's certificate is not trusted for this host; a private CA belongs in CMKGUARD_CA_BUNDLE)",
        );
    }
    text
}

/// lettre reports a refused certificate as a connection error; the rustls error inside tells
/// it apart from a network failure, which is worth retrying where this is not.
fn is_certificate_failure(error: &lettre::transport::smtp::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        if cause.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        current = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_has_both_parts() {
        let settings = SmtpSettings {
            host: "smtp.contoso.com".into(),
            port: 587,
            username: None,
            password: None,
        };
        let sender = SmtpSender::new(
            &settings,
            &TransportSettings::default(),
            "cmk-guard@contoso.com".parse().unwrap(),
            vec![
                "a@contoso.com".parse().unwrap(),
                "b@contoso.com".parse().unwrap(),
            ],
        )
        .unwrap();
        let message = sender
            .message(&EmailContent {
                subject: "[cmk-guard] hi".into(),
                text: "plain".into(),
                html: "<p>html</p>".into(),
                thread: Some("<thread@cmk-guard>".into()),
            })
            .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Subject: [cmk-guard] hi"), "{raw}");
        assert!(raw.contains("In-Reply-To: <thread@cmk-guard>"), "{raw}");
        assert!(raw.contains("References: <thread@cmk-guard>"), "{raw}");
        assert!(raw.contains("Message-ID: <"), "{raw}");
        assert!(raw.contains("To: a@contoso.com, b@contoso.com"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
    }
}
