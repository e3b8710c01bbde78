//! The alert channels' configuration (`CMKGUARD_TEAMS_WEBHOOK_URL`, `CMKGUARD_WEBHOOK_URL`,
//! `CMKGUARD_WEBHOOK_SECRET`, `CMKGUARD_EMAIL_TO`, `CMKGUARD_EMAIL_FROM`,
//! `CMKGUARD_ACS_ENDPOINT`, `CMKGUARD_SMTP_URL`),
//! parsed once at start. A half-configured channel is an error rather than silence: an alert
//! that cannot go out must be noticed when the app starts, not when a key has expired.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use azure_core::credentials::Secret;
use lettre::message::Mailbox;
use url::Url;

use super::secret::{SecretUrl, redacted_origin};
use super::webhook::{WebhookSecret, event_source};
use crate::config::ConfigError;

const TEAMS: &str = "CMKGUARD_TEAMS_WEBHOOK_URL";
const WEBHOOK: &str = "CMKGUARD_WEBHOOK_URL";
const WEBHOOK_SECRET: &str = "CMKGUARD_WEBHOOK_SECRET";
/// The Function App's name, set by the platform: the webhook events' `source`.
const SITE_NAME: &str = "WEBSITE_SITE_NAME";
const EMAIL_TO: &str = "CMKGUARD_EMAIL_TO";
const EMAIL_FROM: &str = "CMKGUARD_EMAIL_FROM";
const ACS: &str = "CMKGUARD_ACS_ENDPOINT";
const SMTP: &str = "CMKGUARD_SMTP_URL";

/// Azure Communication Services accepts at most 50 recipients per message.
const MAX_RECIPIENTS: usize = 50;
/// Mail submission with STARTTLS.
const SMTP_SUBMISSION_PORT: u16 = 587;

/// Which channels are configured, and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// A Teams Workflows webhook ("When a Teams webhook request is received").
    pub teams: Option<SecretUrl>,
    /// A generic webhook that receives one CloudEvent per finding change.
    pub webhook: Option<SecretUrl>,
    /// The Standard Webhooks key the webhook's requests are signed with.
    pub webhook_secret: Option<WebhookSecret>,
    /// The CloudEvents `source` of the webhook's events (`/cmk-guard/<app>`).
    pub event_source: String,
    pub email: Option<EmailSettings>,
    /// The Azure cloud (`CMKGUARD_CLOUD`, set by `Settings`): the portal of alert links and
    /// the token audience of Communication Services.
    pub cloud: crate::cloud::Cloud,
}

/// Email recipients, sender and the service that delivers it.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub transport: EmailTransport,
}

/// How email leaves cmk-guard.
#[derive(Debug, Clone)]
pub enum EmailTransport {
    /// Azure Communication Services Email REST, authenticated with the managed identity.
    Acs { endpoint: Url },
    /// An SMTP submission server, always with STARTTLS.
    Smtp(SmtpSettings),
}

/// An SMTP submission server from `CMKGUARD_SMTP_URL`. `Debug` shows no password.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// `smtp://host:port` (the port always shown): the server without its credentials, for logs
/// and Action details.
impl fmt::Display for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "smtp://{}:{}", self.host, self.port)
    }
}

impl NotifySettings {
    /// Reads through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let teams = value(TEAMS)
            .map(|text| webhook_url(TEAMS, &text))
            .transpose()?;
        if let Some(url) = &teams {
            let host = url.expose().host_str().unwrap_or_default();
            if host.ends_with("webhook.office.com") || host == "outlook.office.com" {
                return Err(error(
                    TEAMS,
                    "this is a retired Office 365 connector URL; create a Teams Workflows webhook \
                     (\"When a Teams webhook request is received\", see docs/alerts.md)",
                ));
            }
        }
        let webhook = value(WEBHOOK)
            .map(|text| webhook_url(WEBHOOK, &text))
            .transpose()?;
        let webhook_secret = value(WEBHOOK_SECRET)
            .map(|text| {
                WebhookSecret::parse(&text).map_err(|e| error(WEBHOOK_SECRET, e.to_string()))
            })
            .transpose()?;
        if webhook_secret.is_some() && webhook.is_none() {
            return Err(error(
                WEBHOOK_SECRET,
                format!("is set but {WEBHOOK} is not; set both or neither"),
            ));
        }
        let event_source = event_source(value(SITE_NAME).as_deref());
        let email = email_settings(value(EMAIL_TO), value(EMAIL_FROM), value(ACS), value(SMTP))?;
        Ok(Self {
            teams,
            webhook,
            webhook_secret,
            event_source,
            email,
            cloud: crate::cloud::Cloud::default(),
        })
    }
}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// An https URL (plain http only to this machine, for local tools), never echoed in errors:
/// the value is a secret.
fn endpoint_url(variable: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| error(variable, format!("not a URL ({e})")))?;
    let Some(host) = url.host_str() else {
        return Err(error(variable, "the URL has no host"));
    };
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        scheme => Err(error(
            variable,
            format!(
                "{} uses `{scheme}`; it must be an https URL (http is accepted only for localhost)",
                redacted_origin(&url)
            ),
        )),
    }
}

fn webhook_url(variable: &'static str, text: &str) -> Result<SecretUrl, ConfigError> {
    let url = endpoint_url(variable, text)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(error(
            variable,
            "user names and passwords in webhook URLs are not supported",
        ));
    }
    Ok(SecretUrl::new(url))
}

fn email_settings(
    to: Option<String>,
    from: Option<String>,
    acs: Option<String>,
    smtp: Option<String>,
) -> Result<Option<EmailSettings>, ConfigError> {
    let Some(to) = to else {
        for (variable, set) in [
            (EMAIL_FROM, from.is_some()),
            (ACS, acs.is_some()),
            (SMTP, smtp.is_some()),
        ] {
            if set {
                return Err(error(
                    variable,
                    format!("is set but {EMAIL_TO} is not; set the recipients or remove it"),
                ));
            }
        }
        return Ok(None);
    };
    let recipients = to
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|address| {
            Mailbox::from_str(address).map_err(|e| {
                error(
                    EMAIL_TO,
                    format!("`{address}` is not an email address ({e})"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if recipients.is_empty() {
        return Err(error(EMAIL_TO, "holds no address"));
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(error(
            EMAIL_TO,
            format!(
                "{} recipients; at most {MAX_RECIPIENTS} (use a distribution list)",
                recipients.len()
            ),
        ));
    }
    let from = from.ok_or_else(|| {
        error(
            EMAIL_FROM,
            format!("not set; {EMAIL_TO} needs a sender address"),
        )
    })?;
    let from = Mailbox::from_str(&from).map_err(|e| {
        error(
            EMAIL_FROM,
            format!("`{from}` is not an email address ({e})"),
        )
    })?;
    let transport = match (acs, smtp) {
        (Some(_), Some(_)) => {
            return Err(error(
                SMTP,
                format!("both {ACS} and {SMTP} are set; choose one email transport"),
            ));
        }
        (None, None) => {
            return Err(error(
                EMAIL_TO,
                format!("is set but no transport is: set {ACS} or {SMTP}"),
            ));
        }
        (Some(endpoint), None) => EmailTransport::Acs {
            endpoint: acs_endpoint(&endpoint)?,
        },
        (None, Some(url)) => EmailTransport::Smtp(smtp_settings(&url)?),
    };
    Ok(Some(EmailSettings {
        from,
        to: recipients,
        transport,
    }))
}

fn acs_endpoint(text: &str) -> Result<Url, ConfigError> {
    let url = endpoint_url(ACS, text)?;
    if url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || !matches!(url.path(), "" | "/")
    {
        return Err(error(
            ACS,
            format!(
                "use the resource endpoint alone, such as https://<resource>.communication.azure.com \
                 (cmk-guard authenticates with its managed identity), not {}…",
                redacted_origin(&url)
            ),
        ));
    }
    Ok(url)
}

/// `smtp://[user[:password]@]host[:port]`. Only the STARTTLS form exists: the password must
/// never cross the network in clear, and lettre is told to require TLS.
fn smtp_settings(text: &str) -> Result<SmtpSettings, ConfigError> {
    let url = Url::parse(text).map_err(|e| error(SMTP, format!("not a URL ({e})")))?;
    match url.scheme() {
        "smtp" => {}
        "smtps" => {
            return Err(error(
                SMTP,
                "implicit TLS (smtps://, port 465) is not supported; use smtp://host:587, \
                 STARTTLS is always required",
            ));
        }
        other => {
            return Err(error(
                SMTP,
                format!("scheme `{other}` is not smtp; use smtp://user:password@host:587"),
            ));
        }
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| error(SMTP, "the URL has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = url.port().unwrap_or(SMTP_SUBMISSION_PORT);
    if port == 465 {
        return Err(error(
            SMTP,
            "port 465 is implicit TLS, which is not supported; use port 587 (STARTTLS)",
        ));
    }
    if url.query().is_some() || !matches!(url.path(), "" | "/") {
        return Err(error(
            SMTP,
            "paths and query parameters are not supported (STARTTLS is always required)",
        ));
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| error(SMTP, "the user name or password is not valid UTF-8"))
    };
    let username = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = url.password().map(decode).transpose()?.map(Secret::new);
    if password.is_some() && username.is_none() {
        return Err(error(SMTP, "a password without a user name"));
    }
    if username.is_some() && password.is_none() {
        return Err(error(SMTP, "a user name without a password"));
    }
    Ok(SmtpSettings {
        host,
        port,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const WORKFLOW: &str = "https://abc.12.environment.api.powerplatform.com:443/powerautomate/automations/direct/workflows/w1/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=S3cr3tSig";

    fn settings(pairs: &[(&str, &str)]) -> Result<NotifySettings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NotifySettings::from_lookup(move |name| map.get(name).cloned())
    }

    #[test]
    fn nothing_configured_is_valid() {
        let s = settings(&[]).unwrap();
        assert!(s.teams.is_none() && s.webhook.is_none() && s.email.is_none());
    }

    #[test]
    fn reads_every_channel() {
        let s = settings(&[
            (TEAMS, WORKFLOW),
            (WEBHOOK, "http://127.0.0.1:9000/hook"),
            (EMAIL_TO, "oncall@contoso.com, Sec Team <sec@contoso.com>"),
            (EMAIL_FROM, "cmk-guard@contoso.com"),
            (SMTP, "smtp://alerts%7Capp:p%40ss@smtp.contoso.com"),
        ])
        .unwrap();
        assert_eq!(
            s.teams.unwrap().to_string(),
            "https://abc.12.environment.api.powerplatform.com"
        );
        let email = s.email.unwrap();
        assert_eq!(email.to.len(), 2);
        assert_eq!(email.to[1].name.as_deref(), Some("Sec Team"));
        let EmailTransport::Smtp(smtp) = email.transport else {
            panic!("expected SMTP");
        };
        assert_eq!(smtp.port, 587);
        assert_eq!(smtp.username.as_deref(), Some("alerts|app"));
        assert_eq!(smtp.password.as_ref().unwrap().secret(), "p@ss");
        assert!(!format!("{smtp:?}").contains("p@ss"));

        let acs = settings(&[
            (EMAIL_TO, "oncall@contoso.com"),
            (EMAIL_FROM, "DoNotReply@contoso.com"),
            (ACS, "https://alerts.communication.azure.com/"),
        ])
        .unwrap();
        assert!(matches!(
            acs.email.unwrap().transport,
            EmailTransport::Acs { .. }
        ));
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(TEAMS, "not a url")], TEAMS),
            (&[(TEAMS, &WORKFLOW.replace("https", "http"))], TEAMS),
            (
                &[(
                    TEAMS,
                    "https://contoso.webhook.office.com/webhookb2/x?sig=S3cr3tSig",
                )],
                TEAMS,
            ),
            (
                &[(WEBHOOK, "ftp://hooks.contoso.com/x?sig=S3cr3tSig")],
                WEBHOOK,
            ),
            (&[(EMAIL_FROM, "a@contoso.com")], EMAIL_FROM),
            (&[(SMTP, "smtp://u:S3cr3tSig@h:587")], SMTP),
            (
                &[(EMAIL_TO, "a@contoso.com"), (EMAIL_FROM, "b@contoso.com")],
                EMAIL_TO,
            ),
            (
                &[(EMAIL_TO, "not-an-address"), (EMAIL_FROM, "b@contoso.com")],
                EMAIL_TO,
            ),
            (
                &[
                    (EMAIL_TO, "a@contoso.com"),
                    (ACS, "https://x.communication.azure.com"),
                ],
                EMAIL_FROM,
            ),
            (
                &[
                    (EMAIL_TO, "a@contoso.com"),
                    (EMAIL_FROM, "b@contoso.com"),
                    (ACS, "https://x.communication.azure.com"),
                    (SMTP, "smtp://h:587"),
                ],
                SMTP,
            ),
            (
                &[
                    (EMAIL_TO, "a@contoso.com"),
                    (EMAIL_FROM, "b@contoso.com"),
                    (
                        ACS,
                        "https://x.communication.azure.com/?accesskey=S3cr3tSig",
                    ),
                ],
                ACS,
            ),
        ];
        for (pairs, variable) in cases {
            let err = settings(pairs).unwrap_err();
            assert_eq!(err.variable, *variable, "{pairs:?}: {err}");
            assert!(!err.to_string().contains("S3cr3tSig"), "{err}");
        }
    }

    #[test]
    fn the_webhook_secret_is_checked_at_start_and_never_shown() {
        let hook = (WEBHOOK, "http://127.0.0.1:9000/hook");
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let s = settings(&[hook, (WEBHOOK_SECRET, good), (SITE_NAME, "func-cmk")]).unwrap();
        assert!(s.webhook_secret.is_some());
        assert_eq!(s.event_source, "/cmk-guard/func-cmk");
        assert!(!format!("{s:?}").contains("MfKQ9r8"));
        assert_eq!(settings(&[hook]).unwrap().event_source, "/cmk-guard/local");
        for (pairs, why) in [
            (
                vec![hook, (WEBHOOK_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
                "whsec_",
            ),
            (vec![hook, (WEBHOOK_SECRET, "whsec_MfKQ9r8GKYq!")], "base64"),
            (
                vec![hook, (WEBHOOK_SECRET, "whsec_MfKQ9r8G")],
                "at least 24",
            ),
            (vec![(WEBHOOK_SECRET, good)], WEBHOOK),
        ] {
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.variable, WEBHOOK_SECRET);
            assert!(err.message.contains(why), "{err}");
            assert!(!err.to_string().contains("MfKQ9r8"), "{err}");
        }
    }

    #[test]
    fn smtp_must_be_starttls_submission() {
        let base = [(EMAIL_TO, "a@contoso.com"), (EMAIL_FROM, "b@contoso.com")];
        for (url, why) in [
            ("smtps://u:pw@h", "implicit TLS"),
            ("smtp://u:pw@h:465", "port 465"),
            ("smtp://u:pw@h:587?tls=none", "query"),
            ("smtp://:pw@h:587", "without a user"),
            ("smtp://u@h:587", "without a password"),
            ("http://h:587", "not smtp"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((SMTP, url));
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.variable, SMTP);
            assert!(err.message.contains(why), "{url}: {err}");
            assert!(!err.message.contains("pw"), "{err}");
        }
    }
}
