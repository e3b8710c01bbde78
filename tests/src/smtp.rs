//! A real SMTP server for the black-box tests: aiosmtpd (installed by `scripts/test-tools`) with
//! STARTTLS required and AUTH, presenting the simulator's certificate for `localhost`, which
//! the handler trusts through `CMKGUARD_CA_BUNDLE`. Every accepted mail is kept as JSON (see
//! `handler/tests/support/smtp_server.py`), so a test reads what a mail client would show.

use std::path::Path;

use serde_json::Value;

use crate::scratch::Scratch;

/// The account the server accepts.
pub const USER: &str = "alerts";
/// Its password (a secret the handler must never log).
pub const PASSWORD: &str = "Sm7pPassw0rd";

/// A running server on 127.0.0.1, stopped when dropped; then its maildir is removed (fields
/// drop in order).
pub struct Smtp {
    _child: tokio::process::Child,
    pub port: u16,
    maildir: Scratch,
}

impl Smtp {
    /// Starts the server with the certificate and key the simulator wrote to `tls_dir`
    /// (`SimOptions::tls_out`), and waits until it accepts connections.
    pub async fn start(tls_dir: &Path) -> Smtp {
        let python = crate::repo_root().join(".tools/venv/bin/python");
        assert!(
            python.is_file(),
            "aiosmtpd is not installed: run scripts/test-tools"
        );
        let maildir = Scratch::new("mail");
        // A port found free can be taken by another process before aiosmtpd binds it: then
        // aiosmtpd exits without saying `ready`, and the next attempt takes another port.
        let mut last = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let mut child = tokio::process::Command::new(&python)
                .arg(crate::repo_root().join("handler/tests/support/smtp_server.py"))
                .args(["--port", &port.to_string(), "--maildir"])
                .arg(maildir.path())
                .arg("--cert")
                .arg(tls_dir.join("server.pem"))
                .arg("--key")
                .arg(tls_dir.join("server.key"))
                .args(["--user", USER, "--password", PASSWORD])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start aiosmtpd");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
            let ready =
                tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
            match ready {
                Ok(Ok(Some(line))) if line == "ready" => {
                    return Smtp {
                        _child: child,
                        port,
                        maildir,
                    };
                }
                // Exited before it was ready: most likely the port was taken meanwhile.
                Ok(Ok(None)) => last = format!("exited on port {port}: {:?}", child.wait().await),
                other => panic!("aiosmtpd did not start: {other:?}"),
            }
        }
        panic!("aiosmtpd did not start five times; last: {last}");
    }

    /// `CMKGUARD_SMTP_URL` for this server.
    pub fn url(&self) -> String {
        format!("smtp://{USER}:{PASSWORD}@localhost:{}", self.port)
    }

    /// Every mail accepted so far, oldest first.
    pub fn received(&self) -> Vec<Value> {
        let mut records: Vec<_> = std::fs::read_dir(self.maildir.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        records.sort();
        records
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}
