//! One run at a time per output: a lease file `_lock.json` in the output store, created only if
//! absent (an atomic conditional put on every store), renewed while the run lives, and released at
//! the end. A lease whose holder is gone (expired, or a dead process on this host) is taken over; a
//! live one makes the second run exit with "locked by run X since T".

use crate::storage::{StorageError, Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const LOCK: &str = "_lock.json";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error(
        "{output} is locked by run {run_id} (pid {pid} on {host}) since {since}, until {expires} unless renewed; wait for it to finish, or if it is dead, remove {output}/{LOCK}"
    )]
    Locked {
        output: String,
        run_id: String,
        pid: u32,
        host: String,
        since: DateTime<Utc>,
        expires: DateTime<Utc>,
    },
    #[error("lease: {0}")]
    Storage(#[from] StorageError),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockFile {
    pub run_id: String,
    pub pipeline: String,
    pub host: String,
    pub pid: u32,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub struct Lease {
    store: Store,
    run_id: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the holder is certainly gone: past its expiry, or a process of this host that no longer exists.
fn stale(l: &LockFile) -> bool {
    if l.expires_at < Utc::now() {
        return true;
    }
    l.host == host()
        && std::path::Path::new("/proc").exists()
        && !std::path::Path::new(&format!("/proc/{}", l.pid)).exists()
}

impl Lease {
    pub async fn acquire(
        store: &Store,
        run_id: &str,
        pipeline: &str,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        let ttl_c = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(2));
        let mine = |acquired: DateTime<Utc>| LockFile {
            run_id: run_id.into(),
            pipeline: pipeline.into(),
            host: host(),
            pid: std::process::id(),
            acquired_at: acquired,
            expires_at: Utc::now() + ttl_c,
        };
        let now = Utc::now();
        let body = |l: &LockFile| Bytes::from(serde_json::to_vec_pretty(l).unwrap_or_default());
        for _ in 0..3 {
            if store.put_if_absent(LOCK, body(&mine(now))).await? {
                break;
            }
            let held: Option<LockFile> = store
                .get(LOCK)
                .await?
                .and_then(|b| serde_json::from_slice(&b).ok());
            match held {
                Some(l) if l.run_id == run_id => break,
                Some(l) if !stale(&l) => {
                    return Err(LeaseError::Locked {
                        output: store.display().into(),
                        run_id: l.run_id,
                        pid: l.pid,
                        host: l.host,
                        since: l.acquired_at,
                        expires: l.expires_at,
                    });
                }
                other => {
                    tracing::warn!(holder = ?other.map(|l| l.run_id), "taking over a stale lease");
                    store.delete(LOCK).await?;
                }
            }
        }
        // Confirm it is ours (two takers of a stale lease: only one create succeeds).
        let held: Option<LockFile> = store
            .get(LOCK)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(l) = held.filter(|l| l.run_id != run_id) {
            return Err(LeaseError::Locked {
                output: store.display().into(),
                run_id: l.run_id,
                pid: l.pid,
                host: l.host,
                since: l.acquired_at,
                expires: l.expires_at,
            });
        }
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (st, id) = (store.clone(), run_id.to_owned());
        let renewed = mine(now);
        let task = tokio::spawn(async move {
            let mut l = renewed;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(ttl / 3) => {}
                    _ = stopped.changed() => return,
                }
                let still: Option<LockFile> = st
                    .get(LOCK)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if still.as_ref().is_some_and(|s| s.run_id == id) {
                    l.expires_at = Utc::now() + ttl_c;
                    let _ = st
                        .put(
                            LOCK,
                            Bytes::from(serde_json::to_vec_pretty(&l).unwrap_or_default()),
                        )
                        .await;
                } else {
                    tracing::error!(run_id = %id, "the lease was taken by another run");
                    return;
                }
            }
        });
        Ok(Self {
            store: store.clone(),
            run_id: run_id.into(),
            stop,
            task,
        })
    }

    /// Stops renewing and removes the lock if it is still this run's.
    pub async fn release(self) -> Result<(), LeaseError> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let held: Option<LockFile> = self
            .store
            .get(LOCK)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if held.is_some_and(|l| l.run_id == self.run_id) {
            self.store.delete(LOCK).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_and_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap()).unwrap();
        let a = Lease::acquire(&s, "run-a", "p", Duration::from_secs(60))
            .await
            .unwrap();
        let e = Lease::acquire(&s, "run-b", "p", Duration::from_secs(60))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("locked by run run-a") && e.contains("since"),
            "{e}"
        );
        a.release().await.unwrap();
        let b = Lease::acquire(&s, "run-b", "p", Duration::from_secs(60))
            .await
            .unwrap();
        b.release().await.unwrap();
        // A lease of a process that no longer exists is taken over at once.
        let dead = LockFile {
            run_id: "dead".into(),
            pipeline: "p".into(),
            host: host(),
            pid: u32::MAX - 1,
            acquired_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        };
        s.put(LOCK, Bytes::from(serde_json::to_vec(&dead).unwrap()))
            .await
            .unwrap();
        Lease::acquire(&s, "run-c", "p", Duration::from_secs(60))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        assert!(s.get(LOCK).await.unwrap().is_none());
    }
}
