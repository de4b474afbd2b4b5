//! One way to read and write files, whatever the location: a local path, `file://`, `memory://`,
//! `az://` / `abfss://` (Azure Blob / ADLS Gen2), `s3://` or `gs://`. Backed by `object_store`, whose
//! single-object `put` is atomic everywhere (the local store writes a temporary file and renames it),
//! which is what the loader's publish step relies on.
//!
//! Credentials for cloud stores come from the environment, as each `object_store` builder reads it
//! (`AZURE_STORAGE_*`, `AWS_*`, `GOOGLE_*`; `AZURE_STORAGE_USE_EMULATOR=true` plus
//! `AZURITE_BLOB_STORAGE_URL` for Azurite).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("location `{location}`: {reason}")]
    Location { location: String, reason: String },
    #[error("{op} `{path}` in {root}: {source}")]
    Io {
        op: &'static str,
        path: String,
        root: String,
        source: Box<object_store::Error>,
    },
}

/// A store and a root inside it; every path given to its methods is relative to the root.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    display: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.display)
    }
}

impl Store {
    /// Opens `location`: a filesystem path (created if missing) or a URL.
    pub fn open(location: &str) -> Result<Self, StorageError> {
        let err = |reason: String| StorageError::Location {
            location: location.to_owned(),
            reason,
        };
        let loc = location.trim();
        if loc.is_empty() {
            return Err(err("empty location".into()));
        }
        let url = match url::Url::parse(loc) {
            Ok(u) if u.scheme().len() > 1 => Some(u),
            _ => None,
        };
        let Some(url) = url else {
            return Self::local(std::path::Path::new(loc)).map_err(err);
        };
        let remote = |built: Result<Arc<dyn ObjectStore>, object_store::Error>| -> Result<Self, StorageError> {
            let inner = built.map_err(|e| err(e.to_string()))?;
            Ok(Self { inner, root: url_root(&url), display: loc.to_owned() })
        };
        match url.scheme() {
            "file" => {
                let p = url
                    .to_file_path()
                    .map_err(|_| err("not a local file URL".into()))?;
                Self::local(&p).map_err(err)
            }
            "memory" => Ok(Self {
                inner: Arc::new(object_store::memory::InMemory::new()),
                root: url_root(&url),
                display: loc.to_owned(),
            }),
            "az" | "azure" | "abfs" | "abfss" | "adl" => remote(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(loc)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            ),
            "s3" | "s3a" => remote(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(loc)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            ),
            "gs" => remote(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(loc)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            ),
            other => Err(err(format!(
                "scheme `{other}` is not supported; use a path, file://, az://, abfss://, s3://, gs:// or memory://"
            ))),
        }
    }

    fn local(path: &std::path::Path) -> Result<Self, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(fs),
            root: Path::default(),
            display: path.display().to_string(),
        })
    }

    /// A store for the same backend, rooted at `sub` below this root.
    pub fn child(&self, sub: &str) -> Self {
        let root = Path::parse(
            format!("{}/{}", self.root.as_ref(), sub.trim_matches('/')).trim_matches('/'),
        )
        .unwrap_or_else(|_| self.root.clone());
        Self {
            inner: self.inner.clone(),
            root,
            display: format!("{}/{sub}", self.display.trim_end_matches('/')),
        }
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Root + `rel`, kept verbatim: callers pass segments already made safe by [`crate::ids::segment`],
    /// and `object_store` would otherwise percent-encode their `%` a second time.
    fn full(&self, rel: &str) -> Result<Path, StorageError> {
        let joined = format!("{}/{}", self.root.as_ref(), rel.trim_matches('/'));
        Path::parse(joined.trim_matches('/')).map_err(|e| StorageError::Location {
            location: format!("{}/{rel}", self.display),
            reason: e.to_string(),
        })
    }

    fn io(&self, op: &'static str, rel: &str, source: object_store::Error) -> StorageError {
        StorageError::Io {
            op,
            path: rel.to_owned(),
            root: self.display.clone(),
            source: Box::new(source),
        }
    }

    /// Streams a local file to `rel` (multipart, 8 MiB parts), replacing what was there in one
    /// step when the upload completes: memory stays at a few parts whatever the file's size.
    pub async fn put_file(&self, rel: &str, file: &std::path::Path) -> Result<(), StorageError> {
        use tokio::io::AsyncReadExt;
        let local = |e: std::io::Error| {
            self.io(
                "read staged",
                rel,
                object_store::Error::Generic {
                    store: "local file",
                    source: Box::new(e),
                },
            )
        };
        let upload = self
            .inner
            .put_multipart(&self.full(rel)?)
            .await
            .map_err(|e| self.io("write", rel, e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let mut f = tokio::fs::File::open(file).await.map_err(local)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    w.abort().await.ok();
                    return Err(local(e));
                }
            };
            if n == 0 {
                break;
            }
            w.wait_for_capacity(2)
                .await
                .map_err(|e| self.io("write", rel, e))?;
            w.write(&buf[..n]);
        }
        w.finish()
            .await
            .map(|_| ())
            .map_err(|e| self.io("write", rel, e))
    }

    /// Copies `from` to `to` inside the store (server-side where the store can; a hard link and a
    /// rename on a local disk), replacing `to` in one step.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner
            .copy(&self.full(from)?, &self.full(to)?)
            .await
            .map_err(|e| self.io("copy", from, e))
    }

    /// Writes `bytes` at `rel`, replacing what was there in one step.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.inner
            .put(&self.full(rel)?, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.io("write", rel, e))
    }

    /// Writes `bytes` at `rel` only if nothing is there; `false` if something already was.
    pub async fn put_if_absent(&self, rel: &str, bytes: Bytes) -> Result<bool, StorageError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&self.full(rel)?, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.io("create", rel, e)),
        }
    }

    /// Whether `rel` exists (a HEAD, no body read).
    pub async fn exists(&self, rel: &str) -> Result<bool, StorageError> {
        match self.inner.head(&self.full(rel)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io("check", rel, e)),
        }
    }

    /// Reads `rel`; `None` if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, StorageError> {
        match self.inner.get(&self.full(rel)?).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| self.io("read", rel, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io("read", rel, e)),
        }
    }

    pub async fn delete(&self, rel: &str) -> Result<(), StorageError> {
        match self.inner.delete(&self.full(rel)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io("delete", rel, e)),
        }
    }

    /// Every file below `prefix`, as paths relative to the root, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let base = self.full(prefix)?;
        let metas: Vec<_> = match self.inner.list(Some(&base)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.io("list", prefix, e)),
        };
        let root = self.root.as_ref();
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| {
                let p = m.location.as_ref();
                p.strip_prefix(root)
                    .unwrap_or(p)
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

fn url_root(url: &url::Url) -> Path {
    // az://container/a/b → the builder takes the container from the URL; the root is a/b.
    // abfss://container@account.dfs.core.windows.net/a/b → also a/b.
    Path::parse(url.path().trim_matches('/')).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap())
            .unwrap()
            .child("lake");
        s.put("a/b=1/x.parquet", Bytes::from_static(b"x"))
            .await
            .unwrap();
        s.put("a/b=2/y.parquet", Bytes::from_static(b"y"))
            .await
            .unwrap();
        // encoded segments are stored verbatim (one encoding on disk, as hive readers expect)
        s.put("a/b=x%3Ay/z.parquet", Bytes::from_static(b"z"))
            .await
            .unwrap();
        assert!(dir.path().join("lake/a/b=x%3Ay/z.parquet").exists());
        s.delete("a/b=x%3Ay/z.parquet").await.unwrap();
        assert_eq!(
            s.list("a").await.unwrap(),
            vec!["a/b=1/x.parquet", "a/b=2/y.parquet"]
        );
        assert_eq!(
            s.get("a/b=1/x.parquet").await.unwrap().unwrap(),
            Bytes::from_static(b"x")
        );
        assert!(s.get("nope").await.unwrap().is_none());
        s.delete("a/b=1/x.parquet").await.unwrap();
        assert_eq!(s.list("").await.unwrap(), vec!["a/b=2/y.parquet"]);
        assert!(dir.path().join("lake/a/b=2/y.parquet").exists());
        assert!(Store::open("ftp://x/y").is_err());
    }
}
