//! Request plumbing shared by every surface: one actix handler takes each request, routes it by
//! listener and `Host` to a surface (ARM, Key Vault, managed identity, admin), authenticates it
//! the way that surface does, applies fault rules, runs the operation, records it, and adds the
//! headers the real service sends.

use crate::events::Actor;
use crate::faults::{FaultAction, FaultTable};
use crate::model::Tenant;
use crate::telemetry::{RequestRecord, Telemetry};
use crate::token::{Claims, TokenError, TokenIssuer, audience_is};
use crate::{admin, arm, identity, keyvault};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// State shared by all workers.
pub struct Shared {
    /// The tenant.
    pub tenant: Mutex<Tenant>,
    /// Fault rules.
    pub faults: Mutex<FaultTable>,
    /// Counters and request log.
    pub telemetry: Mutex<Telemetry>,
    /// Recorded events.
    pub events: Mutex<Vec<Value>>,
    /// Key Vault `AuditEvent` records, oldest first (see `audit`).
    pub audit: Mutex<Vec<Value>>,
    /// Token issuer/verifier.
    pub issuer: TokenIssuer,
    /// `IDENTITY_HEADER` secret.
    pub identity_header: String,
    /// Port of the plain-HTTP identity listener.
    pub identity_port: u16,
    /// Start time, for monotonic request times.
    pub started: Instant,
    /// The ready-line info, for `GET /_sim/info`.
    pub info: Mutex<Option<Value>>,
    /// Long-running operations: id → (resource id, polls so far).
    pub operations: Mutex<std::collections::HashMap<String, (String, u32)>>,
    /// What Resource Graph answers from while frozen: the tenant as it was (the real service
    /// indexes changes with a delay), `None` for the live tenant.
    pub graph_view: Mutex<Option<Tenant>>,
    /// ARM's throttling buckets and Resource Graph's quota (see `throttle`).
    pub throttle: Mutex<crate::throttle::Throttle>,
    /// The cloud whose host names are served (see `cloud`).
    pub cloud: crate::cloud::SimCloud,
}

/// Locks a mutex, recovering from poisoning (a panicked test must not wedge the simulator).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// ARM audiences (with and without trailing slash are both accepted).
pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];
/// Key Vault audience.
pub const VAULT_AUDIENCES: &[&str] = &["https://vault.azure.net"];

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `management.azure.com`.
    Arm,
    /// `{vault}.vault.azure.net`.
    KeyVault,
    /// The managed-identity endpoint (plain HTTP listener).
    Identity,
    /// `/_sim/*` on `localhost` or the plain listener.
    Admin,
    /// Entra ID's token endpoint, `POST /{tenant}/oauth2/v2.0/token` on `localhost` (the
    /// authority host `AZURE_AUTHORITY_HOST` names).
    Entra,
    /// Anything else.
    Unknown,
}

/// A parsed request.
pub struct Ctx<'a> {
    /// Shared state.
    pub shared: &'a Shared,
    /// Upper-case method.
    pub method: String,
    /// Lower-case host without port.
    pub host: String,
    /// Path as sent (percent-decoded).
    pub path: String,
    /// Non-empty path segments, original casing.
    pub segs: Vec<String>,
    /// Query pairs, decoded.
    pub query: Vec<(String, String)>,
    /// The request (headers).
    pub req: &'a HttpRequest,
    /// Body bytes.
    pub body: web::Bytes,
    /// Now, unix seconds.
    pub now: i64,
    /// Validated caller, once authenticated.
    pub caller: Option<Claims>,
    /// The RBAC actions (ARM actions, Key Vault data actions) checked for the caller, in order.
    pub checked: Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// Notes that the caller's right to `action` was checked (recorded with the request).
    pub fn check(&self, action: &str) {
        lock(&self.checked).push(action.to_owned());
    }

    /// A query parameter by name (case-insensitive).
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// Segment `i` equals `lit`, case-insensitively.
    pub fn seg_is(&self, i: usize, lit: &str) -> bool {
        self.segs
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(lit))
    }

    /// Segments as lower case, for matching.
    pub fn lower_segs(&self) -> Vec<String> {
        self.segs.iter().map(|s| s.to_ascii_lowercase()).collect()
    }

    /// The body as JSON (empty body = `{}`).
    pub fn json(&self) -> Result<Value, String> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body).map_err(|e| e.to_string())
    }

    /// Locks the tenant.
    pub fn tenant(&self) -> MutexGuard<'_, Tenant> {
        lock(&self.shared.tenant)
    }

    /// Records an event.
    pub fn emit(&self, event: Value) {
        lock(&self.shared.events).push(event);
    }

    /// The authenticated caller as an event actor.
    pub fn actor(&self, tenant: &Tenant, resource: &str) -> Actor {
        let (object_id, client_id, claims) = match &self.caller {
            Some(c) => (
                c.object_id.clone(),
                c.client_id.clone(),
                Some(c.raw.clone()),
            ),
            None => (tenant.operator_principal_id.clone(), String::new(), None),
        };
        let role = tenant
            .assignments_applying(&object_id, resource)
            .iter()
            .filter_map(|a| crate::roles::find(&a.role_definition_guid))
            .find(|d| !d.actions.is_empty())
            .map(|d| d.role_name.to_owned())
            .unwrap_or_else(|| "Contributor".to_owned());
        Actor {
            object_id,
            client_id,
            tenant_id: tenant.tenant_id.clone(),
            token_claims: claims,
            role,
        }
    }
}

/// A response before it becomes HTTP.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Id of the fault rule that produced this reply.
    pub fault: Option<u64>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
            fault: None,
        }
    }

    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    /// A reply without a body.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            fault: None,
        }
    }

    /// `{"error":{"code","message"}}`, the shape ARM and Key Vault share.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, json!({"error": {"code": code, "message": message}}))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// What a route resolved to.
pub struct Route {
    /// Operation name (Azure operationId where one exists).
    pub operation: &'static str,
    /// Addressed resource for counters (normalised by the recorder).
    pub resource: Option<String>,
    /// The operation.
    pub handler: fn(&mut Ctx) -> Reply,
    /// The Azure RBAC action ARM authorises (ARM only; `None` = no check).
    pub action: Option<String>,
}

fn host_of(req: &HttpRequest) -> String {
    let raw = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(actix_web::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default().to_owned()
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
            _ => raw,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Percent-decodes; `plus_is_space` for query strings (form encoding).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

fn surface(ctx: &Ctx) -> Surface {
    let plain = ctx.req.app_config().local_addr().port() == ctx.shared.identity_port;
    let admin_path = ctx.seg_is(0, "_sim");
    if plain {
        return if admin_path {
            Surface::Admin
        } else {
            Surface::Identity
        };
    }
    match ctx.host.as_str() {
        "management.azure.com" => Surface::Arm,
        "localhost" | "127.0.0.1" if admin_path => Surface::Admin,
        "localhost" | "127.0.0.1" if crate::entra::is_token_path(ctx) => Surface::Entra,
        h if h.ends_with(".vault.azure.net") && h.len() > ".vault.azure.net".len() => {
            Surface::KeyVault
        }
        _ => Surface::Unknown,
    }
}

/// The single actix handler.
pub async fn entry(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let shared: &Shared = &shared;
    let path = percent_decode(req.path(), false);
    // The host as the client named it (recorded); inside, the public cloud's names.
    let named_host = host_of(&req);
    let cloud = shared.cloud;
    let body = match std::str::from_utf8(&body) {
        Ok(text) if cloud != crate::cloud::SimCloud::Public => {
            web::Bytes::from(cloud.inbound(text))
        }
        _ => body,
    };
    let mut ctx = Ctx {
        shared,
        method: req.method().as_str().to_ascii_uppercase(),
        host: if cloud.is_foreign(&named_host) {
            format!("{named_host}.foreign")
        } else {
            cloud.inbound(&named_host)
        },
        segs: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        path,
        query: parse_query(req.query_string()),
        req: &req,
        body,
        now: crate::clock::now_unix(),
        caller: None,
        checked: Mutex::new(Vec::new()),
    };
    let surface = surface(&ctx);
    if surface == Surface::Admin {
        let reply = admin::handle(&mut ctx);
        return finish(&ctx, surface, reply);
    }
    let route = match surface {
        Surface::Arm => arm::route(&ctx),
        Surface::KeyVault => keyvault::route(&ctx),
        Surface::Identity => identity::route(&ctx),
        Surface::Entra => Ok(crate::entra::route(&ctx)),
        _ => Err(Reply::error(
            404,
            "HostNotFound",
            &format!("azure-sim does not serve host '{}'", ctx.host),
        )),
    };
    let (operation, resource, reply) = match route {
        Err(reply) => ("Unknown", None, reply),
        Ok(route) => {
            let reply = serve(&mut ctx, surface, &route).await;
            (route.operation, route.resource, reply)
        }
    };
    if surface == Surface::KeyVault {
        crate::audit::data_plane(&ctx, operation, &reply);
    }
    let fault = reply.fault;
    let record = RequestRecord {
        seq: 0,
        at_unix_ms: crate::clock::now_unix_ms(),
        at_ms: shared.started.elapsed().as_secs_f64() * 1000.0,
        method: ctx.method.clone(),
        host: named_host,
        path: ctx.path.clone(),
        operation: operation.to_owned(),
        resource: resource.map(|r| crate::ids::norm(&r)),
        status: reply.status,
        caller: ctx.caller.as_ref().map(|c| c.object_id.clone()),
        actions: std::mem::take(&mut *lock(&ctx.checked)),
        fault,
    };
    lock(&shared.telemetry).record(record);
    finish(&ctx, surface, outbound(cloud, reply))
}

async fn serve(ctx: &mut Ctx<'_>, surface: Surface, route: &Route) -> Reply {
    if let Err(reply) = authenticate(ctx, surface) {
        return reply;
    }
    // ARM counts a request against its buckets once it knows the caller, before anything else.
    let remaining = match crate::throttle::admit(ctx, surface == Surface::Arm, route.operation) {
        Ok(remaining) => remaining,
        Err(refused) => return refused,
    };
    let mut reply = serve_admitted(ctx, surface, route).await;
    crate::throttle::report(&mut reply, remaining);
    reply
}

async fn serve_admitted(ctx: &mut Ctx<'_>, surface: Surface, route: &Route) -> Reply {
    if let (Some(action), Some(scope)) = (&route.action, &route.resource)
        && let Err(reply) = arm::authorize(ctx, action, scope)
    {
        return reply;
    }
    let action = lock(&ctx.shared.faults).take(route.operation, &ctx.method, &ctx.host, &ctx.path);
    if let Some(action) = action {
        if !action.latency.is_zero() {
            tokio::time::sleep(action.latency).await;
        }
        if let Some(status) = action.status {
            return fault_reply(ctx, surface, &action, status);
        }
    }
    (route.handler)(ctx)
}

fn authenticate(ctx: &mut Ctx, surface: Surface) -> Result<(), Reply> {
    match surface {
        Surface::Arm => arm::authenticate(ctx),
        Surface::KeyVault => keyvault::authenticate(ctx),
        Surface::Identity => identity::authenticate(ctx),
        _ => Ok(()),
    }
}

/// Extracts and verifies a bearer token; `Ok(None)` when no Authorization header was sent.
pub fn bearer(ctx: &Ctx) -> Result<Option<Claims>, TokenError> {
    let Some(value) = ctx.header("authorization") else {
        return Ok(None);
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(TokenError::Malformed)?;
    ctx.shared.issuer.verify(token.trim(), ctx.now).map(Some)
}

/// Whether validated claims carry one of the accepted audiences.
pub fn audience_ok(claims: &Claims, accepted: &[&str]) -> bool {
    audience_is(&claims.audience, accepted)
}

fn fault_reply(ctx: &Ctx, surface: Surface, action: &FaultAction, status: u16) -> Reply {
    let body = action
        .body
        .clone()
        .unwrap_or_else(|| default_fault_body(ctx, surface, status));
    let mut reply = Reply::json(status, body);
    reply.fault = Some(action.id);
    if let Some(seconds) = action.retry_after {
        reply = reply.with_header("Retry-After", &seconds.to_string());
    }
    reply
}

fn default_fault_body(ctx: &Ctx, surface: Surface, status: u16) -> Value {
    let caller = ctx
        .caller
        .as_ref()
        .map(|c| c.object_id.clone())
        .unwrap_or_default();
    let (code, message) = match (surface, status) {
        (Surface::KeyVault, 429) => (
            "Throttled".to_owned(),
            "Request was not allowed because application exceeded its request quota. Please retry after the time specified in the Retry-After header.".to_owned(),
        ),
        (_, 429) => (
            "TooManyRequests".to_owned(),
            "The request is being throttled as the limit has been reached for operation type - 'Read_ObservationWindow_00:05:00'. For more information, see - https://aka.ms/srpthrottlinglimits".to_owned(),
        ),
        (Surface::KeyVault, 403) => (
            "Forbidden".to_owned(),
            format!("Caller is not authorized to perform action on resource.\r\nCaller: oid={caller}\r\nVault: {}", ctx.host),
        ),
        (_, 403) => (
            "AuthorizationFailed".to_owned(),
            format!(
                "The client '{caller}' with object id '{caller}' does not have authorization to perform action over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                ctx.path
            ),
        ),
        (_, 404) => ("ResourceNotFound".to_owned(), format!("The Resource '{}' was not found.", ctx.path)),
        (_, 500) => ("InternalServerError".to_owned(), "Encountered internal server error. Diagnostic information: timestamp '', subscription id '', tracking id '', request correlation id ''.".to_owned()),
        (_, 502) => ("BadGateway".to_owned(), "The gateway did not receive a response from the service.".to_owned()),
        (_, 503) => ("ServiceUnavailable".to_owned(), "The service is currently unavailable. Please retry the request later.".to_owned()),
        (_, 504) => ("GatewayTimeout".to_owned(), "The gateway did not receive a response within the specified time period.".to_owned()),
        (_, s) => (format!("Status{s}"), format!("azure-sim injected status {s}")),
    };
    if surface == Surface::Identity {
        return json!({"statusCode": status, "message": message, "correlationId": crate::ids::random_uuid()});
    }
    json!({"error": {"code": code, "message": message}})
}

/// The reply with every public host name in its headers and body replaced by `cloud`'s.
fn outbound(cloud: crate::cloud::SimCloud, mut reply: Reply) -> Reply {
    for (_, value) in &mut reply.headers {
        *value = cloud.outbound(value);
    }
    reply.body = reply.body.map(|body| cloud.outbound_json(body));
    reply
}

fn finish(ctx: &Ctx, surface: Surface, reply: Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    let request_id = crate::ids::random_uuid();
    builder.insert_header(("x-ms-request-id", request_id.as_str()));
    if let Some(client_id) = ctx.header("x-ms-client-request-id") {
        builder.insert_header(("x-ms-client-request-id", client_id));
    }
    match surface {
        Surface::Arm => {
            builder.insert_header(("x-ms-correlation-request-id", request_id.as_str()));
            builder.insert_header(("Cache-Control", "no-cache"));
        }
        Surface::KeyVault => {
            builder.insert_header(("x-ms-keyvault-region", "westeurope"));
            builder.insert_header(("x-ms-keyvault-service-version", "1.9.2171.1"));
            builder.insert_header((
                "x-ms-keyvault-network-info",
                "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
            ));
        }
        _ => {}
    }
    for (name, value) in &reply.headers {
        builder.append_header((name.as_str(), value.as_str()));
    }
    match reply.body {
        Some(body) => builder
            .content_type("application/json; charset=utf-8")
            .body(body.to_string()),
        None => builder.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let q = parse_query("api-version=2022-04-01&$filter=assignedTo(%27abc%27)&x");
        assert_eq!(q[1], ("$filter".to_owned(), "assignedTo('abc')".to_owned()));
        assert_eq!(q[2], ("x".to_owned(), String::new()));
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("a+b%2Fc", false), "a+b/c");
    }
}
