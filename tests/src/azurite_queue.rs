//! A real Azurite Queue service for tests, and a small "queue host" that drives handler
//! processes the way the Functions host's queue trigger does (azure-notes, protocol §2.2):
//! it receives a message (hiding it for the visibility timeout), decodes its base64 text,
//! POSTs `{"Data":{"<binding>": "<the text as a JSON string>"}, "Metadata":{"DequeueCount":
//! "<n>", …}}`, deletes the message on a 2xx, leaves it to reappear otherwise, and moves it to
//! `<queue>-poison` once it has been dequeued `max_dequeue_count` times.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::Engine as _;
use serde_json::json;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};
use tokio::process::{Child, Command};

use crate::Handler;
use crate::azurite::{ACCOUNT, SAS_VERSION, drain, sign};
use crate::scratch::Scratch;

/// How long Azurite may take to start on a busy 2-core machine.
const STARTUP_TIMEOUT: StdDuration = StdDuration::from_secs(60);

/// A running Azurite Queue service, stopped when dropped.
pub struct AzuriteQueue {
    child: Child,
    endpoint: String,
    sas: String,
    http: reqwest::Client,
    _workdir: Scratch,
}

/// One message as the service lists it.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub pop_receipt: String,
    pub dequeue_count: u32,
    /// The message text as stored (base64 when written by cmk-guard).
    pub text: String,
}

impl Received {
    /// The text with its base64 undone (the host's default `messageEncoding`).
    pub fn decoded(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .decode(&self.text)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| self.text.clone())
    }
}

impl AzuriteQueue {
    /// Starts `azurite-queue` on 127.0.0.1 with a port the OS picks.
    pub async fn start() -> Self {
        let tools = std::env::var_os("CMKGUARD_TOOLS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join(".tools"));
        let binary = tools.join("node_modules/.bin/azurite-queue");
        assert!(
            binary.is_file(),
            "Azurite is not installed at {}: run scripts/test-tools",
            binary.display()
        );
        let workdir = Scratch::new("azurite-queue");
        let mut child = Command::new(binary)
            .args([
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                "0",
                "--inMemoryPersistence",
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
        tokio::spawn(drain(
            child.stdout.take().unwrap(),
            output.clone(),
            Some(ready_tx),
        ));
        tokio::spawn(drain(child.stderr.take().unwrap(), output.clone(), None));
        let endpoint = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(endpoint)) => endpoint,
            _ => panic!(
                "Azurite Queue did not report listening within {STARTUP_TIMEOUT:?}:\n{}",
                output.lock().unwrap()
            ),
        };
        AzuriteQueue {
            child,
            endpoint,
            sas: account_sas(),
            http: crate::http_client().build().unwrap(),
            _workdir: workdir,
        }
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1` (path-style).
    pub fn service_url(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint)
    }

    /// The service URL with an account SAS: what the handler gets as
    /// `AzureWebJobsStorage__queueServiceUri` in tests.
    pub fn service_sas_url(&self) -> String {
        format!("{}?{}", self.service_url(), self.sas)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}/{path}", self.service_url())).unwrap();
        url.set_query(Some(&self.sas));
        for (name, value) in query {
            url.query_pairs_mut().append_pair(name, value);
        }
        url.to_string()
    }

    /// Creates `queue` (and does nothing if it exists).
    pub async fn create_queue(&self, queue: &str) {
        let response = self
            .http
            .put(self.url(queue, &[]))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "creating queue {queue}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Puts a message with this exact text on `queue`.
    pub async fn send_text(&self, queue: &str, text: &str) {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            xml_escape(text)
        );
        let response = self
            .http
            .post(self.url(&format!("{queue}/messages"), &[]))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "sending to {queue}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Puts `text` base64-encoded on `queue`, as the host's default encoding expects.
    pub async fn send_base64(&self, queue: &str, text: &str) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        self.send_text(queue, &encoded).await;
    }

    /// Receives up to `count` messages, hiding them for `visibility` seconds.
    pub async fn receive(&self, queue: &str, count: u32, visibility: u32) -> Vec<Received> {
        let count = count.to_string();
        let visibility = visibility.to_string();
        let xml = self
            .get(
                &format!("{queue}/messages"),
                &[
                    ("numofmessages", &count),
                    ("visibilitytimeout", &visibility),
                ],
            )
            .await;
        parse_messages(&xml)
    }

    /// The messages of `queue` without dequeuing them (at most 32).
    pub async fn peek(&self, queue: &str) -> Vec<Received> {
        let xml = self
            .get(
                &format!("{queue}/messages"),
                &[("peekonly", "true"), ("numofmessages", "32")],
            )
            .await;
        parse_messages(&xml)
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> String {
        let response = self.http.get(self.url(path, query)).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        text
    }

    /// Deletes a received message.
    pub async fn delete(&self, queue: &str, message: &Received) {
        let response = self
            .http
            .delete(self.url(
                &format!("{queue}/messages/{}", message.id),
                &[("popreceipt", &message.pop_receipt)],
            ))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success() || response.status().as_u16() == 404,
            "deleting from {queue}: {}",
            response.status()
        );
    }
}

impl Drop for AzuriteQueue {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// An account SAS for the queue service (read, add, update, process), valid for a day.
fn account_sas() -> String {
    let expiry = (OffsetDateTime::now_utc() + Duration::days(1))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap();
    let (permissions, services, types) = ("rwdlaup", "q", "sco");
    // account, sp, ss, srt, st, se, sip, spr, sv, ses (encryption scope), then a newline.
    let string_to_sign = [
        ACCOUNT,
        permissions,
        services,
        types,
        "",
        &expiry,
        "",
        "",
        SAS_VERSION,
        "",
        "",
    ]
    .join("\n");
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("sig", &sign(&string_to_sign))
        .finish()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The text of `<tag>…</tag>` in `xml`.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

fn parse_messages(xml: &str) -> Vec<Received> {
    xml.split("<QueueMessage>")
        .skip(1)
        .filter_map(|item| {
            Some(Received {
                id: tag(item, "MessageId")?.to_owned(),
                pop_receipt: xml_unescape(tag(item, "PopReceipt").unwrap_or_default()),
                dequeue_count: tag(item, "DequeueCount")?.parse().ok()?,
                text: xml_unescape(tag(item, "MessageText").unwrap_or_default()),
            })
        })
        .collect()
}

/// The host's queue trigger, reduced to what cmk-guard sees: one function, one queue,
/// `max_dequeue_count` deliveries before the poison queue.
pub struct QueueHost<'a> {
    pub queue: &'a AzuriteQueue,
    pub name: String,
    pub function: &'static str,
    pub binding: &'static str,
    pub max_dequeue_count: u32,
    /// Seconds a message stays hidden after a failed delivery (host.json `visibilityTimeout`).
    pub visibility: u32,
}

/// One invocation the queue host made.
#[derive(Debug)]
pub struct Delivery {
    /// Which handler (its index in the slice given to [`QueueHost::run`]).
    pub instance: usize,
    pub dequeue_count: u32,
    pub message: String,
    pub reply: QueueReply,
}

/// The handler's answer to one queue invocation.
#[derive(Debug)]
pub struct QueueReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl QueueReply {
    /// The Outcome in `ReturnValue`.
    pub fn outcome(&self) -> &serde_json::Value {
        &self.body["ReturnValue"]
    }
}

impl QueueHost<'_> {
    /// The poison queue's name.
    pub fn poison(&self) -> String {
        format!("{}-poison", self.name)
    }

    /// The invocation body for one message, as the host builds it: the text as JSON text in
    /// a string, scalar metadata stringified.
    pub fn envelope(&self, message: &Received, text: &str) -> Vec<u8> {
        let now = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        json!({
            "Data": {self.binding: serde_json::to_string(text).unwrap()},
            "Metadata": {
                "DequeueCount": message.dequeue_count.to_string(),
                "Id": serde_json::to_string(&message.id).unwrap(),
                "PopReceipt": serde_json::to_string(&message.pop_receipt).unwrap(),
                "sys": {"MethodName": self.function, "UtcNow": now, "RandGuid": uuid::Uuid::new_v4().to_string()}
            }
        })
        .to_string()
        .into_bytes()
    }

    /// Delivers messages to `handlers` (a batch at a time, spread over the instances, all
    /// concurrently) until the queue is empty, and returns every invocation made. A message
    /// whose delivery failed comes back after the visibility timeout, as in Azure.
    pub async fn run(&self, handlers: &[&Handler]) -> Vec<Delivery> {
        let urls: Vec<String> = handlers.iter().map(|h| h.url("")).collect();
        self.run_at(&urls).await
    }

    /// As [`QueueHost::run`], for handlers at these base URLs (`http://127.0.0.1:<port>`).
    pub async fn run_at(&self, handlers: &[String]) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        let mut next = 0usize;
        loop {
            let batch = self.queue.receive(&self.name, 32, self.visibility).await;
            if batch.is_empty() {
                // Hidden messages (failed deliveries) reappear after the visibility timeout.
                if self.queue.peek(&self.name).await.is_empty() && !self.hidden_left().await {
                    return deliveries;
                }
                tokio::time::sleep(StdDuration::from_millis(200)).await;
                continue;
            }
            let invocations = batch.into_iter().map(|message| {
                let instance = next % handlers.len();
                next += 1;
                let url = format!("{}/{}", handlers[instance], self.function);
                async move {
                    let text = message.decoded();
                    if message.dequeue_count > self.max_dequeue_count {
                        self.queue.send_text(&self.poison(), &message.text).await;
                        self.queue.delete(&self.name, &message).await;
                        return None;
                    }
                    let reply = self.invoke(&url, self.envelope(&message, &text)).await;
                    if (200..300).contains(&reply.status) {
                        self.queue.delete(&self.name, &message).await;
                    }
                    Some(Delivery {
                        instance,
                        dequeue_count: message.dequeue_count,
                        message: text,
                        reply,
                    })
                }
            });
            deliveries.extend(
                futures_util::future::join_all(invocations)
                    .await
                    .into_iter()
                    .flatten(),
            );
        }
    }

    /// POSTs one invocation as the host does; a connection failure is a 503 (redelivered).
    async fn invoke(&self, url: &str, body: Vec<u8>) -> QueueReply {
        let sent = self
            .queue
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                });
                QueueReply { status, body }
            }
            Err(error) => QueueReply {
                status: 503,
                body: serde_json::Value::String(error.to_string()),
            },
        }
    }

    /// Whether the queue still holds messages, visible or not (its approximate count).
    async fn hidden_left(&self) -> bool {
        let response = self
            .queue
            .http
            .get(self.queue.url(&self.name, &[("comp", "metadata")]))
            .send()
            .await
            .unwrap();
        response
            .headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|count| count > 0)
    }
}
