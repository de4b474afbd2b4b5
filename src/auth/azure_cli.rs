//! The Azure CLI's cached login: `az account get-access-token --resource … --output json`.

use super::{AccessToken, AuthError, TokenCredential, TokenResponse, scope_to_resource};
use futures::future::BoxFuture;

pub struct AzureCliCredential {
    program: String,
}

impl AzureCliCredential {
    pub fn new() -> Self {
        Self {
            program: "az".into(),
        }
    }
    /// Another `az` executable (tests use a script).
    pub fn with_program(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl Default for AzureCliCredential {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenCredential for AzureCliCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<AccessToken, AuthError>> {
        Box::pin(async move {
            let out = tokio::process::Command::new(&self.program)
                .args([
                    "account",
                    "get-access-token",
                    "--output",
                    "json",
                    "--resource",
                    scope_to_resource(scope),
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| AuthError::Unavailable {
                    credential: self.name(),
                    reason: format!("cannot run `{}`: {e}", self.program),
                })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output");
                return Err(AuthError::Unavailable {
                    credential: self.name(),
                    reason: format!(
                        "`az account get-access-token` failed: {}; run `az login`",
                        crate::secret::redact_text(first)
                    ),
                });
            }
            serde_json::from_slice::<TokenResponse>(&out.stdout)
                .map_err(|e| AuthError::Transport {
                    credential: self.name(),
                    reason: format!("unreadable az output: {e}"),
                })?
                .into_token(self.name())
        })
    }
    fn name(&self) -> &'static str {
        "azure cli"
    }
}
