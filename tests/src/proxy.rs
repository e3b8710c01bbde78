//! A corporate HTTP proxy: it answers `CONNECT host:port` by opening a tunnel, as Squid and
//! every TLS-tunnelling proxy do, and records each target it was asked for. Like a proxy with
//! its own name resolution, it reaches host names under its configured suffixes at a fixed
//! address (the simulator); any other target is refused with `502`. Plain `http://` requests
//! through it are refused with `405` and recorded, so a test sees them too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// A running proxy; stops when dropped.
pub struct Proxy {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy on loopback that tunnels hosts ending in one of `suffixes` (or equal to
    /// one) to `upstream`. Must be called inside a Tokio runtime.
    pub async fn start(suffixes: &[&str], upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let suffixes: Arc<Vec<String>> =
            Arc::new(suffixes.iter().map(|s| s.to_ascii_lowercase()).collect());
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                let suffixes = suffixes.clone();
                tokio::spawn(async move {
                    let _ = tunnel(client, &seen, &suffixes, upstream).await;
                });
            }
        });
        Proxy {
            address,
            requests,
            task,
        }
    }

    /// The value for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Each request line it received (`CONNECT management.azure.com:443`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The distinct hosts it was asked to tunnel to, sorted.
    pub fn tunnelled_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .requests()
            .iter()
            .filter_map(|line| line.strip_prefix("CONNECT "))
            .filter_map(|target| target.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// Reads one request head; for a `CONNECT` to a known host, answers 200 and copies bytes both
/// ways until either side closes.
async fn tunnel(
    client: TcpStream,
    seen: &Mutex<Vec<String>>,
    suffixes: &[String],
    upstream: SocketAddr,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut request_line = String::new();
    client.read_line(&mut request_line).await?;
    let mut head = request_line.len();
    loop {
        let mut line = String::new();
        let read = client.read_line(&mut line).await?;
        head += read;
        if read == 0 || line == "\r\n" || line == "\n" || head > MAX_HEAD {
            break;
        }
    }
    let request_line = request_line.trim_end().to_owned();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request_line.clone());
    let mut words = request_line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "CONNECT" {
        return client
            .get_mut()
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    let host = target
        .rsplit_once(':')
        .map_or(target, |(host, _)| host)
        .to_ascii_lowercase();
    let known = suffixes.iter().any(|suffix| {
        host == *suffix
            || host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.ends_with('.'))
    });
    if !known {
        return client
            .get_mut()
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    let mut server = TcpStream::connect(upstream).await?;
    client
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // Bytes the client sent right after the head (a TLS hello) are in the reader's buffer.
    let buffered = client.buffer().to_vec();
    server.write_all(&buffered).await?;
    let mut client = client.into_inner();
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
