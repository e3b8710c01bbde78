//! A stand-in for Azure Monitor's two ingestion services, on 127.0.0.1:
//!
//! - Application Insights ingestion: `POST /v2.1/track` with a JSON array of envelopes, plain or
//!   gzipped (`Content-Encoding: gzip`), answered `200 {"itemsReceived","itemsAccepted","errors":[]}`;
//! - the Logs Ingestion API: `POST /dataCollectionRules/{immutableId}/streams/{stream}` with a
//!   JSON array of rows, answered `204` (or the statuses a test scripts, `429` with
//!   `Retry-After: 1`).
//!
//! Every request is kept (path with query, lower-case headers, decoded body). The exporter
//! only speaks HTTPS, so the stand-in serves TLS with the simulator's server certificate (which
//! names 127.0.0.1), trusted by the handler through `CMKGUARD_CA_BUNDLE`.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One received request.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The path and query as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when it was gzipped, parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl Ingested {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The `aud` claim of the request's bearer token (a JWT), if it carries one.
    pub fn bearer_audience(&self) -> Option<String> {
        use base64::Engine as _;
        let token = self.header("authorization")?.strip_prefix("Bearer ")?;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: Value = serde_json::from_slice(&bytes).ok()?;
        claims["aud"].as_str().map(str::to_owned)
    }

    /// Whether this is an Application Insights upload (`/v2/track` or `/v2.1/track`).
    pub fn is_track(&self) -> bool {
        matches!(self.path(), "/v2/track" | "/v2.1/track")
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running stand-in.
#[derive(Clone)]
pub struct Ingest {
    pub port: u16,
    received: Arc<Mutex<Vec<Ingested>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Ingest {
    /// Starts the stand-in on HTTPS with this certificate chain and key (PEM); it serves until
    /// the test's runtime ends.
    pub async fn start(cert_pem: &str, key_pem: &str) -> Ingest {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ingest = Ingest {
            port: listener.local_addr().expect("addr").port(),
            received: Arc::default(),
            statuses: Arc::default(),
        };
        let serving = ingest.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ingest = serving.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        ingest.serve(stream).await;
                    }
                });
            }
        });
        ingest
    }

    /// `https://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An Application Insights connection string whose ingestion endpoint is the stand-in.
    pub fn connection_string(&self, instrumentation_key: &str) -> String {
        format!(
            "InstrumentationKey={instrumentation_key};IngestionEndpoint={}/;LiveEndpoint={}/",
            self.endpoint(),
            self.endpoint()
        )
    }

    /// Answers the next Logs Ingestion requests with these statuses (then 204 again).
    pub fn script(&self, statuses: &[u16]) {
        self.statuses.lock().expect("lock").extend(statuses);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Ingested> {
        self.received.lock().expect("lock").clone()
    }

    /// The Application Insights envelopes received so far.
    pub fn envelopes(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.is_track())
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .collect()
    }

    async fn serve(&self, stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut reader = BufReader::new(stream);
        while let Some(crate::http1::RawRequest {
            target,
            headers,
            body: raw,
        }) = crate::http1::read_request(&mut reader).await
        {
            let gzipped = headers
                .iter()
                .any(|(n, v)| n == "content-encoding" && v.eq_ignore_ascii_case("gzip"));
            let bytes = if gzipped { gunzip(&raw) } else { raw };
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let request = Ingested {
                target,
                headers,
                body,
            };
            let response = self.answer(&request);
            self.received.lock().expect("lock").push(request);
            if reader
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn answer(&self, request: &Ingested) -> String {
        if request.is_track() {
            let count = request.body.as_array().map_or(0, Vec::len);
            let body =
                json!({"itemsReceived": count, "itemsAccepted": count, "errors": []}).to_string();
            return format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
        let status = self
            .statuses
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .unwrap_or(204);
        let extra = if status == 429 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        format!("HTTP/1.1 {status} Status\r\n{extra}Content-Length: 0\r\n\r\n")
    }
}

fn gunzip(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(raw).read_to_end(&mut out);
    out
}
