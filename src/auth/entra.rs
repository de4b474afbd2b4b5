//! Entra ID v2 client-credentials flow: with a client secret, or with a federated token file
//! (workload identity, e.g. AKS). Both POST a form to `{authority}/{tenant}/oauth2/v2.0/token`.

use super::{AccessToken, AuthError, TokenCredential, token_from_response, transport};
use crate::secret::Secret;
use futures::future::BoxFuture;
use std::path::PathBuf;
use url::Url;

fn token_url(authority: &Url, tenant: &str) -> Result<Url, AuthError> {
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(AuthError::Unavailable {
            credential: "entra",
            reason: format!("tenant `{tenant}` is not a tenant id or domain"),
        });
    }
    authority
        .join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| AuthError::Unavailable {
            credential: "entra",
            reason: e.to_string(),
        })
}

/// The client-credentials grant, with the client's proof (a secret or an assertion) added to the form.
async fn client_credentials(
    http: &reqwest::Client,
    authority: &Url,
    tenant: &str,
    client_id: &str,
    scope: &str,
    proof: &[(&str, &str)],
    credential: &'static str,
) -> Result<AccessToken, AuthError> {
    let url = token_url(authority, tenant)?;
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
    ];
    form.extend_from_slice(proof);
    let resp = http
        .post(url)
        .form(&form)
        .send()
        .await
        .map_err(|e| transport(credential, e))?;
    token_from_response(credential, resp).await
}

/// Client id + client secret.
pub struct ClientSecretCredential {
    http: reqwest::Client,
    authority: Url,
    tenant: String,
    client_id: String,
    secret: Secret,
}

impl ClientSecretCredential {
    pub fn new(
        http: reqwest::Client,
        authority: Url,
        tenant: String,
        client_id: String,
        secret: Secret,
    ) -> Self {
        Self {
            http,
            authority,
            tenant,
            client_id,
            secret,
        }
    }
}

impl TokenCredential for ClientSecretCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let proof = [("client_secret", self.secret.expose())];
            client_credentials(
                &self.http,
                &self.authority,
                &self.tenant,
                &self.client_id,
                scope,
                &proof,
                self.name(),
            )
            .await
        })
    }
    fn name(&self) -> &'static str {
        "client secret"
    }
}

/// Client id + a federated assertion read from a file on every request (the file is rotated).
pub struct WorkloadIdentityCredential {
    http: reqwest::Client,
    authority: Url,
    tenant: String,
    client_id: String,
    token_file: PathBuf,
}

impl WorkloadIdentityCredential {
    pub fn new(
        http: reqwest::Client,
        authority: Url,
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    ) -> Self {
        Self {
            http,
            authority,
            tenant,
            client_id,
            token_file,
        }
    }
}

impl TokenCredential for WorkloadIdentityCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let assertion = tokio::fs::read_to_string(&self.token_file)
                .await
                .map_err(|e| AuthError::Unavailable {
                    credential: self.name(),
                    reason: format!(
                        "cannot read AZURE_FEDERATED_TOKEN_FILE {}: {e}",
                        self.token_file.display()
                    ),
                })?;
            let assertion = Secret::new(assertion.trim());
            let proof = [
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.expose()),
            ];
            client_credentials(
                &self.http,
                &self.authority,
                &self.tenant,
                &self.client_id,
                scope,
                &proof,
                self.name(),
            )
            .await
        })
    }
    fn name(&self) -> &'static str {
        "workload identity"
    }
}
