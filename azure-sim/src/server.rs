//! The running simulator: binds the HTTPS listener (every Azure host on one port, routed by
//! `Host`) and the plain-HTTP managed-identity listener, and exposes the Rust API tests use to
//! inspect and steer it. `main.rs` is a thin wrapper around [`Sim::start`].

use crate::events::Actor;
use crate::faults::{Fault, FaultState, FaultTable};
use crate::http::{self, Shared};
use crate::model::Tenant;
use crate::telemetry::{Counters, PeakRate, RecordFilter, RequestRecord, Telemetry};
use crate::token::{Subject, TokenIssuer};
use crate::{material, tls};
use actix_web::{App, HttpServer, web};
use serde::Serialize;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// HTTPS port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Managed-identity (plain HTTP) port on 127.0.0.1 (0 = any free port).
    pub identity_port: u16,
    /// Where to write the CA PEM (`None`: a temporary directory the [`Sim`] removes when it
    /// is dropped).
    pub ca_out: Option<PathBuf>,
    /// Where to write the server certificate and key (`server.pem`, `server.key`) for other
    /// local test servers (`None`: not written).
    pub tls_out: Option<PathBuf>,
    /// actix worker threads.
    pub workers: usize,
    /// The `IDENTITY_HEADER` secret (`None`: random).
    pub identity_header: Option<String>,
    /// Whether ARM and Resource Graph throttle as the real services do ([`crate::throttle`]);
    /// off (the default, so tests of other things are not paced by ARM's refill), every answer
    /// reports full buckets.
    pub arm_throttling: bool,
    /// The Azure cloud whose host names the simulator serves ([`crate::cloud`]).
    pub cloud: crate::cloud::SimCloud,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            port: 0,
            identity_port: 0,
            ca_out: None,
            tls_out: None,
            workers: 2,
            identity_header: None,
            arm_throttling: false,
            cloud: crate::cloud::SimCloud::default(),
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding or writing the CA failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a client process needs to use the simulator (the binary's ready line).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimInfo {
    /// Always true on the ready line.
    pub ready: bool,
    /// HTTPS port serving ARM, Key Vault and the admin API.
    pub https_port: u16,
    /// Plain-HTTP port serving the managed-identity endpoint.
    pub identity_port: u16,
    /// Path of the CA PEM.
    pub ca_path: String,
    /// Value for `IDENTITY_ENDPOINT`.
    pub identity_endpoint: String,
    /// Value for `IDENTITY_HEADER`.
    pub identity_header: String,
    /// Value for `CMKGUARD_CONNECT_TO`.
    pub connect_to: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Base URL of the admin API over HTTPS (trust the CA).
    pub admin_url: String,
    /// Base URL of the admin API over plain HTTP.
    pub admin_http_url: String,
}

/// A running simulator. Dropping it does not stop the server (call [`Sim::stop`]), but it
/// removes the CA file it wrote when [`SimOptions::ca_out`] was not given.
pub struct Sim {
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    info: SimInfo,
    /// The temporary directory holding the CA, when the simulator chose where to write it.
    _ca_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// Binds both listeners, writes the CA, and starts serving `tenant`. Must be called inside
    /// a Tokio runtime. Requests queue on the bound sockets, so the simulator is usable as soon
    /// as this returns.
    pub async fn start(tenant: Tenant, options: SimOptions) -> Result<Sim, SimError> {
        let pki = tls::generate(options.cloud)?;
        let https = TcpListener::bind(("127.0.0.1", options.port))?;
        let identity = TcpListener::bind(("127.0.0.1", options.identity_port))?;
        let https_addr: SocketAddr = https.local_addr()?;
        let identity_addr: SocketAddr = identity.local_addr()?;
        // Without `ca_out` the CA goes into a temporary directory of its own, which the `Sim`
        // owns and removes when dropped.
        let (ca_path, ca_dir) = match &options.ca_out {
            Some(path) => (path.clone(), None),
            None => {
                let dir = tempfile::Builder::new().prefix("azure-sim-ca-").tempdir()?;
                (dir.path().join("ca.pem"), Some(dir))
            }
        };
        if let Some(parent) = ca_path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&ca_path, &pki.ca_pem)?;
        if let Some(dir) = &options.tls_out {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("server.pem"), &pki.server_cert_pem)?;
            std::fs::write(dir.join("server.key"), &pki.server_key_pem)?;
        }

        prewarm_key_material(&tenant);
        let identity_header = options
            .identity_header
            .clone()
            .unwrap_or_else(|| crate::ids::random_uuid().replace('-', ""));
        let info = SimInfo {
            ready: true,
            https_port: https_addr.port(),
            identity_port: identity_addr.port(),
            ca_path: ca_path.display().to_string(),
            identity_endpoint: format!("http://127.0.0.1:{}/msi/token", identity_addr.port()),
            identity_header: identity_header.clone(),
            connect_to: format!(
                "{arm}=127.0.0.1:{p},{vault}=127.0.0.1:{p}",
                arm = options.cloud.arm_host(),
                vault = options.cloud.vault_suffix(),
                p = https_addr.port()
            ),
            tenant_id: tenant.tenant_id.clone(),
            admin_url: format!("https://localhost:{}/_sim", https_addr.port()),
            admin_http_url: format!("http://127.0.0.1:{}/_sim", identity_addr.port()),
        };
        let shared = Arc::new(Shared {
            issuer: TokenIssuer::new(&tenant.tenant_id),
            tenant: Mutex::new(tenant),
            faults: Mutex::new(FaultTable::default()),
            telemetry: Mutex::new(Telemetry::default()),
            events: Mutex::new(Vec::new()),
            audit: Mutex::new(Vec::new()),
            identity_header,
            identity_port: identity_addr.port(),
            started: Instant::now(),
            info: Mutex::new(None),
            operations: Mutex::new(std::collections::HashMap::new()),
            graph_view: Mutex::new(None),
            throttle: Mutex::new(crate::throttle::Throttle::new(options.arm_throttling)),
            cloud: options.cloud,
        });
        *lock(&shared.info) = serde_json::to_value(&info).ok();

        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                .default_service(web::to(http::entry))
        })
        .workers(options.workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .listen_rustls_0_23(https, pki.server_config)?
        .listen(identity)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Sim {
            shared,
            handle,
            task,
            info,
            _ca_dir: ca_dir,
        })
    }

    /// Stops serving and waits for the workers to finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Ports, CA path, identity endpoint and secret.
    pub fn info(&self) -> &SimInfo {
        &self.info
    }

    /// The HTTPS port.
    pub fn https_port(&self) -> u16 {
        self.info.https_port
    }

    /// The managed-identity port.
    pub fn identity_port(&self) -> u16 {
        self.info.identity_port
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.info.ca_path).unwrap_or_default()
    }

    /// The environment a cmk-guard process needs to use this simulator.
    pub fn handler_env(&self) -> Vec<(String, String)> {
        vec![
            ("CMKGUARD_CA_BUNDLE".into(), self.info.ca_path.clone()),
            ("CMKGUARD_CONNECT_TO".into(), self.info.connect_to.clone()),
            (
                "IDENTITY_ENDPOINT".into(),
                self.info.identity_endpoint.clone(),
            ),
            ("IDENTITY_HEADER".into(), self.info.identity_header.clone()),
        ]
    }

    /// Reads the tenant.
    pub fn tenant<R>(&self, f: impl FnOnce(&Tenant) -> R) -> R {
        f(&lock(&self.shared.tenant))
    }

    /// Changes the tenant directly (no events are recorded; see [`Sim::admin`] for changes
    /// that emit the events Azure would).
    pub fn tenant_mut<R>(&self, f: impl FnOnce(&mut Tenant) -> R) -> R {
        f(&mut lock(&self.shared.tenant))
    }

    /// Makes Resource Graph answer from the tenant as it is now, until
    /// [`Sim::thaw_resource_graph`]: later changes are not indexed (the real service lags).
    pub fn freeze_resource_graph(&self) {
        let now = lock(&self.shared.tenant).clone();
        *lock(&self.shared.graph_view) = Some(now);
    }

    /// Resource Graph answers from the live tenant again.
    pub fn thaw_resource_graph(&self) {
        *lock(&self.shared.graph_view) = None;
    }

    /// Turns ARM's and Resource Graph's throttling on or off; turning it on starts from full
    /// buckets.
    pub fn set_arm_throttling(&self, enabled: bool) {
        *lock(&self.shared.throttle) = crate::throttle::Throttle::new(enabled);
    }

    /// Spends `reads` of `principal_id`'s read budget in `subscription`, as another tool signed
    /// in as the same identity would (only while throttling is on); returns how many ARM let
    /// through.
    pub fn spend_arm_reads(&self, subscription: &str, principal_id: &str, reads: usize) -> usize {
        let scope = crate::throttle::Scope::Subscription(subscription.to_ascii_lowercase());
        let mut throttle = lock(&self.shared.throttle);
        (0..reads)
            .filter(|_| {
                let now = self.shared.started.elapsed();
                matches!(
                    throttle.admit_at(now, &scope, principal_id, crate::throttle::Operation::Read),
                    crate::throttle::Admission::Granted(_)
                )
            })
            .count()
    }

    /// The app identity's object id (what the managed-identity endpoint signs in as).
    pub fn app_principal_id(&self) -> String {
        self.tenant(|t| t.app.principal_id.clone().unwrap_or_default())
    }

    /// Adds a fault rule; returns its id.
    pub fn add_fault(&self, fault: Fault) -> u64 {
        lock(&self.shared.faults).add(fault)
    }

    /// Removes one fault rule.
    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.shared.faults).remove(id)
    }

    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Fault rules with their hit counts.
    pub fn faults(&self) -> Vec<FaultState> {
        lock(&self.shared.faults).list()
    }

    /// Request counters.
    pub fn counters(&self) -> Counters {
        lock(&self.shared.telemetry).counters()
    }

    /// Recorded requests matching `filter`.
    pub fn requests(&self, filter: &RecordFilter) -> Vec<RequestRecord> {
        lock(&self.shared.telemetry).records(filter)
    }

    /// The most requests matching `filter` inside any window of `window`.
    pub fn peak_rate(&self, window: std::time::Duration, filter: &RecordFilter) -> PeakRate {
        lock(&self.shared.telemetry).peak_rate(window.as_secs_f64() * 1000.0, filter)
    }

    /// Clears counters and the request log.
    pub fn reset_counters(&self) {
        lock(&self.shared.telemetry).reset();
    }

    /// Events recorded for writes, oldest first (Event Grid schema).
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.events).clone()
    }

    /// Forgets recorded events.
    pub fn clear_events(&self) {
        lock(&self.shared.events).clear();
    }

    /// Key Vault `AuditEvent` records so far, oldest first, in the shape Azure Monitor streams
    /// them (one object per record; see [`Sim::audit_messages`] for message bodies).
    pub fn audit_records(&self) -> Vec<Value> {
        lock(&self.shared.audit).clone()
    }

    /// Takes the audit records so far: returns them, oldest first, and forgets them, as an Event
    /// Hub consumer checkpoints what it has read.
    pub fn drain_audit(&self) -> Vec<Value> {
        std::mem::take(&mut *lock(&self.shared.audit))
    }

    /// Takes the audit records so far as Event Hub message bodies, `{"records": [...]}` with at
    /// most `records_per_message` records each (at least one), ready for
    /// `cmk_guard_blackbox::event_hub_envelope`.
    pub fn audit_messages(&self, records_per_message: usize) -> Vec<Value> {
        crate::audit::messages(self.drain_audit(), records_per_message)
    }

    /// A token the simulator accepts, for `principal_id` (client id derived) and `audience`
    /// (`https://management.azure.com` or `https://vault.azure.net`).
    pub fn token_for(&self, principal_id: &str, audience: &str) -> String {
        let subject = Subject {
            object_id: principal_id.to_owned(),
            client_id: crate::ids::stable_uuid(&format!("client-of:{principal_id}")),
            mi_resource_id: None,
        };
        self.shared
            .issuer
            .issue(&subject, audience, crate::clock::now_unix())
            .0
    }

    /// A token for the app identity (what the managed-identity endpoint would issue).
    pub fn app_token(&self, audience: &str) -> String {
        let subject = self.tenant(|t| Subject {
            object_id: t.app.principal_id.clone().unwrap_or_default(),
            client_id: t.app.client_id.clone(),
            mi_resource_id: Some(t.app.resource_id.clone()),
        });
        self.shared
            .issuer
            .issue(&subject, audience, crate::clock::now_unix())
            .0
    }

    /// State changes for stories, the same as the admin HTTP API (`/_sim/...`): they record the
    /// events Azure would emit, attributed to the tenant's operator.
    pub fn admin(&self) -> crate::admin::Admin<'_> {
        crate::admin::Admin::new(&self.shared)
    }

    /// Records an event as if Azure had emitted it.
    pub fn push_event(&self, event: Value) {
        lock(&self.shared.events).push(event);
    }

    /// The actor admin changes are attributed to.
    pub fn operator(&self) -> Actor {
        self.tenant(crate::admin::operator_actor)
    }
}

/// Generates RSA material for the sizes the tenant uses in the background, so the first
/// data-plane GET of a key rarely waits for key generation.
fn prewarm_key_material(tenant: &Tenant) {
    let mut sizes: Vec<u32> = tenant
        .vaults
        .iter()
        .flat_map(|v| v.keys.iter())
        .filter(|k| k.kty.is_rsa())
        .filter_map(|k| k.key_size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for bits in sizes {
            if let Err(error) = material::rsa(bits) {
                tracing::warn!(message = "RSA material generation failed.", bits, %error);
            }
        }
    });
}
