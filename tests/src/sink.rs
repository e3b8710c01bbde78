//! An HTTP sink standing in for a Teams Workflows webhook or a generic webhook: it answers
//! `202 Accepted` like Workflows (or the statuses a test scripts) and keeps every request body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as sent, for checking signatures over its exact bytes.
    pub raw: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running sink on 127.0.0.1.
#[derive(Clone)]
pub struct Sink {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Sink {
    /// Starts the sink; it serves until the test's runtime ends.
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let sink = Sink {
            port,
            received: Arc::default(),
            statuses: Arc::default(),
        };
        let serving = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = serving.clone();
                tokio::spawn(async move { sink.serve(stream).await });
            }
        });
        sink
    }

    /// A webhook URL on the sink, with a `sig` secret in the query like a Workflows URL.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{path}?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sig=SinkS3cretSig",
            self.port
        )
    }

    /// Answers the next requests with these statuses (then 202 again).
    pub fn script(&self, statuses: &[u16]) {
        if let Ok(mut queue) = self.statuses.lock() {
            queue.extend(statuses);
        }
    }

    /// Everything received on `path` so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .map(|r| r.iter().filter(|r| r.path == path).cloned().collect())
            .unwrap_or_default()
    }

    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_owned();
            let mut length = 0usize;
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            let status = self
                .statuses
                .lock()
                .ok()
                .and_then(|mut q| q.pop_front())
                .unwrap_or(202);
            if status == 202 {
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Ok(mut received) = self.received.lock() {
                    received.push(Received {
                        path,
                        body: json,
                        headers,
                        raw: body,
                    });
                }
            }
            let reason = if status == 202 { "Accepted" } else { "Error" };
            let extra = if status == 429 {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            let response =
                format!("HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\n\r\n");
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
}
