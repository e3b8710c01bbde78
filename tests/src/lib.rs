//! The host harness: starts the real `cmk-guard` binary the way the Azure Functions host does
//! and talks to it the way the host does (azure-notes §H1–§H4).
//!
//! - the process gets `FUNCTIONS_CUSTOMHANDLER_PORT` (and its siblings) in its environment;
//! - readiness is polled with `GET /` every 25 ms, any HTTP answer meaning ready;
//! - invocations are chunked `POST /{FunctionName}` requests with the `X-Azure-Functions-*`
//!   headers, `traceparent` and the `{"Data":…,"Metadata":…}` envelope;
//! - a batch delivery becomes one concurrent invocation per event.

pub mod azurite;
pub mod azurite_queue;
pub mod http1;
pub mod ingest;
pub mod proxy;
pub mod render;
pub mod scratch;
pub mod sink;
pub mod smtp;
pub mod story;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_sim::{Sim, SimOptions, Tenant};
use futures_util::stream;
use scratch::Scratch;
use serde_json::{Value, json};

/// How long the host waits for readiness before giving up (host default).
const READINESS_TIMEOUT: Duration = Duration::from_secs(30);
/// The host's readiness polling interval.
const READINESS_POLL: Duration = Duration::from_millis(25);
/// The host version the harness claims to be.
pub const HOST_VERSION: &str = "4.1037.0.0";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `tests/fixtures`: real and derived payloads, each with its provenance in the folder's README.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The binary under test: `CMKGUARD_BIN`, else `target/debug/cmk-guard` (built by the test command).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CMKGUARD_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join("cmk-guard");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p cmk-guard` first (scripts/test does)",
        path.display()
    );
    path
}

/// Lines a child process wrote, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(self, reader: impl std::io::Read + Send + 'static) -> Self {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if let Ok(mut all) = lines.0.lock() {
                    all.push(line);
                }
            }
        });
        self
    }

    /// Everything written so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running handler process, killed on drop, with the simulated Azure tenant it talks to and
/// the scratch directory its state lives in (removed once the process is gone).
pub struct Handler {
    /// The simulated Azure the handler reads (counters, faults, tenant state).
    pub sim: Sim,
    child: Child,
    port: u16,
    http: reqwest::Client,
    pub stdout: Lines,
    pub stderr: Lines,
    /// Its SQLite state; dropped after `Drop::drop` has killed and reaped the child.
    _scratch: Scratch,
}

/// The handler's answer to one request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Reply {
    /// The Outcome in `ReturnValue`.
    pub fn outcome(&self) -> &Value {
        &self.body["ReturnValue"]
    }

    /// The host `Logs` lines.
    pub fn logs(&self) -> Vec<String> {
        self.body["Logs"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Handler {
    /// Starts the binary against the compliant default tenant with the host's variables plus
    /// `env`, and waits until it is ready.
    pub async fn start(env: &[(&str, &str)]) -> Handler {
        Self::start_with(Tenant::compliant().expect("compliant tenant"), env).await
    }

    /// Starts a simulator serving `tenant`, then the binary pointed at it.
    pub async fn start_with(tenant: Tenant, env: &[(&str, &str)]) -> Handler {
        let sim = Sim::start(tenant, SimOptions::default())
            .await
            .expect("start azure-sim");
        Self::launch(sim, env).await
    }

    /// Starts the binary pointed at an already running simulator (for tests that need the
    /// simulator's certificate or ports before the handler starts).
    pub async fn launch(sim: Sim, env: &[(&str, &str)]) -> Handler {
        let mut all: Vec<(String, String)> = sim.handler_env();
        // Each handler gets its own state unless the test shares one on purpose.
        let scratch = Scratch::new("handler");
        all.push(("CMKGUARD_STATE".into(), scratch.sqlite_state("state.db")));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // An idle pooled connection is dropped well before the handler's 5-second keep-alive
        // ends: otherwise a request sent just as the server closes it fails with a reset.
        let http = http_client()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(port, &pairs, &["serve"]);
            let stdout = Lines::default().collect(child.stdout.take().expect("stdout is piped"));
            let stderr = Lines::default().collect(child.stderr.take().expect("stderr is piped"));
            match wait_ready(&http, &mut child, port, &stderr).await {
                Ok(()) => {
                    return Handler {
                        sim,
                        child,
                        port,
                        http,
                        stdout,
                        stderr,
                        _scratch: scratch,
                    };
                }
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = error;
                }
            }
        }
        panic!("handler did not become ready: {last_error}");
    }

    /// The port the handler listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A plain GET.
    pub async fn get(&self, path: &str) -> Reply {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        read_reply(response).await
    }

    /// Invokes `function` the way the host does: chunked body, host headers, traceparent.
    pub async fn invoke(&self, function: &str, body: Vec<u8>) -> Reply {
        self.post_chunked(&format!("/{function}"), body).await
    }

    /// A chunked POST with the host's headers to any path (forwarded HTTP keeps `/api/...`).
    pub async fn post_chunked(&self, path: &str, body: Vec<u8>) -> Reply {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
        let response = self
            .http
            .post(self.url(path))
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("traceparent", format!("00-{}-{}-01", hex(16), hex(8)))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
            .send()
            .await
            .expect("POST");
        read_reply(response).await
    }

    /// Delivers `events` like the Event Grid extension: one concurrent invocation per event.
    pub async fn deliver(&self, function: &str, binding: &str, events: &[Value]) -> Vec<Reply> {
        let invocations = events
            .iter()
            .map(|event| self.invoke(function, envelope(binding, event, function)));
        futures_util::future::join_all(invocations).await
    }

    /// Sends SIGTERM, as the platform does when it stops an instance.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /` like the host until any HTTP answer, the process exiting, or the timeout.
async fn wait_ready(
    http: &reqwest::Client,
    child: &mut Child,
    port: u16,
    stderr: &Lines,
) -> Result<(), String> {
    let deadline = Instant::now() + READINESS_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "exited with {status}; stderr: {:?}",
                stderr.snapshot()
            ));
        }
        // An answer alone is not enough: `free_port` only found the port free a moment ago,
        // and when another process took it first, that process answers while our child fails
        // to bind and exits. The child must be the one listening.
        if http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
            && listens_on(child.id(), port)
        {
            return Ok(());
        }
        tokio::time::sleep(READINESS_POLL).await;
    }
    Err("timed out".into())
}

/// True when process `pid` holds a listening TCP socket on `port` (Linux: the socket inodes of
/// `/proc/net/tcp` and `tcp6` in state `LISTEN`, matched with the process's descriptors).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let listening: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
                    (local.ends_with(&wanted) && *state == "0A")
                        .then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    descriptors.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| listening.iter().any(|l| target.as_os_str() == l.as_str()))
    })
}

/// Spawns the binary with the host's environment for `port` plus `env`; stdio piped.
pub fn spawn(port: u16, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
        .env(
            "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
            uuid::Uuid::new_v4().to_string(),
        )
        .env("FUNCTIONS_HTTPWORKER_ID", uuid::Uuid::new_v4().to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("spawn cmk-guard")
}

/// Runs the binary with `args` to completion without the caller's environment (no PATH, no
/// Azure variables: what a command does with nothing configured): (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .output()
        .expect("run cmk-guard");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary with `args` to completion with exactly `env` (nothing inherited), as a
/// person or a pipeline with that configuration would: (exit code, stdout, stderr).
pub async fn run_cli_with<K, V>(
    args: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
) -> (Option<i32>, String, String)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let output = tokio::process::Command::new(binary())
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("run cmk-guard");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An HTTP client for loopback: no proxy, rustls on ring. reqwest is built without a crypto
/// provider of its own (it would bring aws-lc), so the process default is set to ring first.
pub fn http_client() -> reqwest::ClientBuilder {
    // Fails only when a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The envelope the host builds for an Event Grid trigger (azure-notes §H2.3).
pub fn envelope(binding: &str, event: &Value, method_name: &str) -> Vec<u8> {
    json!({
        "Data": { binding: event },
        "Metadata": {
            "data": event.get("data").cloned().unwrap_or(Value::Null),
            "sys": {"MethodName": method_name, "UtcNow": "2026-11-28T09:20:13.4120385Z", "RandGuid": uuid::Uuid::new_v4().to_string()}
        }
    })
    .to_string()
    .into_bytes()
}

/// The envelope the host builds for an Event Hub trigger with `cardinality: many`
/// (`tests/fixtures/keyvault-audit/host-request.eventHubTrigger.many.json`): `Data.<binding>`
/// holds one element per Event Hub message, each as JSON text (the binding's `dataType` is
/// string), and `Metadata` the partition context and one array entry per message — offsets,
/// sequence numbers from `first_sequence`, enqueued times that follow from them, application
/// and system properties.
pub fn event_hub_envelope(
    binding: &str,
    messages: &[Value],
    first_sequence: u64,
    method_name: &str,
) -> Vec<u8> {
    let texts: Vec<String> = messages.iter().map(Value::to_string).collect();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let now = rfc3339(time::OffsetDateTime::now_utc());
    // Enqueued times follow from the sequence numbers, as in a partition: a batch delivered
    // again is the same batch, to the last field.
    let enqueued_at = |sequence: u64| {
        let at = time::OffsetDateTime::from_unix_timestamp(1_795_000_000 + sequence as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        rfc3339(at).trim_end_matches('Z').to_owned()
    };
    let mut offset = first_sequence * 1024;
    let mut offsets = Vec::new();
    let mut sequences = Vec::new();
    let mut enqueued_times = Vec::new();
    let mut system = Vec::new();
    for (sequence, text) in (first_sequence..).zip(&texts) {
        let enqueued = enqueued_at(sequence);
        enqueued_times.push(json!(enqueued));
        offsets.push(json!(offset.to_string()));
        sequences.push(json!(sequence));
        system.push(json!({
            "x-opt-sequence-number": sequence,
            "x-opt-offset": offset,
            "x-opt-enqueued-time": format!("{enqueued}+00:00"),
            "SequenceNumber": sequence,
            "Offset": offset,
            "PartitionKey": null,
            "EnqueuedTimeUtc": enqueued,
        }));
        offset += text.len() as u64;
    }
    json!({
        "Data": { binding: texts },
        "Metadata": {
            "PartitionContext": {
                "FullyQualifiedNamespace": "evhns-cmkguard.servicebus.windows.net",
                "EventHubName": "kv-audit",
                "ConsumerGroup": "cmk-guard",
                "PartitionId": "0"
            },
            "PartitionKeyArray": [],
            "OffsetArray": offsets,
            "SequenceNumberArray": sequences,
            "EnqueuedTimeUtcArray": enqueued_times,
            "PropertiesArray": vec![json!({}); texts.len()],
            "SystemPropertiesArray": system,
            "sys": {"MethodName": method_name, "UtcNow": now, "RandGuid": uuid::Uuid::new_v4().to_string()}
        }
    })
    .to_string()
    .into_bytes()
}

/// The envelope the host builds for a timer trigger (azure-notes §H2.4).
pub fn timer_envelope(binding: &str) -> Vec<u8> {
    json!({
        "Data": { binding: {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false} },
        "Metadata": {"sys": {"MethodName": "Sweep", "UtcNow": "2026-11-28T12:00:00.0131455Z", "RandGuid": uuid::Uuid::new_v4().to_string()}}
    })
    .to_string()
    .into_bytes()
}

async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        content_type,
        body,
    }
}

fn hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

/// Reads a JSON fixture file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_names_the_process_that_holds_the_port() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        assert!(listens_on(std::process::id(), port));
        // Another process (the parent here) does not hold it.
        assert!(!listens_on(std::os::unix::process::parent_id(), port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }

    /// Each value's JSON type, recursively; arrays keep one entry per element.
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
            Value::String(_) => json!("string"),
            Value::Number(_) => json!("number"),
            Value::Bool(_) => json!("bool"),
            Value::Null => json!("null"),
        }
    }

    #[test]
    fn event_hub_envelope_has_the_host_request_fixture_shape() {
        let fixture = read_json(
            &fixtures_dir().join("keyvault-audit/host-request.eventHubTrigger.many.json"),
        );
        let messages: Vec<Value> = fixture["Data"]["messages"]
            .as_array()
            .expect("the fixture holds messages")
            .iter()
            .map(|text| serde_json::from_str(text.as_str().expect("JSON text")).expect("JSON"))
            .collect();
        let built: Value = serde_json::from_slice(&event_hub_envelope(
            "messages",
            &messages,
            59,
            "OnKeyVaultAudit",
        ))
        .expect("the envelope is JSON");
        assert_eq!(shape(&built), shape(&fixture));
        // Each message goes as JSON text of the document it was given.
        let texts = built["Data"]["messages"].as_array().unwrap();
        for (text, message) in texts.iter().zip(&messages) {
            let parsed: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
            assert_eq!(&parsed, message);
        }
        let metadata = &built["Metadata"];
        assert_eq!(metadata["SequenceNumberArray"], json!([59, 60]));
        assert_eq!(metadata["SystemPropertiesArray"][1]["SequenceNumber"], 60);
        assert_eq!(metadata["sys"]["MethodName"], "OnKeyVaultAudit");
        let offsets = &metadata["OffsetArray"];
        let offset = |i: usize| offsets[i].as_str().unwrap().parse::<u64>().unwrap();
        assert!(offset(1) > offset(0), "offsets grow: {offsets}");
        assert_eq!(
            metadata["PartitionContext"],
            fixture["Metadata"]["PartitionContext"]
        );
    }
}
