//! The one HTTP client all outbound HTTPS uses (ARM, Key Vault, managed identity, alerts, state
//! storage): rustls with the ring provider; Mozilla's roots, the system's certificate store
//! (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) and `CMKGUARD_CA_BUNDLE`; the corporate proxy of
//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`; and `CMKGUARD_CONNECT_TO` connection overrides that keep
//! the real host name for TLS and `Host`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::ConfigError;

/// How long to wait for a TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait between bytes of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One `host-suffix=ip:port` entry of `CMKGUARD_CONNECT_TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// Lower-case host suffix; matches the host itself and any host ending in `.{suffix}`.
    pub host_suffix: String,
    pub address: SocketAddr,
}

impl ConnectTo {
    /// Parses `host-suffix=ip:port,…`.
    pub fn parse_list(text: &str) -> Result<Vec<ConnectTo>, ConnectToError> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (suffix, address) = entry
                    .split_once('=')
                    .ok_or_else(|| ConnectToError::Entry(entry.to_owned()))?;
                let suffix = suffix.trim().trim_start_matches('.').to_ascii_lowercase();
                if suffix.is_empty()
                    || !suffix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                {
                    return Err(ConnectToError::Suffix(suffix));
                }
                let address = address
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConnectToError::Address(address.trim().to_owned()))?;
                Ok(ConnectTo {
                    host_suffix: suffix,
                    address,
                })
            })
            .collect()
    }

    fn matches(&self, host: &str) -> bool {
        host == self.host_suffix
            || host
                .strip_suffix(&self.host_suffix)
                .is_some_and(|head| head.ends_with('.'))
    }
}

/// Why `CMKGUARD_CONNECT_TO` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectToError {
    #[error("`{0}` is not `host-suffix=ip:port`")]
    Entry(String),
    #[error("`{0}` is not a host name suffix")]
    Suffix(String),
    #[error("`{0}` is not ip:port")]
    Address(String),
}

/// Why the shared HTTP client cannot be built. Each message names what a person can fix; the
/// cause is kept for the chain.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("CMKGUARD_CA_BUNDLE {}: cannot read: {source}", .path.display())]
    UnreadableBundle {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CMKGUARD_CA_BUNDLE {}: not a PEM certificate bundle: {source}", .path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CMKGUARD_CA_BUNDLE {}: holds no certificate", .path.display())]
    EmptyBundle { path: PathBuf },
    #[error("CMKGUARD_CA_BUNDLE {}: a certificate is not usable: {source}", .path.display())]
    UnusableCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[source] rustls::Error),
    #[error("HTTP client setup failed: {0}")]
    Client(#[source] reqwest::Error),
}

/// What the transport needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct TransportSettings {
    pub ca_bundle: Option<PathBuf>,
    pub connect_to: Vec<ConnectTo>,
    pub proxy: ProxySettings,
}

/// Hosts that never go through a proxy: the managed-identity endpoint listens on loopback,
/// where no proxy can reach it.
const ALWAYS_DIRECT: &str = "localhost,127.0.0.1,::1";

/// A corporate network's proxy, from the variables every HTTP tool reads. The upper-case name
/// wins over the lower-case one. `Debug` shows no proxy password.
#[derive(Clone, Default)]
pub struct ProxySettings {
    /// `HTTPS_PROXY` / `https_proxy`: the proxy `https://` requests tunnel through (CONNECT).
    pub https: Option<url::Url>,
    /// `HTTP_PROXY` / `http_proxy`: the proxy of plain `http://` requests.
    pub http: Option<url::Url>,
    /// `NO_PROXY` / `no_proxy`: hosts, domains (`.example.com`), IP addresses or CIDR ranges
    /// reached directly; `*` turns the proxy off.
    pub no_proxy: Option<String>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |url: &Option<url::Url>| url.as_ref().map(proxy_origin);
        f.debug_struct("ProxySettings")
            .field("https", &shown(&self.https))
            .field("http", &shown(&self.http))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxySettings {
    /// Reads the proxy variables through `value` (trimmed, empty as unset).
    pub fn from_lookup(value: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let either = |upper: &'static str, lower: &'static str| {
            value(upper)
                .map(|text| (upper, text))
                .or_else(|| value(lower).map(|text| (lower, text)))
        };
        let proxy = |upper, lower| {
            either(upper, lower)
                .map(|(name, text)| proxy_url(name, &text))
                .transpose()
        };
        Ok(Self {
            https: proxy("HTTPS_PROXY", "https_proxy")?,
            http: proxy("HTTP_PROXY", "http_proxy")?,
            no_proxy: either("NO_PROXY", "no_proxy").map(|(_, text)| text),
        })
    }

    /// The proxies the client uses, each with the `NO_PROXY` exceptions (loopback always).
    pub fn proxies(&self) -> Result<Vec<reqwest::Proxy>, TransportError> {
        let direct = match self.no_proxy.as_deref() {
            Some(list) => format!("{list},{ALWAYS_DIRECT}"),
            None => ALWAYS_DIRECT.to_owned(),
        };
        let mut proxies = Vec::new();
        if let Some(url) = &self.https {
            let proxy = reqwest::Proxy::https(url.as_str()).map_err(TransportError::Client)?;
            proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&direct)));
        }
        if let Some(url) = &self.http {
            let proxy = reqwest::Proxy::http(url.as_str()).map_err(TransportError::Client)?;
            proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&direct)));
        }
        Ok(proxies)
    }
}

/// A proxy URL: `http://` or `https://`, a host, and nothing but an optional `user:password@`
/// and port. Messages show the scheme, host and port only.
fn proxy_url(variable: &'static str, text: &str) -> Result<url::Url, ConfigError> {
    // `host:port` alone is common in these variables; curl reads it as http.
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| {
        ConfigError::new(
            variable,
            format!("not a proxy URL such as http://proxy.example:3128 ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            variable,
            format!(
                "{} is not an http:// or https:// proxy such as http://proxy.example:3128",
                proxy_origin(&url)
            ),
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(ConfigError::new(
            variable,
            format!(
                "{} must name the proxy alone, without a path",
                proxy_origin(&url)
            ),
        ));
    }
    Ok(url)
}

/// `scheme://host[:port]` of a proxy URL: never its user name or password.
fn proxy_origin(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        (None, _) => format!("{}://", url.scheme()),
    }
}

/// Resolves overridden hosts to their configured address and everything else through DNS.
#[derive(Debug)]
struct ConnectToResolver {
    overrides: Vec<ConnectTo>,
}

impl Resolve for ConnectToResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let forced = self
            .overrides
            .iter()
            .find(|o| o.matches(&host))
            .map(|o| o.address);
        Box::pin(async move {
            if let Some(address) = forced {
                let addrs: Addrs = Box::new(std::iter::once(address));
                return Ok(addrs);
            }
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(resolved.into_iter());
            Ok(addrs)
        })
    }
}

/// The certificates every client trusts: Mozilla's roots, the system's store (where corporate
/// TLS-inspecting proxies put their CA; `SSL_CERT_FILE`/`SSL_CERT_DIR` point elsewhere) and
/// `CMKGUARD_CA_BUNDLE`. A missing or unreadable system store is not an error (minimal
/// containers have none); a bad `CMKGUARD_CA_BUNDLE` is.
pub fn trusted_roots(ca_bundle: Option<&Path>) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.add_parsable_certificates(system_certificates());
    if let Some(path) = ca_bundle {
        for certificate in read_bundle(path)? {
            roots
                .add(certificate)
                .map_err(|source| TransportError::UnusableCertificate {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    Ok(roots)
}

/// The usable certificates of the system's store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set);
/// none when there is no store. What is skipped is logged at debug level.
pub fn system_certificates() -> Vec<CertificateDer<'static>> {
    let system = rustls_native_certs::load_native_certs();
    let found = system.certs.len();
    let usable: Vec<CertificateDer<'static>> = system
        .certs
        .into_iter()
        .filter(|certificate| RootCertStore::empty().add(certificate.clone()).is_ok())
        .collect();
    tracing::debug!(
        message = "System certificate store read.",
        usable = usable.len(),
        ignored = found - usable.len(),
        errors = system.errors.len()
    );
    usable
}

/// Builds the shared HTTP client. Fails when the CA bundle cannot be read.
pub fn http_client(settings: &TransportSettings) -> Result<reqwest::Client, TransportError> {
    let roots = trusted_roots(settings.ca_bundle.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Only the proxies of the settings: the builder's own reading of the environment is off.
    let mut builder = reqwest::Client::builder().no_proxy();
    for proxy in settings.proxy.proxies()? {
        builder = builder.proxy(proxy);
    }
    builder
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(ConnectToResolver {
            overrides: settings.connect_to.clone(),
        }))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cmk-guard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(TransportError::Client)
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|source| TransportError::UnreadableBundle {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TransportError::NotPem {
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TransportError::EmptyBundle {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_to_lists() {
        let list = ConnectTo::parse_list(
            "management.azure.com=127.0.0.1:8443, .vault.azure.net=127.0.0.1:8443",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[1].matches("kv1.vault.azure.net"));
        assert!(list[1].matches("vault.azure.net"));
        assert!(!list[1].matches("kv1.evilvault.azure.net"));
        assert!(!list[0].matches("management.azure.com.evil.example"));
        for bad in [
            "management.azure.com",
            "x=notanaddress",
            "=127.0.0.1:1",
            "a b=127.0.0.1:1",
        ] {
            assert!(ConnectTo::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_or_empty_bundle_is_an_error() {
        let missing = TransportSettings {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            connect_to: vec![],
            proxy: ProxySettings::default(),
        };
        assert!(
            http_client(&missing)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
        let scratch = cmk_guard_blackbox::scratch::Scratch::new("transport");
        let empty = TransportSettings {
            ca_bundle: Some(scratch.write("empty.pem", "no certificates here\n")),
            connect_to: vec![],
            proxy: ProxySettings::default(),
        };
        assert!(
            http_client(&empty)
                .unwrap_err()
                .to_string()
                .contains("holds no certificate")
        );
        assert!(http_client(&TransportSettings::default()).is_ok());
    }
}
