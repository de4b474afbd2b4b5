//! Credentials for Azure Resource Manager, the way the Azure SDKs find them.
//!
//! - [`ClientSecretCredential`] and [`WorkloadIdentityCredential`]: the Entra ID v2 token endpoint
//!   (client credentials, with a secret or a federated assertion file).
//! - [`ManagedIdentityCredential`]: App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`)
//!   or IMDS (overridable with `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
//! - [`AzureCliCredential`]: `az account get-access-token`.
//! - [`default_chain`]: environment → workload identity → managed identity → Azure CLI, first that works.
//!
//! [`TokenCache`] wraps any of them: one token per scope, refreshed five minutes before expiry and
//! on demand after a 401. This is a client of our own on reqwest rather than `azure_identity`,
//! because `azure_identity` refuses plain-http authorities and the simulator is plain http on loopback
//! (see `NOTES-deps.md`); it is also smaller and keeps secrets in [`crate::secret::Secret`].

mod azure_cli;
mod entra;
mod managed_identity;

pub use azure_cli::AzureCliCredential;
pub use entra::{ClientSecretCredential, WorkloadIdentityCredential};
pub use managed_identity::ManagedIdentityCredential;

use crate::secret::Secret;
use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::Mutex;
use url::Url;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("{credential}: not configured ({reason})")]
    Unavailable {
        credential: &'static str,
        reason: String,
    },
    #[error("{credential}: token request refused (HTTP {status}, {code}): {description}")]
    Refused {
        credential: &'static str,
        status: u16,
        code: String,
        description: String,
    },
    #[error("{credential}: token request failed: {reason}")]
    Transport {
        credential: &'static str,
        reason: String,
    },
    #[error("no credential worked; tried in order:\n  - {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  - "))]
    Chain(Vec<AuthError>),
}

impl AuthError {
    /// A failure worth retrying: transport trouble, throttling, a server error.
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Transport { .. } => true,
            AuthError::Refused { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
            }
            AuthError::Chain(v) => v.iter().any(AuthError::is_transient),
            AuthError::Unavailable { .. } => false,
        }
    }
}

/// A bearer token and when it stops working.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

/// Something that can get a token for a scope such as `https://management.azure.com/.default`.
pub trait TokenCredential: Send + Sync {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>>;
    fn name(&self) -> &'static str;
}

/// Tries each credential in order and returns the first token; the error lists every attempt.
pub struct ChainedCredential {
    sources: Vec<Box<dyn TokenCredential>>,
    /// The index that worked last, tried first next time.
    last: std::sync::Mutex<Option<usize>>,
}

impl ChainedCredential {
    pub fn new(sources: Vec<Box<dyn TokenCredential>>) -> Self {
        Self {
            sources,
            last: std::sync::Mutex::new(None),
        }
    }
}

impl TokenCredential for ChainedCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let first = self.last.lock().ok().and_then(|g| *g);
            if let Some(i) = first
                && let Ok(t) = self.sources[i].get_token(scope).await
            {
                return Ok(t);
            }
            let mut errors = Vec::new();
            for (i, s) in self.sources.iter().enumerate() {
                match s.get_token(scope).await {
                    Ok(t) => {
                        if let Ok(mut g) = self.last.lock() {
                            *g = Some(i);
                        }
                        tracing::debug!(credential = s.name(), "token acquired");
                        return Ok(t);
                    }
                    Err(e) => errors.push(e),
                }
            }
            Err(AuthError::Chain(errors))
        })
    }
    fn name(&self) -> &'static str {
        "chain"
    }
}

/// Options for [`default_chain`].
#[derive(Clone, Debug)]
pub struct ChainOptions {
    pub authority: Url,
    /// Probe IMDS when no App Service identity endpoint is set. Off in tests: IMDS lives at a
    /// link-local address that must never be contacted from here.
    pub imds: bool,
}

/// environment (secret) → workload identity → managed identity → Azure CLI.
pub fn default_chain(http: reqwest::Client, opts: &ChainOptions) -> ChainedCredential {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let authority = env("AZURE_AUTHORITY_HOST")
        .and_then(|a| crate::config::checked_url("AZURE_AUTHORITY_HOST", &a).ok())
        .unwrap_or_else(|| opts.authority.clone());
    let mut sources: Vec<Box<dyn TokenCredential>> = Vec::new();
    sources.push(Box::new(EnvironmentCredential::new(
        http.clone(),
        authority.clone(),
    )));
    if let (Some(t), Some(c), Some(f)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_FEDERATED_TOKEN_FILE"),
    ) {
        sources.push(Box::new(WorkloadIdentityCredential::new(
            http.clone(),
            authority.clone(),
            t,
            c,
            f.into(),
        )));
    }
    if let Some(mi) = ManagedIdentityCredential::from_env(http.clone(), opts.imds) {
        sources.push(Box::new(mi));
    }
    sources.push(Box::new(AzureCliCredential::new()));
    ChainedCredential::new(sources)
}

/// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`, read when a token is first needed.
pub struct EnvironmentCredential {
    http: reqwest::Client,
    authority: Url,
}

impl EnvironmentCredential {
    pub fn new(http: reqwest::Client, authority: Url) -> Self {
        Self { http, authority }
    }
}

impl TokenCredential for EnvironmentCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let (Some(t), Some(c), Some(s)) = (
                var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_ID"),
                var("AZURE_CLIENT_SECRET"),
            ) else {
                return Err(AuthError::Unavailable {
                    credential: "environment",
                    reason: "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into(),
                });
            };
            ClientSecretCredential::new(
                self.http.clone(),
                self.authority.clone(),
                t,
                c,
                Secret::new(s),
            )
            .get_token(scope)
            .await
        })
    }
    fn name(&self) -> &'static str {
        "environment"
    }
}

/// Caches a token per credential and scope; refreshes it `margin` before expiry or after [`invalidate`].
///
/// [`invalidate`]: TokenCache::invalidate
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<dyn TokenCredential>,
    scope: String,
    margin: Duration,
    slot: Arc<Mutex<Option<AccessToken>>>,
}

impl TokenCache {
    pub fn new(inner: Arc<dyn TokenCredential>, scope: impl Into<String>) -> Self {
        Self {
            inner,
            scope: scope.into(),
            margin: Duration::minutes(5),
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// A valid token, from the cache if it has more than the margin left.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut slot = self.slot.lock().await;
        if let Some(t) = slot.as_ref()
            && t.expires_at - self.margin > Utc::now()
        {
            return Ok(t.token.clone());
        }
        // The token endpoint throttles and fails like any other; retry what is transient.
        let mut attempt = 0u32;
        let fresh = loop {
            match self.inner.get_token(&self.scope).await {
                Ok(t) => break t,
                Err(e) if e.is_transient() && attempt < 6 => {
                    attempt += 1;
                    let wait = std::time::Duration::from_millis(200 * 2u64.pow(attempt.min(5)));
                    tracing::info!(credential = self.inner.name(), attempt, error = %e, "token request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::debug!(credential = self.inner.name(), expires_at = %fresh.expires_at, "new access token");
        let token = fresh.token.clone();
        *slot = Some(fresh);
        Ok(token)
    }

    /// Drops the cached token if it is still `rejected` (the server answered 401 to it), so the next
    /// call gets a new one; a token another task already replaced is kept.
    pub async fn invalidate(&self, rejected: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|t| &t.token == rejected) {
            *slot = None;
        }
    }
}

/// Token endpoint JSON, in both the Entra (`expires_in`) and managed-identity/CLI (`expires_on`) forms.
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(rename = "accessToken")]
    access_token_cli: Option<String>,
    #[serde(default, deserialize_with = "crate::azure::models::loose::string")]
    expires_in: Option<String>,
    #[serde(default, deserialize_with = "crate::azure::models::loose::string")]
    expires_on: Option<String>,
    #[serde(rename = "expiresOn")]
    expires_on_cli: Option<String>,
}

impl TokenResponse {
    fn into_token(self, credential: &'static str) -> Result<AccessToken, AuthError> {
        let token =
            self.access_token
                .or(self.access_token_cli)
                .ok_or_else(|| AuthError::Transport {
                    credential,
                    reason: "response has no access_token".into(),
                })?;
        let now = Utc::now();
        let expires_at = if let Some(secs) = self
            .expires_in
            .as_deref()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            now + Duration::seconds(secs)
        } else if let Some(unix) = self
            .expires_on
            .as_deref()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            DateTime::from_timestamp(unix, 0).unwrap_or(now)
        } else if let Some(t) = self.expires_on_cli.as_deref().and_then(parse_cli_time) {
            t
        } else {
            // No expiry given: assume the shortest lifetime Entra issues, so it is refreshed early.
            now + Duration::minutes(10)
        };
        Ok(AccessToken {
            token: Secret::new(token),
            expires_at,
        })
    }
}

/// `az` prints `expiresOn` in local time as `2026-11-28 10:00:00.000000`.
fn parse_cli_time(s: &str) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let n = chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    chrono::Local
        .from_local_datetime(&n)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads a token endpoint's answer into a token or a precise, redacted error.
async fn token_from_response(
    credential: &'static str,
    resp: reqwest::Response,
) -> Result<AccessToken, AuthError> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| transport(credential, e))?;
    if !status.is_success() {
        #[derive(serde::Deserialize, Default)]
        struct E {
            error: Option<serde_json::Value>,
            error_description: Option<String>,
        }
        let e: E = serde_json::from_slice(&body).unwrap_or_default();
        let code = match e.error {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Object(o)) => o
                .get("code")
                .and_then(|c| c.as_str())
                .unwrap_or("unknown")
                .to_owned(),
            _ => "unknown".to_owned(),
        };
        let description =
            crate::secret::redact_text(e.error_description.as_deref().unwrap_or("no description"));
        return Err(AuthError::Refused {
            credential,
            status: status.as_u16(),
            code,
            description,
        });
    }
    serde_json::from_slice::<TokenResponse>(&body)
        .map_err(|e| AuthError::Transport {
            credential,
            reason: format!("unreadable token response: {e}"),
        })?
        .into_token(credential)
}

fn transport(credential: &'static str, e: reqwest::Error) -> AuthError {
    AuthError::Transport {
        credential,
        reason: crate::azure::describe_reqwest(&e),
    }
}

/// `https://management.azure.com/.default` → `https://management.azure.com/` (resource form for
/// managed identity and the CLI).
fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix(".default").unwrap_or(scope)
}
