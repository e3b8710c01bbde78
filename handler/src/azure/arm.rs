//! The Azure Resource Manager client: every read goes through here, on the `azure_core` 1.x
//! pipeline (client request id, user agent, bearer auth), with a retry policy that honours
//! `Retry-After` but never waits past the caller's deadline, and a guard that refuses to send
//! anything (and so any token) to a host other than the configured ARM endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions,
    StatusCode, Transport, Url,
};
use serde_json::Value;
use tokio::time::Instant;

use super::error::{AzureError, ErrorKind};
use super::ratelimit::{RateLimitPolicy, RateLimiter, Throttled};
use super::retry::{Deadline, DeadlineRetryPolicy, RetrySettings, fits_before, retry_after};
use super::scope::{OutOfScope, SubscriptionScope, SubscriptionScopePolicy};

/// The api-version pinned per resource provider (azure-notes §0); overridable with
/// `CMKGUARD_API_VERSIONS` because a region may not serve the newest yet (azure-notes Trap T20).
pub const DEFAULT_API_VERSIONS: &[(&str, &str)] = &[
    ("Microsoft.KeyVault", "2026-02-01"),
    ("Microsoft.MachineLearningServices", "2026-09-01"),
    ("Microsoft.Authorization", "2022-04-01"),
    ("Microsoft.ResourceGraph", "2024-04-01"),
    ("Microsoft.Resources", "2021-04-01"),
    ("Microsoft.Storage", "2026-09-01"),
    ("Microsoft.DocumentDB", "2026-07-15"),
    ("Microsoft.Search", "2025-05-01"),
    ("Microsoft.EventGrid", "2022-06-15"),
    ("Microsoft.Insights", "2021-05-01-preview"),
    ("Microsoft.Management", "2020-05-01"),
];

/// Why `CMKGUARD_API_VERSIONS` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiVersionError {
    #[error("`{0}` is not `Namespace=api-version`")]
    Entry(String),
    #[error("`{0}` is not an api-version such as 2025-09-01")]
    NotAVersion(String),
}

/// api-versions by provider namespace (lower-case keys).
#[derive(Debug, Clone)]
pub struct ApiVersions(BTreeMap<String, String>);

impl ApiVersions {
    /// The defaults with `overrides` (`Namespace=version,…`) applied.
    pub fn with_overrides(overrides: Option<&str>) -> Result<Self, ApiVersionError> {
        let mut versions: BTreeMap<String, String> = DEFAULT_API_VERSIONS
            .iter()
            .map(|(ns, v)| (ns.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        for entry in overrides
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (namespace, version) = entry
                .split_once('=')
                .ok_or_else(|| ApiVersionError::Entry(entry.to_owned()))?;
            let version = version.trim();
            let valid = version.len() >= 10
                && version[..10].bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            if !valid {
                return Err(ApiVersionError::NotAVersion(version.to_owned()));
            }
            versions.insert(namespace.trim().to_ascii_lowercase(), version.to_owned());
        }
        Ok(Self(versions))
    }

    /// The version for a provider namespace.
    pub fn get(&self, namespace: &str) -> &str {
        self.0
            .get(&namespace.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("2021-04-01")
    }
}

/// Resource Manager client.
#[derive(Debug, Clone)]
pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    api_versions: Arc<ApiVersions>,
    scope: SubscriptionScope,
}

impl ArmClient {
    /// A client for `endpoint` using `credential` and the shared transport.
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        transport: Transport,
        api_versions: ApiVersions,
        retry: RetrySettings,
        limiter: RateLimiter,
        subscriptions: SubscriptionScope,
    ) -> Self {
        let scope = format!("{}/.default", endpoint.as_str().trim_end_matches('/'));
        let options = ClientOptions {
            transport: Some(transport),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        };
        let per_call: Vec<Arc<dyn Policy>> = vec![Arc::new(DeadlineRetryPolicy::new(retry))];
        // The rate limit comes last, right before the transport: a token fetch in between
        // would delay a granted request into the next second as Azure counts it.
        let per_try: Vec<Arc<dyn Policy>> = vec![
            Arc::new(TrustedHostPolicy {
                endpoint: endpoint.clone(),
            }),
            // Beside the host guard, on the URL as it leaves (nextLinks and Locations included).
            Arc::new(SubscriptionScopePolicy {
                scope: subscriptions.clone(),
            }),
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, vec![scope])),
            Arc::new(RateLimitPolicy { limiter }),
            // Last, so the span and the duration cover the HTTP exchange only.
            Arc::new(crate::telemetry::AzureTelemetryPolicy { service: "arm" }),
        ];
        let pipeline = Pipeline::new(
            Some("cmk-guard"),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            per_call,
            per_try,
            None,
        );
        Self {
            pipeline,
            endpoint,
            api_versions: Arc::new(api_versions),
            scope: subscriptions,
        }
    }

    /// The subscriptions this client may reach (remediations check a target before writing).
    pub fn scope(&self) -> &SubscriptionScope {
        &self.scope
    }

    /// The api-versions in force.
    pub fn api_versions(&self) -> &ApiVersions {
        &self.api_versions
    }

    /// `GET {path}?api-version=…&{query}` → the JSON body.
    pub async fn get(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Value, AzureError> {
        let url = self.url(path, api_version, query)?;
        self.send(Method::Get, url, None, deadline).await
    }

    /// A list operation: follows `nextLink` (on the ARM host only) and returns every `value` item.
    pub async fn list(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Vec<Value>, AzureError> {
        self.list_pages(path, api_version, query, (MAX_PAGES, false), deadline)
            .await
    }

    /// [`ArmClient::list`] of at most `max_pages` pages whose every `nextLink` keeps the first
    /// request's path (only its query, such as `$skiptoken`, may change): for tenant-level
    /// lists, whose pages the subscription scope cannot check by their path.
    pub async fn list_at_path(
        &self,
        path: &str,
        api_version: &str,
        max_pages: usize,
        deadline: Instant,
    ) -> Result<Vec<Value>, AzureError> {
        self.list_pages(path, api_version, &[], (max_pages, true), deadline)
            .await
    }

    async fn list_pages(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
        (max_pages, keep_path): (usize, bool),
        deadline: Instant,
    ) -> Result<Vec<Value>, AzureError> {
        let mut url = self.url(path, api_version, query)?;
        let first_path = url.path().to_owned();
        let mut items = Vec::new();
        // A nextLink that leads back to a page already read would page until the deadline.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..max_pages {
            if keep_path && !url.path().eq_ignore_ascii_case(&first_path) {
                return Err(refused(
                    &url,
                    format!("nextLink leaves {first_path} for another path"),
                ));
            }
            if !seen.insert(url.as_str().to_owned()) {
                return Err(AzureError::transport(
                    describe(&Method::Get, &url),
                    ErrorKind::Permanent,
                    "nextLink leads back to a page already read",
                ));
            }
            let page = self.send(Method::Get, url.clone(), None, deadline).await?;
            if let Some(Value::Array(values)) = page.get("value") {
                items.extend(values.iter().cloned());
            }
            match page
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
            {
                Some(next) => {
                    url = Url::parse(next)
                        .map_err(|e| refused(&url, format!("nextLink is not a URL: {e}")))?;
                }
                None => return Ok(items),
            }
        }
        Err(AzureError::transport(
            describe(&Method::Get, &url),
            ErrorKind::Permanent,
            format!("more than {max_pages} pages"),
        ))
    }

    /// `POST {path}?api-version=…` with a JSON body → the JSON body.
    pub async fn post(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, AzureError> {
        let url = self.url(path, api_version, &[])?;
        self.send(Method::Post, url, Some(body), deadline).await
    }

    fn url(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, AzureError> {
        request_url(&self.endpoint, path, api_version, query)
    }

    /// `PUT {path}?api-version=…` with a JSON body; a 201/202 long-running operation is
    /// followed to its end (azure-notes §6.3).
    pub async fn put(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, AzureError> {
        let url = self.url(path, api_version, &[])?;
        self.send(Method::Put, url, Some(body), deadline).await
    }

    /// `PATCH {path}?api-version=…` with a JSON body; a 202 long-running operation is followed
    /// to its end.
    pub async fn patch(
        &self,
        path: &str,
        api_version: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, AzureError> {
        let url = self.url(path, api_version, &[])?;
        self.send(Method::Patch, url, Some(body), deadline).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, AzureError> {
        let description = describe(&method, &url);
        let mut answer = self.send_once(method, url, body, deadline).await?;
        // 202 + Location (+ Retry-After): poll the Location (on the ARM host only) until it
        // stops answering 202. Callers verify the result by reading the resource again.
        while answer.status == StatusCode::Accepted {
            let Some(location) = answer.location.take() else {
                break;
            };
            let next = Url::parse(&location)
                .map_err(|e| refused(&self.endpoint, format!("Location is not a URL: {e}")))?;
            let wait = answer.retry_after.unwrap_or(Duration::from_secs(1));
            if !fits_before(wait, deadline) {
                return Err(AzureError::transport(
                    description,
                    ErrorKind::Transient,
                    "the long-running operation did not finish before the deadline",
                ));
            }
            tokio::time::sleep(wait).await;
            answer = self.send_once(Method::Get, next, None, deadline).await?;
        }
        if answer.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            AzureError::transport(
                description,
                ErrorKind::Permanent,
                format!("response is not JSON: {e}"),
            )
        })
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Answer, AzureError> {
        let description = describe(&method, &url);
        let mut request = Request::new(url, method);
        request.insert_header("accept", "application/json");
        if let Some(body) = body {
            request.insert_header("content-type", "application/json");
            request.set_body(body.to_string());
        }
        let ctx = Context::new().with_value(Deadline(deadline));
        let options = PipelineSendOptions {
            skip_checks: true,
            ..PipelineSendOptions::default()
        };
        let response = tokio::time::timeout_at(
            deadline,
            self.pipeline.send(&ctx, &mut request, Some(options)),
        )
        .await
        .map_err(|_| {
            AzureError::transport(
                description.clone(),
                ErrorKind::Transient,
                "deadline reached",
            )
        })?
        .map_err(|e| from_core_error(description.clone(), &e))?;
        let status = response.status();
        let location = response
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "location",
            ))
            .map(str::to_owned);
        let retry_after = retry_after(response.headers());
        let body = response.into_body();
        if !status.is_success() {
            return Err(AzureError::from_response(description, status, &body));
        }
        Ok(Answer {
            status,
            location,
            retry_after,
            body: body.to_vec(),
        })
    }
}

/// The URL of an ARM request: `endpoint` + `path` + `?api-version=…&{query}`. The path is built
/// segment by segment, each one checked as ids are, so the URL names exactly the resource the
/// path names: no dot segment, encoded separator or backslash can be resolved away on the way
/// (the fuzz target `ids` checks that the URL keeps an id's subscription and segments).
pub fn request_url(
    endpoint: &Url,
    path: &str,
    api_version: &str,
    query: &[(&str, &str)],
) -> Result<Url, AzureError> {
    let refuse = |why: String| {
        AzureError::transport(
            format!("request to {}", crate::ids::truncate(path)),
            ErrorKind::Refused,
            format!("not an ARM path: {why}"),
        )
    };
    let relative = path
        .strip_prefix('/')
        .ok_or_else(|| refuse("it must start with `/`".to_owned()))?;
    let segments: Vec<&str> = relative.split('/').collect();
    for segment in &segments {
        crate::ids::check_segment(segment).map_err(|why| refuse(why.to_string()))?;
    }
    let mut url = endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| refuse("the ARM endpoint cannot hold a path".to_owned()))?
        .clear()
        .extend(segments);
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("api-version", api_version);
        for (key, value) in query {
            pairs.append_pair(key, value);
        }
    }
    Ok(url)
}

/// One response of the pipeline, as far as the client needs it.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// Paging stops here; no list cmk-guard reads is that long.
const MAX_PAGES: usize = 1000;

/// `GET https://host/path`, without the query (it may carry tokens in nextLinks).
fn describe(method: &Method, url: &Url) -> String {
    format!(
        "{} {}://{}{}",
        method,
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    )
}

fn refused(url: &Url, message: String) -> AzureError {
    AzureError::transport(describe(&Method::Get, url), ErrorKind::Refused, message)
}

fn from_core_error(request: String, error: &azure_core::Error) -> AzureError {
    let kind = if caused_by::<Throttled>(error) {
        ErrorKind::Transient
    } else if caused_by::<UntrustedHost>(error) || caused_by::<OutOfScope>(error) {
        ErrorKind::Refused
    } else {
        match error.kind() {
            azure_core::error::ErrorKind::Io
            | azure_core::error::ErrorKind::Connection
            | azure_core::error::ErrorKind::Credential => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        }
    };
    AzureError::transport(request, kind, crate::ids::truncate(&error.to_string()))
}

/// True when one of our policies stopped the request with a `T` (anywhere in the cause chain,
/// should a policy after it add context).
fn caused_by<T: std::error::Error + 'static>(error: &azure_core::Error) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |cause| {
        cause.source()
    })
    .any(|cause| cause.is::<T>())
}

/// A request to another host than the ARM endpoint, refused before it was sent.
#[derive(Debug, thiserror::Error)]
#[error("refused to send a request to an untrusted host {host}")]
struct UntrustedHost {
    host: String,
}

/// Refuses requests to any host but the ARM endpoint, so a token can never leak elsewhere
/// (a `nextLink` or a resource id cannot redirect it).
#[derive(Debug)]
struct TrustedHostPolicy {
    endpoint: Url,
}

#[async_trait]
impl Policy for TrustedHostPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let url = request.url();
        let trusted = url.scheme() == "https"
            && url.host_str().map(str::to_ascii_lowercase)
                == self.endpoint.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.endpoint.port_or_known_default();
        if !trusted {
            return Err(azure_core::Error::new(
                azure_core::error::ErrorKind::Other,
                UntrustedHost {
                    host: url.host_str().unwrap_or_default().to_owned(),
                },
            ));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_pinned_and_overridable() {
        let versions =
            ApiVersions::with_overrides(Some("microsoft.machinelearningservices=2025-09-01"))
                .unwrap();
        assert_eq!(
            versions.get("Microsoft.MachineLearningServices"),
            "2025-09-01"
        );
        assert_eq!(versions.get("Microsoft.KeyVault"), "2026-02-01");
        assert!(ApiVersions::with_overrides(Some("Microsoft.KeyVault")).is_err());
        assert!(ApiVersions::with_overrides(Some("Microsoft.KeyVault=latest")).is_err());
        assert!(ApiVersions::with_overrides(Some("Microsoft.KeyVault=2025-05-01-preview")).is_ok());
    }

    #[test]
    fn paths_are_built_segment_by_segment_and_checked() {
        let client = client_for_tests();
        let sub = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";
        let url = client
            .url(&format!("/subscriptions/{sub}/resourceGroups/rg.1/providers/Microsoft.KeyVault/vaults/kv"), "2026-02-01", &[("$filter", "a b")])
            .unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://management.azure.com/subscriptions/{sub}/resourceGroups/rg.1/providers/Microsoft.KeyVault/vaults/kv?api-version=2026-02-01&%24filter=a+b"
            )
        );
        for bad in [
            format!("/subscriptions/{sub}/../x"),
            format!("/subscriptions/{sub}/%2e%2e/x"),
            format!("/subscriptions/{sub}\\..\\x"),
            format!("/subscriptions/{sub}//x"),
            format!("/subscriptions/{sub}?x=1"),
            format!("subscriptions/{sub}"),
        ] {
            let error = client.url(&bad, "2026-02-01", &[]).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Refused, "{bad}");
        }
    }

    fn client_for_tests() -> ArmClient {
        #[derive(Debug)]
        struct NoCredential;
        #[async_trait]
        impl TokenCredential for NoCredential {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "none in tests",
                ))
            }
        }
        let http =
            super::super::transport::http_client(&super::super::TransportSettings::default())
                .unwrap();
        ArmClient::new(
            Url::parse("https://management.azure.com").unwrap(),
            Arc::new(NoCredential),
            Transport::new(Arc::new(http)),
            ApiVersions::with_overrides(None).unwrap(),
            RetrySettings::default(),
            RateLimiter::new(1),
            SubscriptionScope::all(),
        )
    }
}
