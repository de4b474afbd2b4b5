//! The Azure client: one [`AzureClient`] that every call goes through, so authentication, pacing,
//! retries, redaction and counting happen in exactly one place ([`AzureClient::execute`]).
//!
//! - [`retry`]: backoff and retry headers; [`governor`]: client-side rate limits;
//! - [`pager`]: `nextLink` paging as a state machine; [`poller`]: `202` → `Location` long-running operations;
//! - [`api`]: the typed endpoints; [`models`]: the wire types (shared with the simulator).
//!
//! This module never imports polars: it moves bytes and typed records, nothing columnar.

pub mod api;
pub mod governor;
pub mod models;
pub mod pager;
pub mod poller;
pub mod retry;

use crate::auth::{AuthError, TokenCache, TokenCredential};
use crate::config::{CloudEndpoints, same_origin};
use crate::secret::{Secret, redact_url};
use bytes::Bytes;
use governor::{CallKeys, Family, Governor, Limits};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use retry::RetryPolicy;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    #[error("{what}: HTTP {status} {code}: {message}")]
    Api {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: gave up after {attempts} attempts in {elapsed:?}; last error: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    #[error("{what}: response is not what the contract says: {reason}")]
    Decode { what: String, reason: String },
    #[error(
        "{what}: refusing to send the ARM bearer token to {host}, which is not the management endpoint {management}"
    )]
    ForeignHost {
        what: String,
        host: String,
        management: String,
    },
    #[error("{what}: the signed link has expired or was refused (HTTP 403); fetch a fresh link")]
    LinkExpired { what: String },
    #[error("{what}: still running after {waited:?} (limit); rerun to resume")]
    PollTimeout { what: String, waited: Duration },
    #[error("{what}: operation ended with status {status}: {message}")]
    OperationFailed {
        what: String,
        status: String,
        message: String,
    },
    #[error("authentication failed")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Invalid(String),
}

impl AzureError {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A transport error as text without its URL (reqwest includes the URL, which may carry a `sig`).
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body broken"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut chain = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    let detail = if chain.is_empty() {
        String::new()
    } else {
        format!(" ({})", chain.join(": "))
    };
    crate::secret::redact_text(&format!("{kind}{detail}"))
}

/// How a request is authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// ARM bearer token; only ever sent to the management endpoint.
    Arm,
    /// A signed link: no credentials at all.
    Anonymous,
}

/// One logical call; [`AzureClient::execute`] turns it into as many attempts as needed.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub url: Url,
    pub body: Option<Bytes>,
    pub family: Family,
    pub keys: CallKeys,
    pub auth: Auth,
    /// Whether repeating the call after an ambiguous failure is harmless. GET, PUT and DELETE are;
    /// POSTs that only read or start a read-only export are marked safe by their caller.
    pub retry_safe: bool,
    /// Check that a 200 body is JSON before accepting it (truncated and invalid bodies are retried).
    pub expect_json: bool,
    pub extra_headers: Vec<(&'static str, String)>,
}

impl ApiRequest {
    pub fn new(method: Method, url: Url, family: Family) -> Self {
        let retry_safe = matches!(
            method,
            Method::GET | Method::PUT | Method::DELETE | Method::HEAD
        );
        Self {
            method,
            url,
            body: None,
            family,
            keys: CallKeys::default(),
            auth: Auth::Arm,
            retry_safe,
            expect_json: true,
            extra_headers: Vec::new(),
        }
    }
    pub fn json(mut self, body: &impl serde::Serialize) -> Result<Self, AzureError> {
        self.body = Some(Bytes::from(
            serde_json::to_vec(body).map_err(|e| AzureError::Invalid(e.to_string()))?,
        ));
        Ok(self)
    }
    pub fn keys(mut self, billing_account: &str, scope: &str) -> Self {
        self.keys = CallKeys {
            billing_account: billing_account.to_owned(),
            scope: scope.to_owned(),
            url: String::new(),
        };
        self
    }
    /// How the call appears in logs and errors: method and URL, signature redacted.
    pub fn what(&self) -> String {
        format!("{} {}", self.method, redact_url(self.url.as_str()))
    }
}

#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn parse<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Decode {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Counters of everything the client did; read by reports and tests.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub calls: u64,
    pub retries: u64,
    pub bytes: u64,
    pub throttled: u64,
    /// 429s by `family scope`, to check pacing per scope.
    pub throttled_by_scope: BTreeMap<String, u64>,
    pub token_refreshes_after_401: u64,
    pub paced_wait_ms: u64,
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub endpoints: CloudEndpoints,
    pub retry: RetryPolicy,
    pub limits: Limits,
    /// Whole-request timeout (connect + headers + body): a stalled response fails and is retried.
    pub request_timeout: Duration,
    /// Longest a long-running operation may be polled.
    pub poll_timeout: Duration,
    /// Poll interval when the service sends no `Retry-After`.
    pub default_poll_interval: Duration,
}

impl ClientOptions {
    pub fn new(endpoints: CloudEndpoints) -> Self {
        Self {
            endpoints,
            retry: RetryPolicy::default(),
            limits: Limits::azure(),
            request_timeout: Duration::from_secs(300),
            poll_timeout: Duration::from_secs(3600),
            default_poll_interval: Duration::from_secs(30),
        }
    }
}

/// The client. Cheap to clone; clones share the token cache, governor and counters.
#[derive(Clone)]
pub struct AzureClient {
    http: reqwest::Client,
    opts: Arc<ClientOptions>,
    tokens: TokenCache,
    governor: Arc<Governor>,
    stats: Arc<Mutex<Stats>>,
}

/// A reqwest client with the settings costlake uses everywhere (rustls, gzip, no redirects: a redirect
/// would carry the bearer token to wherever it points).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, AzureError> {
    reqwest::Client::builder()
        .user_agent(concat!("costlake/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .read_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| {
            AzureError::Invalid(format!(
                "cannot build HTTP client: {}",
                describe_reqwest(&e)
            ))
        })
}

impl AzureClient {
    pub fn new(
        opts: ClientOptions,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, AzureError> {
        let http = http_client(opts.request_timeout)?;
        let tokens = TokenCache::new(credential, opts.endpoints.arm_scope());
        let governor = Arc::new(Governor::new(opts.limits.clone()));
        Ok(Self {
            http,
            opts: Arc::new(opts),
            tokens,
            governor,
            stats: Arc::default(),
        })
    }

    /// A client for `endpoints` whose credential is the default chain (environment, workload
    /// identity, managed identity, Azure CLI), as every command talking to real Azure uses.
    pub fn from_environment(endpoints: CloudEndpoints) -> Result<Self, AzureError> {
        let http = http_client(Duration::from_secs(60))?;
        let options = crate::auth::ChainOptions {
            authority: endpoints.authority.clone(),
            imds: true,
        };
        let cred: Arc<dyn TokenCredential> = Arc::new(crate::auth::default_chain(http, &options));
        Self::new(ClientOptions::new(endpoints), cred)
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// A URL under the management endpoint: `path` (an ARM id or path) plus query pairs.
    pub fn arm_url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, AzureError> {
        let mut url = self
            .opts
            .endpoints
            .management
            .join(path.trim_start_matches('/'))
            .map_err(|e| AzureError::Invalid(format!("bad ARM path {path}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// A URL the service handed us (`nextLink`, `Location`), parsed but otherwise untouched.
    pub fn service_url(&self, what: &str, link: &str) -> Result<Url, AzureError> {
        Url::parse(link.trim()).map_err(|e| AzureError::Decode {
            what: what.to_owned(),
            reason: format!("link is not a URL ({e}): {}", redact_url(link)),
        })
    }

    /// Runs one logical call to completion: pacing, auth, attempts, retries, classification.
    pub async fn execute(&self, req: &ApiRequest) -> Result<ApiResponse, AzureError> {
        let what = req.what();
        if req.auth == Auth::Arm && !same_origin(&req.url, &self.opts.endpoints.management) {
            return Err(AzureError::ForeignHost {
                what,
                host: req.url.host_str().unwrap_or("").to_owned(),
                management: self.opts.endpoints.management.to_string(),
            });
        }
        let started = Instant::now();
        let policy = &self.opts.retry;
        let mut keys = req.keys.clone();
        keys.url = req.url.as_str().to_owned();
        let mut attempt: u32 = 0;
        let mut refreshed_after_401 = false;
        loop {
            attempt += 1;
            let waited = self.governor.acquire(req.family, &keys).await;
            self.bump(|s| {
                s.calls += 1;
                s.paced_wait_ms += waited.as_millis() as u64;
            });
            let token = match req.auth {
                Auth::Arm => Some(self.tokens.token().await?),
                Auth::Anonymous => None,
            };
            let outcome = self.attempt(req, token.as_ref()).await;
            let (retryable, server_wait, last) = match outcome {
                Ok(resp) => {
                    let status = resp.status;
                    if status.is_success() {
                        if req.expect_json && status == StatusCode::OK && !resp.body.is_empty() {
                            if let Err(e) =
                                serde_json::from_slice::<serde::de::IgnoredAny>(&resp.body)
                            {
                                let reason = format!(
                                    "body is not complete JSON ({e}, {} bytes)",
                                    resp.body.len()
                                );
                                tracing::warn!(call = %what, attempt, %reason, "bad body");
                                (req.retry_safe, None, reason)
                            } else {
                                self.bump(|s| s.bytes += resp.body.len() as u64);
                                return Ok(resp);
                            }
                        } else {
                            self.bump(|s| s.bytes += resp.body.len() as u64);
                            return Ok(resp);
                        }
                    } else if status == StatusCode::UNAUTHORIZED && req.auth == Auth::Arm {
                        // Expired or revoked token: drop it and get a fresh one. The first 401 is retried at
                        // once and free; a fresh token refused again costs a normal, backed-off attempt, so a
                        // real permission problem still ends within the retry budget.
                        if let Some(t) = &token {
                            self.tokens.invalidate(t).await;
                        }
                        self.bump(|s| s.token_refreshes_after_401 += 1);
                        tracing::info!(call = %what, "401: refreshing the access token");
                        if !refreshed_after_401 {
                            refreshed_after_401 = true;
                            attempt -= 1;
                            continue;
                        }
                        let (code, message) = error_of(&resp);
                        (true, None, format!("HTTP 401 {code}: {message}"))
                    } else if status == StatusCode::FORBIDDEN && req.auth == Auth::Anonymous {
                        return Err(AzureError::LinkExpired { what });
                    } else {
                        let (code, message) = error_of(&resp);
                        let wait = retry::retry_after(&resp.headers);
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            let scope = format!(
                                "{:?} {}",
                                req.family,
                                if req.keys.scope.is_empty() {
                                    &req.keys.billing_account
                                } else {
                                    &req.keys.scope
                                }
                            );
                            self.bump(|s| {
                                s.throttled += 1;
                                *s.throttled_by_scope.entry(scope).or_default() += 1;
                            });
                        }
                        let transient =
                            matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
                        // A 429/503 means the request was not processed: safe to repeat even if not idempotent.
                        let rejected_unprocessed = matches!(status.as_u16(), 429 | 503);
                        if !transient {
                            return Err(AzureError::Api {
                                what,
                                status: status.as_u16(),
                                code,
                                message,
                            });
                        }
                        (
                            req.retry_safe || rejected_unprocessed,
                            wait,
                            format!("HTTP {} {code}: {message}", status.as_u16()),
                        )
                    }
                }
                Err(reason) => (req.retry_safe, None, reason),
            };
            let elapsed = started.elapsed();
            if !retryable || attempt > policy.max_retries {
                return Err(AzureError::GaveUp {
                    what,
                    attempts: attempt,
                    elapsed,
                    last,
                });
            }
            let wait = policy.wait(attempt - 1, server_wait);
            if elapsed + wait > policy.max_elapsed {
                return Err(AzureError::GaveUp {
                    what,
                    attempts: attempt,
                    elapsed,
                    last: format!(
                        "{last}; next wait {wait:?} would pass the {:?} limit",
                        policy.max_elapsed
                    ),
                });
            }
            self.bump(|s| s.retries += 1);
            tracing::info!(call = %what, attempt, wait_ms = wait.as_millis() as u64, error = %last, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: send, read the whole body. Transport failures come back as text (already redacted).
    async fn attempt(
        &self,
        req: &ApiRequest,
        token: Option<&Secret>,
    ) -> Result<ApiResponse, String> {
        let mut b = self
            .http
            .request(req.method.clone(), req.url.clone())
            .timeout(self.opts.request_timeout);
        if let Some(t) = token {
            b = b.bearer_auth(t.expose());
        }
        if let Some(body) = &req.body {
            b = b
                .header("content-type", "application/json")
                .body(body.clone());
        } else if req.method == Method::POST || req.method == Method::PUT {
            b = b.header("content-length", "0");
        }
        for (k, v) in &req.extra_headers {
            b = b.header(*k, v);
        }
        tracing::debug!(call = %req.what(), "send");
        let resp = b.send().await.map_err(|e| describe_reqwest(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| describe_reqwest(&e))?;
        tracing::trace!(call = %req.what(), status = status.as_u16(), bytes = body.len(), "received");
        Ok(ApiResponse {
            status,
            headers,
            body,
        })
    }
}

/// `code` and `message` of an ARM error body, whatever its shape; redacted.
fn error_of(resp: &ApiResponse) -> (String, String) {
    let parsed: Option<models::ErrorResponse> = serde_json::from_slice(&resp.body).ok();
    let detail = parsed
        .as_ref()
        .and_then(|p| p.error.clone())
        .unwrap_or_default();
    let code = detail.code.unwrap_or_else(|| {
        resp.status
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', "")
    });
    let message = detail
        .message
        .or_else(|| parsed.and_then(|p| p.error_description))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned()
        });
    (code, crate::secret::redact_text(&message))
}
