//! The simulator's own PKI: a CA generated at start and a server certificate for every host
//! the handler talks to, so the handler verifies TLS exactly as in Azure, trusting only the CA
//! it is given through `CMKGUARD_CA_BUNDLE`. The CA and leaf are separate certificates because
//! rustls rejects a CA used as an end-entity certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Host names on the server certificate.
pub const SERVER_NAMES: &[&str] = &["management.azure.com", "*.vault.azure.net", "localhost"];

/// Why the PKI could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The generated CA and the rustls server configuration built on it.
pub struct Pki {
    /// CA certificate, PEM (what clients trust).
    pub ca_pem: String,
    /// The server certificate (PEM) and its private key (PKCS#8 PEM), for other local test
    /// servers that clients trusting the CA should accept (e.g. an SMTP server on localhost).
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// Server configuration with the leaf and CA chain, HTTP/1.1 and h2 over the ring provider.
    pub server_config: rustls::ServerConfig,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Generates a fresh CA and a server certificate for [`SERVER_NAMES`] and, in a sovereign
/// cloud, that cloud's ARM and Key Vault names.
pub fn generate(cloud: crate::cloud::SimCloud) -> Result<Pki, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "azure-sim test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "cmk-guard azure-sim");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names: Vec<String> = SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect();
    if cloud != crate::cloud::SimCloud::Public {
        names.extend(cloud.server_names());
    }
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "management.azure.com");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem: ca.pem(),
        server_cert_pem: leaf.pem(),
        server_key_pem: leaf_key.serialize_pem(),
        server_config,
    })
}
