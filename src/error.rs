//! The crate-wide error: one variant per module's error enum, so callers match on the stage that failed
//! and every message keeps its chain (`source()`), printed by `main` as `error: … caused by: …`.

use crate::{auth::AuthError, azure::AzureError, config::ConfigError, simulate::SimError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Simulate(#[from] SimError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
