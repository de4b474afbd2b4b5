//! Managed identity: the App Service / Functions endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`,
//! api-version 2019-08-01) or IMDS (`/metadata/identity/oauth2/token`, api-version 2018-02-01,
//! header `Metadata: true`, base overridable with `AZURE_POD_IDENTITY_AUTHORITY_HOST`).

use super::{
    AccessToken, AuthError, TokenCredential, scope_to_resource, token_from_response, transport,
};
use crate::secret::Secret;
use futures::future::BoxFuture;
use url::Url;

enum Endpoint {
    AppService { url: Url, header: Secret },
    Imds { base: Url },
}

pub struct ManagedIdentityCredential {
    http: reqwest::Client,
    endpoint: Endpoint,
    client_id: Option<String>,
}

impl ManagedIdentityCredential {
    /// From the environment: the App Service endpoint when set, else IMDS when `imds` is allowed.
    pub fn from_env(http: reqwest::Client, imds: bool) -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let client_id = var("AZURE_CLIENT_ID");
        if let (Some(e), Some(h)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            let url = Url::parse(&e).ok()?;
            return Some(Self {
                http,
                endpoint: Endpoint::AppService {
                    url,
                    header: Secret::new(h),
                },
                client_id,
            });
        }
        if !imds {
            return None;
        }
        let base = var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
            .unwrap_or_else(|| "http://169.254.169.254/".into());
        let base = Url::parse(&base).ok()?;
        Some(Self {
            http,
            endpoint: Endpoint::Imds { base },
            client_id,
        })
    }

    pub fn app_service(
        http: reqwest::Client,
        url: Url,
        header: Secret,
        client_id: Option<String>,
    ) -> Self {
        Self {
            http,
            endpoint: Endpoint::AppService { url, header },
            client_id,
        }
    }

    pub fn imds(http: reqwest::Client, base: Url, client_id: Option<String>) -> Self {
        Self {
            http,
            endpoint: Endpoint::Imds { base },
            client_id,
        }
    }
}

impl TokenCredential for ManagedIdentityCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let resource = scope_to_resource(scope);
            let mut query = vec![("resource", resource.to_owned())];
            if let Some(c) = &self.client_id {
                query.push(("client_id", c.clone()));
            }
            let req = match &self.endpoint {
                Endpoint::AppService { url, header } => {
                    query.push(("api-version", "2019-08-01".into()));
                    self.http
                        .get(url.clone())
                        .header("X-IDENTITY-HEADER", header.expose())
                }
                Endpoint::Imds { base } => {
                    query.push(("api-version", "2018-02-01".into()));
                    let url = base.join("metadata/identity/oauth2/token").map_err(|e| {
                        AuthError::Unavailable {
                            credential: self.name(),
                            reason: e.to_string(),
                        }
                    })?;
                    // IMDS answers at once when present; do not hang a credential chain on a machine without it.
                    self.http
                        .get(url)
                        .header("Metadata", "true")
                        .timeout(std::time::Duration::from_secs(2))
                }
            };
            let resp = req
                .query(&query)
                .send()
                .await
                .map_err(|e| transport(self.name(), e))?;
            token_from_response(self.name(), resp).await
        })
    }
    fn name(&self) -> &'static str {
        "managed identity"
    }
}
