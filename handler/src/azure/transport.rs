//! The one HTTP client all outbound HTTPS uses (ARM, Key Vault, managed identity, alerts):
//! rustls with the ring provider, Mozilla's roots plus `CMKGUARD_CA_BUNDLE`, and
//! `CMKGUARD_CONNECT_TO` connection overrides that keep the real host name for TLS and `Host`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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

/// Builds the shared HTTP client. Fails when the CA bundle cannot be read.
pub fn http_client(settings: &TransportSettings) -> Result<reqwest::Client, TransportError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &settings.ca_bundle {
        for certificate in read_bundle(path)? {
            roots
                .add(certificate)
                .map_err(|source| TransportError::UnusableCertificate {
                    path: path.clone(),
                    source,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(ConnectToResolver {
            overrides: settings.connect_to.clone(),
        }))
        .no_proxy()
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
