//! The ledger of a work unit: its state, where to continue, and what was landed (bytes, rows,
//! checksums). Written after every landed page, so a killed run resumes at the next page. Holds no
//! secret: `nextLink` carries only an opaque skip token, operation URLs are stored redacted.

use crate::storage::{StorageError, Store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    New,
    Started,
    Done,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageRecord {
    pub file: String,
    /// Bytes as received (before compression).
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ledger {
    pub unit: String,
    pub state: UnitState,
    pub run_id: String,
    pub next_link: Option<String>,
    pub operation: Option<String>,
    pub pages: Vec<PageRecord>,
    pub error: Option<String>,
    pub updated_at: String,
}

impl Ledger {
    pub fn new(unit: &str, run_id: &str) -> Self {
        Self {
            unit: unit.into(),
            state: UnitState::New,
            run_id: run_id.into(),
            next_link: None,
            operation: None,
            pages: Vec::new(),
            error: None,
            updated_at: chrono::Utc::now().to_rfc3339(),
        }
    }
    pub fn touch(&mut self) {
        self.updated_at = chrono::Utc::now().to_rfc3339();
    }
    pub async fn load(store: &Store, path: &str) -> Result<Option<Self>, StorageError> {
        Ok(store
            .get(path)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
    pub async fn save(&self, store: &Store, path: &str) -> Result<(), StorageError> {
        store
            .put(
                path,
                Bytes::from(serde_json::to_vec_pretty(self).unwrap_or_default()),
            )
            .await
    }
}
