//! The request side of HTTP/1.1 for the tests' stand-in servers (the OTLP receiver, the
//! Application Insights and Logs Ingestion stand-in): a request line, headers, and a body by
//! Content-Length or chunked, on a keep-alive connection.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// One request as received: target, headers (names lower case) and the body's bytes.
pub struct RawRequest {
    /// The request target (path and query).
    pub target: String,
    /// Headers in order, names lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked; not decompressed.
    pub body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The next request on the connection; `None` when it ends (or ends early).
pub async fn read_request(reader: &mut BufReader<impl AsyncRead + Unpin>) -> Option<RawRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let body = read_body(reader, &headers).await?;
    Some(RawRequest {
        target,
        headers,
        body,
    })
}

/// The body by Content-Length or chunked; `None` when the connection ends early.
async fn read_body(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    headers: &[(String, String)],
) -> Option<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).await.unwrap_or(0) == 0 {
                return None;
            }
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let length = header(headers, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}
