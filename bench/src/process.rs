//! Server processes under measurement: the release `cmk-guard serve` and the bare baseline,
//! started like the Functions host starts a custom handler and watched until the first answered
//! `GET /` (the cold-start figure). Stdout is drained so logging never blocks the server, and
//! the handler's own `elapsed_us` per invocation is collected from its JSON log lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first `GET /`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub pid: u32,
    /// Spawn → first answered `GET /`.
    pub cold_start: Duration,
    /// `elapsed_us` of every invocation the handler logged as evaluated.
    evaluated_us: Arc<Mutex<Vec<u64>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Spawns `binary args` with only `PATH`, the host's port variables and `env`, and waits for
    /// the first answered `GET /`, polling every millisecond.
    pub fn start(binary: &Path, args: &[&str], env: &[(String, String)]) -> Result<Self, String> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let evaluated_us = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            drain_log(out, evaluated_us.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain_lines(err, stderr.clone());
        }
        let pid = child.id();
        let mut server = Self {
            child,
            port,
            pid,
            cold_start: Duration::ZERO,
            evaluated_us,
            stderr,
        };
        loop {
            if answers_get(port) {
                server.cold_start = spawned.elapsed();
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before it was ready: {:?}",
                    binary.display(),
                    server.stderr_lines()
                ));
            }
            if spawned.elapsed() > READY_TIMEOUT {
                return Err(format!("{} was not ready in time", binary.display()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The handler's own time of each evaluated invocation so far, in microseconds.
    pub fn evaluated_us(&self) -> Vec<u64> {
        self.evaluated_us
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Forgets the invocation times collected so far.
    pub fn clear_evaluated_us(&self) {
        if let Ok(mut v) = self.evaluated_us.lock() {
            v.clear();
        }
    }

    /// What the process wrote on stderr.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// One `GET /` over a fresh connection; true when any HTTP status line comes back.
fn answers_get(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn drain_log(out: impl Read + Send + 'static, evaluated_us: Arc<Mutex<Vec<u64>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !line.contains("Invocation handled.") || !line.contains("\"evaluated\"") {
                continue;
            }
            let elapsed = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["fields"]["elapsed_us"].as_u64());
            if let (Some(elapsed), Ok(mut all)) = (elapsed, evaluated_us.lock()) {
                all.push(elapsed);
            }
        }
    });
}

fn drain_lines(out: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(mut all) = lines.lock() {
                all.push(line);
            }
        }
    });
}

/// The release binaries: beside this one (`target/release/`), or `CMKGUARD_BIN` for cmk-guard.
pub fn release_binary(name: &str) -> Result<PathBuf, String> {
    if name == "cmk-guard"
        && let Some(path) = std::env::var_os("CMKGUARD_BIN")
    {
        return Ok(PathBuf::from(path));
    }
    let here = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = here
        .parent()
        .ok_or_else(|| "the bench binary has no parent folder".to_owned())?;
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release -p cmk-guard -p azure-sim -p bench` first",
            path.display()
        ));
    }
    if !dir.ends_with("release") {
        eprintln!(
            "warning: {} is not a release build; the quality bars are defined on release builds",
            path.display()
        );
    }
    Ok(path)
}
