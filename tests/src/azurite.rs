//! A real Azurite Blob service for tests: installed by `scripts/test-tools`, started on a
//! loopback port the OS picks, reached with a container SAS signed with the emulator's
//! well-known account key (the Blob SDK has no Shared Key support, and Azurite hands out no
//! Entra tokens over plain HTTP); each container is created with a hand-signed Shared Key
//! request. Used by the state store suite and the black-box tests.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::scratch::Scratch;

/// The emulator's documented development account.
pub(crate) const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The service version used for the SAS and the container request (supported by Azurite 3.x).
pub(crate) const SAS_VERSION: &str = "2021-08-06";
/// How long Azurite may take to start on a busy 2-core machine.
const STARTUP_TIMEOUT: StdDuration = StdDuration::from_secs(60);

/// A running Azurite Blob service, stopped when dropped.
pub struct Azurite {
    child: Child,
    endpoint: String,
    /// Its working directory, removed after the process has been told to stop.
    _workdir: Scratch,
}

impl Azurite {
    /// `.tools/node_modules/.bin/azurite-blob` of the repository, or under `CMKGUARD_TOOLS`.
    fn binary() -> PathBuf {
        let tools = std::env::var_os("CMKGUARD_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join(".tools"));
        let binary = tools.join("node_modules/.bin/azurite-blob");
        assert!(
            binary.is_file(),
            "Azurite is not installed at {}: run scripts/test-tools (or set CMKGUARD_TOOLS to \
             the folder it installs into)",
            binary.display()
        );
        binary
    }

    /// Starts Azurite on 127.0.0.1 with a port the OS picks, and waits until it says it
    /// listens. The SDK's x-ms-version is newer than Azurite 3.35 knows, hence
    /// `--skipApiVersionCheck`.
    pub async fn start() -> Self {
        let workdir = Scratch::new("azurite");
        let mut child = Command::new(Self::binary())
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "256",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ])
            .current_dir(workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting Azurite: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(drain(stdout, output.clone(), Some(ready_tx)));
        tokio::spawn(drain(stderr, output.clone(), None));
        let endpoint = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(endpoint)) => endpoint,
            _ => panic!(
                "Azurite exited or did not report listening within {STARTUP_TIMEOUT:?}; its output:\n{}",
                output.lock().unwrap()
            ),
        };
        Azurite {
            child,
            endpoint,
            _workdir: workdir,
        }
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1` (path-style, as the emulator expects).
    pub fn account_url(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint)
    }

    /// Creates a container with a Shared Key request signed with the development key.
    pub async fn create_container(&self, container: &str) {
        let date = OffsetDateTime::now_utc()
            .format(format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .unwrap();
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{SAS_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
        );
        let signature = sign(&string_to_sign);
        let client = crate::http_client().build().unwrap();
        let response = client
            .put(format!(
                "{}/{container}?restype=container",
                self.account_url()
            ))
            .header("x-ms-date", date)
            .header("x-ms-version", SAS_VERSION)
            .header("Content-Length", "0")
            .header("Authorization", format!("SharedKey {ACCOUNT}:{signature}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status.as_u16(),
            201,
            "creating container {container}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// A container URL with a service SAS (read, add, create, write, delete, list) valid for a
    /// day, signed with the development key.
    pub fn container_sas_url(&self, container: &str) -> String {
        let expiry = (OffsetDateTime::now_utc() + Duration::days(1))
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap();
        let permissions = "racwdl";
        // sp, st, se, resource, si, sip, spr, sv, sr, snapshot, ses, rscc, rscd, rsce, rscl, rsct
        let string_to_sign = [
            permissions,
            "",
            &expiry,
            &format!("/blob/{ACCOUNT}/{container}"),
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sv", SAS_VERSION)
            .append_pair("se", &expiry)
            .append_pair("sr", "c")
            .append_pair("sp", permissions)
            .append_pair("sig", &sign(&string_to_sign))
            .finish();
        format!("{}/{container}?{query}", self.account_url())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies a pipe of Azurite into `output`; on the stdout pipe, reports the listening URL.
pub(crate) async fn drain(
    pipe: impl AsyncRead + Unpin,
    output: Arc<Mutex<String>>,
    mut ready: Option<tokio::sync::oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(url) = line
            .split_once("successfully listens on ")
            .map(|(_, url)| url.trim().trim_end_matches('/').to_owned())
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(url);
        }
        let mut output = output.lock().unwrap();
        output.push_str(&line);
        output.push('\n');
    }
}

/// base64(HMAC-SHA256(base64decode(account key), text)): the Shared Key and SAS signature.
pub(crate) fn sign(text: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(ACCOUNT_KEY).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(text.as_bytes());
    engine.encode(mac.finalize().into_bytes())
}
