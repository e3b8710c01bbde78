//! Load from this process over loopback: `wrk` for raw throughput when it is installed (a C
//! client leaves the server the most CPU), otherwise and for everything else a Tokio/reqwest
//! client; summaries as percentiles.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the host sends with every invocation (azure-notes §H2).
const INVOCATION_ID_HEADER: &str = "X-Azure-Functions-InvocationId";

/// An HTTP client that never uses a proxy and keeps connections alive.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// POSTs `body` the way the host invokes a function; returns the status and the round trip.
pub async fn invoke(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header(INVOCATION_ID_HEADER, uuid::Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status().as_u16();
    response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: body: {e}"))?;
    Ok((status, started.elapsed()))
}

/// The `p`-th percentile (0–100) of an ascending slice, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Ascending copy.
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// A throughput run.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub requests: u64,
    pub failures: u64,
}

/// True when `wrk` is on the PATH.
pub fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// Runs `wrk` POSTing `body` to `url` with `connections` connections on one thread.
pub fn wrk(
    url: &str,
    body: &[u8],
    duration: Duration,
    connections: usize,
) -> Result<Throughput, String> {
    let script = std::env::temp_dir().join(format!("bench-wrk-{}.lua", uuid::Uuid::new_v4()));
    let body = String::from_utf8_lossy(body);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json; charset=utf-8\"\nwrk.headers[\"{INVOCATION_ID_HEADER}\"] = \"6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f\"\nwrk.body = [==[{body}]==]\n"
        ),
    )
    .map_err(|e| format!("wrk script: {e}"))?;
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    let number = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let requests_per_second =
        number("Requests/sec:").ok_or_else(|| format!("wrk printed no rate: {text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let failures = number("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    Ok(Throughput {
        requests_per_second,
        requests,
        failures,
    })
}

/// A closed loop: `concurrency` tasks each POSTing `make_body(n)` back to back for `duration`.
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    make_body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    concurrency: usize,
    duration: Duration,
) -> Throughput {
    let counter = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let (client, url, counter, failures, make_body) = (
            client.clone(),
            url.to_owned(),
            counter.clone(),
            failures.clone(),
            make_body.clone(),
        );
        tokio::spawn(async move {
            while started.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                match invoke(&client, &url, make_body(n)).await {
                    Ok((status, _)) if (200..300).contains(&status) => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    });
    futures_util::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = counter.load(Ordering::Relaxed);
    Throughput {
        requests_per_second: requests as f64 / elapsed,
        requests,
        failures: failures.load(Ordering::Relaxed),
    }
}
