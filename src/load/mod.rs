//! Load: frames → a hive-partitioned Parquet lake, atomically and idempotently, on any store.
//!
//! 1. **Stage**: each frame is written as Parquet (zstd, statistics, bounded row groups, partition
//!    columns dropped from the file, a stable column order) to `_staging/{run}/{dataset}/{k=v}/…`.
//!    When every frame is staged, `_staging/{run}/_complete.json` is written last.
//! 2. **Publish** (only a complete staging set): per partition, each file is `put` to its final path —
//!    a single-object put is atomic on every store, so a reader sees the old file or the new one,
//!    never half of one — then files of that partition no longer produced are deleted, then the
//!    partition's `_manifest.json` (rows, bytes, sha256, schema, run id) is written last. A new
//!    partition gets its manifest first as well, so no reader ever sees partition data without a
//!    manifest. With the default partitioning each partition is one file, so a reader never sees
//!    rows of two runs mixed (with `partition_by = ["billing_period"]` a partition holds one file per
//!    billing profile, replaced one after the other). A partition whose bytes equal what is
//!    published is not rewritten: a rerun with nothing new rewrites nothing.
//!    Staging is removed at the end; a killed load is finished by running it again.
//!
//! Partition values go through [`crate::ids::hive`], so nothing is written outside the output root.

use crate::ids::{IdError, hive};
use crate::storage::{StorageError, Store};
use crate::transform::Partition;
use bytes::Bytes;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("load: {0}")]
    Id(#[from] IdError),
    #[error("load {path}: {source}")]
    Storage { path: String, source: StorageError },
    #[error("load {what}: cannot write Parquet: {source}")]
    Parquet { what: String, source: PolarsError },
    #[error("load: nothing staged at {0}; run `costlake transform` first")]
    NothingStaged(String),
    #[error("load: staging {0} is unreadable: {1}")]
    BadStaging(String, String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub dataset: String,
    /// Partition folder below the dataset (`billing_period=2026-10/billing_profile=X`), or "".
    pub partition: String,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub schema: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub dataset: String,
    pub partition: BTreeMap<String, String>,
    pub files: Vec<FileEntry>,
    pub rows: u64,
    pub bytes: u64,
    pub run_id: String,
    pub written_at: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    pub partitions_written: u64,
    pub partitions_unchanged: u64,
    pub files_written: u64,
    pub files_deleted: u64,
    pub rows: u64,
    pub bytes_written: u64,
    pub seconds: f64,
}

#[derive(Clone)]
pub struct Loader {
    pub output: Store,
    pub run_id: String,
    pub zstd_level: i32,
    pub row_group_size: usize,
}

/// The lake's Parquet compression: zstd at `level`.
fn zstd(level: i32) -> PolarsResult<ParquetCompression> {
    Ok(ParquetCompression::Zstd(Some(
        polars::polars_utils::compression::ZstdLevel::try_new(level)?,
    )))
}

/// What a staged file's bytes went through: the spool file, their hash and count.
struct Spooled {
    file: std::io::BufWriter<std::fs::File>,
    hash: sha2::Sha256,
    bytes: u64,
}

/// A `Write` into a [`Spooled`] shared with the [`StagedWriter`], which reads the hash back after
/// the Parquet writer (which keeps its sink) has written the footer.
#[derive(Clone)]
struct Hashing(std::sync::Arc<std::sync::Mutex<Spooled>>);

impl std::io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let mut s = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        let n = s.file.write(buf)?;
        s.hash.update(&buf[..n]);
        s.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?
            .file
            .flush()
    }
}

/// One staged Parquet file written chunk by chunk (each chunk one row group) into a local spool
/// file, so a dataset of any size passes through a bounded amount of memory. Finished with
/// [`Loader::stage_written`].
///
/// A chunk is encoded and compressed column by column in parallel ([`StagedWriter::encode`]) and
/// then appended ([`StagedWriter::write_encoded`]); a second file whose chunk extends the first one
/// (`costs` is `usage` plus the price columns) takes the first one's encoded columns instead of
/// encoding them again. The bytes are the same as polars' own batched writer produces: same
/// encoder, same options, same order.
pub struct StagedWriter {
    dataset: &'static str,
    keys: Vec<(String, String)>,
    file: String,
    spool: tempfile::NamedTempFile,
    /// Set by the first chunk.
    open: Option<Open>,
    schema: Vec<(String, String)>,
    rows: u64,
    zstd_level: i32,
}

use polars_arrow::array::Utf8ViewArray;
use polars_parquet::write as pq;

mod dict;

/// A [`StagedWriter`] once its first chunk has fixed the schema.
struct Open {
    writer: polars::io::parquet::write::BatchedWriter<Hashing>,
    sink: Hashing,
    /// Per top-level field: its Parquet type and the encoding of each of its leaves.
    fields: Vec<(pq::ParquetType, Vec<pq::Encoding>)>,
    options: pq::WriteOptions,
}

/// One chunk encoded and compressed for a [`StagedWriter`]: per top-level field, per leaf, its
/// pages.
pub struct Encoded {
    rows: usize,
    /// (name, type) of each field, in file order.
    names: Vec<(String, DataType)>,
    fields: Vec<std::sync::Arc<Vec<Vec<pq::CompressedPage>>>>,
}

/// A page compressed with zstd at `level`, as `polars_parquet`'s `compress` does (same frame),
/// but with one compression context per thread, reused page after page, written straight into
/// the page's spare capacity: polars' makes a context per page (zeroing its ~1 MB of tables) and
/// zero-fills an output buffer of the worst-case size first.
fn compress(page: pq::Page, level: i32) -> PolarsResult<pq::CompressedPage> {
    use polars_parquet::parquet::CowBuffer;
    use polars_parquet::parquet::compression::Compression;
    use polars_parquet::parquet::page::{CompressedDataPage, CompressedDictPage};
    thread_local! {
        static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let squeeze = |input: &[u8]| -> PolarsResult<Vec<u8>> {
        ZSTD.with_borrow_mut(|z| {
            let c = match z {
                Some((l, c)) if *l == level => c,
                slot => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
            };
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(input.len()));
            c.compress_to_buffer(input, &mut out)?;
            Ok(out)
        })
        .map_err(|e: std::io::Error| polars_err!(ComputeError: "zstd: {e}"))
    };
    Ok(match page {
        pq::Page::Data(p) => {
            let buf = squeeze(p.buffer())?;
            let rows = p.num_rows.unwrap_or_default();
            pq::CompressedPage::Data(CompressedDataPage::new(
                p.header().clone(),
                CowBuffer::Owned(buf),
                Compression::Zstd,
                p.buffer().len(),
                p.descriptor,
                rows,
            ))
        }
        pq::Page::Dict(p) => pq::CompressedPage::Dict(CompressedDictPage::new(
            CowBuffer::Owned(squeeze(&p.buffer)?),
            Compression::Zstd,
            p.buffer.len(),
            p.num_values,
            p.is_sorted,
        )),
    })
}

impl StagedWriter {
    /// The chunk's columns (partition columns dropped; the first chunk fixes the schema) as
    /// compressed Parquet pages, one rayon task per column. A column that `same` holds too (same
    /// name and type) is taken from it: the caller guarantees that those columns of both chunks
    /// hold the same rows. A column in several pieces (a chunk is stacked from pages) is made
    /// contiguous in its own task, just before it is encoded: one column's copy at a time, and
    /// still in cache when the encoder reads it.
    pub fn encode(&mut self, df: &DataFrame, same: Option<&Encoded>) -> PolarsResult<Encoded> {
        use rayon::prelude::*;
        let keys: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        let df = df.drop_many(keys);
        let dataset = self.dataset;
        let level = self.zstd_level;
        let open = self.open(&df)?;
        let names: Vec<(String, DataType)> = df
            .schema()
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        if names.len() != open.fields.len() {
            polars_bail!(SchemaMismatch: "{dataset}: a chunk has {} columns, the file {}", names.len(), open.fields.len());
        }
        let rows = df.height();
        let options = open.options;
        let columns = df.columns();
        let fields = (0..names.len())
            .into_par_iter()
            .map(|i| {
                if let Some(same) = same
                    && let Some(f) = same.names.iter().position(|n| *n == names[i])
                {
                    return Ok(same.fields[f].clone());
                }
                if rows == 0 {
                    return Ok(std::sync::Arc::new(Vec::new()));
                }
                let series = columns[i].as_materialized_series().rechunk();
                let array = series.to_arrow(0, CompatLevel::newest());
                let (ty, enc) = &open.fields[i];
                // Strings get their dictionary here (see `dict`); the encoder writes a dictionary
                // array as it stands.
                let strings = array.as_any().downcast_ref::<Utf8ViewArray>();
                let leaves = match strings {
                    Some(s) if enc[..] == [pq::Encoding::RleDictionary] => {
                        match dict::dictionary(s) {
                            Some(d) => pq::array_to_columns(d.boxed(), ty.clone(), options, enc)?,
                            None => pq::array_to_columns(
                                &array,
                                ty.clone(),
                                options,
                                &[pq::Encoding::Plain],
                            )?,
                        }
                    }
                    _ => pq::array_to_columns(&array, ty.clone(), options, enc)?,
                };
                let leaves = leaves
                    .into_iter()
                    .map(|pages| {
                        pages
                            .map(|page| compress(page?, level))
                            .collect::<PolarsResult<Vec<_>>>()
                    })
                    .collect::<PolarsResult<Vec<_>>>()?;
                Ok(std::sync::Arc::new(leaves))
            })
            .collect::<PolarsResult<Vec<_>>>()?;
        Ok(Encoded {
            rows,
            names,
            fields,
        })
    }

    /// Appends an encoded chunk as one row group (nothing for an empty chunk).
    pub fn write_encoded(&mut self, enc: &Encoded) -> PolarsResult<()> {
        if enc.rows == 0 {
            return Ok(());
        }
        let Some(open) = &self.open else {
            polars_bail!(ComputeError: "{}: writer not open", self.dataset);
        };
        let leaves = enc.fields.iter().flat_map(|f| f.iter());
        let rg = pq::DynIter::new(leaves.map(|pages| {
            Ok(pq::DynStreamingIterator::new(
                pq::fallible_streaming_iterator::convert(pages.iter().map(PolarsResult::Ok)),
            ))
        }));
        open.writer
            .get_writer()
            .lock()
            .map_err(|_| polars_err!(ComputeError: "{}: writer lock poisoned", self.dataset))?
            .write(enc.rows as u64, rg)?;
        self.rows += enc.rows as u64;
        Ok(())
    }

    /// The Parquet writer, created from the first chunk's schema.
    fn open(&mut self, df: &DataFrame) -> PolarsResult<&Open> {
        if self.open.is_none() {
            let schema = df.schema().clone();
            self.schema = schema
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect();
            let sink = Hashing(std::sync::Arc::new(std::sync::Mutex::new(Spooled {
                file: std::io::BufWriter::with_capacity(1 << 20, self.spool.reopen()?),
                hash: Default::default(),
                bytes: 0,
            })));
            let compression = zstd(self.zstd_level)?;
            let statistics = StatisticsOptions::full();
            let mut writer = ParquetWriter::new(sink.clone())
                .with_compression(compression)
                .with_statistics(statistics)
                .batched(&schema)?;
            let encodings =
                polars::io::parquet::write::get_encodings(&schema.to_arrow(CompatLevel::newest()));
            let fields = writer
                .parquet_schema()
                .fields()
                .iter()
                .cloned()
                .zip(encodings.iter().cloned())
                .collect();
            // What polars' `ParquetWriter` materializes from the options above.
            let options = pq::WriteOptions {
                statistics,
                compression: compression.into(),
                version: pq::Version::V1,
                data_page_size: None,
            };
            self.open = Some(Open {
                writer,
                sink,
                fields,
                options,
            });
        }
        self.open
            .as_ref()
            .ok_or_else(|| polars_err!(ComputeError: "{}: writer not open", self.dataset))
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl Loader {
    /// A writer for one file of `dataset` in the partition `keys` (see [`StagedWriter`]).
    pub fn writer(
        &self,
        dataset: &'static str,
        keys: Vec<(String, String)>,
        file: String,
    ) -> Result<StagedWriter, LoadError> {
        let spool = tempfile::NamedTempFile::with_prefix("costlake-stage-").map_err(|e| {
            LoadError::BadStaging(
                format!("{}/{dataset}", std::env::temp_dir().display()),
                format!("cannot create a spool file: {e}"),
            )
        })?;
        Ok(StagedWriter {
            dataset,
            keys,
            file,
            spool,
            open: None,
            schema: Vec::new(),
            rows: 0,
            zstd_level: self.zstd_level,
        })
    }

    /// Finishes a [`StagedWriter`]'s file and puts it into staging (streamed, not read into memory).
    pub async fn stage_written(&self, mut w: StagedWriter) -> Result<FileEntry, LoadError> {
        let what = format!("{}/{}", w.dataset, w.file);
        let parquet = |source| LoadError::Parquet {
            what: what.clone(),
            source,
        };
        let Some(Open { writer, sink, .. }) = w.open.take() else {
            return Err(LoadError::BadStaging(what, "nothing was written".into()));
        };
        writer.finish().map_err(parquet)?;
        drop(writer);
        let (hash, bytes) = {
            use sha2::Digest;
            let mut s = sink
                .0
                .lock()
                .map_err(|_| LoadError::BadStaging(what.clone(), "spool lock poisoned".into()))?;
            std::io::Write::flush(&mut s.file).map_err(|e| parquet(PolarsError::from(e)))?;
            (hex::encode(s.hash.clone().finalize()), s.bytes)
        };
        let mut dirs = Vec::new();
        for (k, v) in &w.keys {
            dirs.push(hive(k, v)?);
        }
        let entry = FileEntry {
            dataset: w.dataset.to_owned(),
            partition: dirs.join("/"),
            file: format!("{}.parquet", crate::ids::segment("file", &w.file)?),
            rows: w.rows,
            bytes,
            sha256: hash,
            schema: w.schema.clone(),
        };
        let path = format!("_staging/{}/{}", self.run_id, final_path(&entry));
        self.output
            .put_file(&path, w.spool.path())
            .await
            .map_err(self.st(&path))?;
        Ok(entry)
    }

    fn st(&self, path: &str) -> impl FnOnce(StorageError) -> LoadError {
        let path = path.to_owned();
        move |source| LoadError::Storage { path, source }
    }

    /// Writes one frame into staging: through a [`StagedWriter`] (columns encoded in parallel,
    /// strings dictionary-encoded by `dict`), a row group per `row_group_size` rows.
    pub async fn stage(&self, p: Partition) -> Result<FileEntry, LoadError> {
        let what = format!("{}/{}", p.dataset, p.file);
        let rg = self.row_group_size.max(1);
        let mut w = self.writer(p.dataset, p.keys, p.file)?;
        let df = p.df;
        let w = tokio::task::spawn_blocking(move || -> PolarsResult<StagedWriter> {
            let mut at = 0;
            loop {
                let n = rg.min(df.height() - at);
                let enc = w.encode(&df.slice(at as i64, n), None)?;
                w.write_encoded(&enc)?;
                at += n;
                if at >= df.height() {
                    return Ok(w);
                }
            }
        })
        .await
        .map_err(|e| LoadError::BadStaging(what.clone(), e.to_string()))?
        .map_err(|source| LoadError::Parquet {
            what: what.clone(),
            source,
        })?;
        self.stage_written(w).await
    }

    /// Marks the staging set complete (written after every file).
    pub async fn complete(&self, files: &[FileEntry]) -> Result<(), LoadError> {
        let path = format!("_staging/{}/_complete.json", self.run_id);
        self.output
            .put(
                &path,
                Bytes::from(serde_json::to_vec_pretty(files).unwrap_or_default()),
            )
            .await
            .map_err(self.st(&path))
    }

    /// Publishes the newest complete staging set.
    pub async fn publish(&self) -> Result<LoadReport, LoadError> {
        let t = std::time::Instant::now();
        let staged = self
            .output
            .list("_staging")
            .await
            .map_err(self.st("_staging"))?;
        let run = staged
            .iter()
            .filter(|p| p.ends_with("/_complete.json"))
            .filter_map(|p| {
                p.strip_prefix("_staging/")?
                    .strip_suffix("/_complete.json")
                    .map(str::to_owned)
            })
            .max()
            .ok_or_else(|| {
                LoadError::NothingStaged(format!("{}/_staging", self.output.display()))
            })?;
        let list_path = format!("_staging/{run}/_complete.json");
        let list = self
            .output
            .get(&list_path)
            .await
            .map_err(self.st(&list_path))?
            .ok_or_else(|| LoadError::NothingStaged(list_path.clone()))?;
        let files: Vec<FileEntry> = serde_json::from_slice(&list)
            .map_err(|e| LoadError::BadStaging(list_path.clone(), e.to_string()))?;
        let mut by_partition: BTreeMap<(String, String), Vec<FileEntry>> = BTreeMap::new();
        for f in files {
            by_partition
                .entry((f.dataset.clone(), f.partition.clone()))
                .or_default()
                .push(f);
        }
        let mut report = LoadReport::default();
        for ((dataset, partition), files) in by_partition {
            let dir = if partition.is_empty() {
                dataset.clone()
            } else {
                format!("{dataset}/{partition}")
            };
            let manifest_path = format!("{dir}/_manifest.json");
            let old: Option<Manifest> = self
                .output
                .get(&manifest_path)
                .await
                .map_err(self.st(&manifest_path))?
                .and_then(|b| serde_json::from_slice(&b).ok());
            let unchanged = old.as_ref().is_some_and(|m| {
                let mut a: Vec<_> = m.files.iter().map(|f| (&f.file, &f.sha256)).collect();
                let mut b: Vec<_> = files.iter().map(|f| (&f.file, &f.sha256)).collect();
                a.sort();
                b.sort();
                a == b
            });
            // The manifest of a new partition is written before its files, so a load killed in
            // between leaves a manifest without its file: unchanged only if every file is there.
            let mut unchanged = unchanged;
            for f in &files {
                if !unchanged {
                    break;
                }
                unchanged = self
                    .output
                    .exists(&final_path(f))
                    .await
                    .map_err(self.st(&final_path(f)))?;
            }
            report.rows += files.iter().map(|f| f.rows).sum::<u64>();
            if unchanged {
                report.partitions_unchanged += 1;
                continue;
            }
            let manifest = Manifest {
                dataset: dataset.clone(),
                partition: partition
                    .split('/')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), crate::ids::decode(v)))
                    .collect(),
                rows: files.iter().map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.bytes).sum(),
                files: files.clone(),
                run_id: self.run_id.clone(),
                written_at: chrono::Utc::now().to_rfc3339(),
            };
            if old.is_none() {
                // A new partition appears with its manifest: a reader never sees its data without one.
                let first = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap_or_default());
                self.output
                    .put(&manifest_path, first)
                    .await
                    .map_err(self.st(&manifest_path))?;
            }
            for f in &files {
                if let Some(ms) = std::env::var("COSTLAKE_CHAOS_LOAD_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    // Chaos knob for crash tests: slows publishing so a kill lands mid-load.
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                let from = format!("_staging/{run}/{}", final_path(f));
                let to = final_path(f);
                if !self.output.exists(&from).await.map_err(self.st(&from))? {
                    return Err(LoadError::BadStaging(from, "staged file missing".into()));
                }
                self.output.copy(&from, &to).await.map_err(self.st(&to))?;
                report.bytes_written += f.bytes;
                report.files_written += 1;
            }
            // Files of this partition that this run did not produce (e.g. a profile that vanished).
            for existing in self.output.list(&dir).await.map_err(self.st(&dir))? {
                let name = existing.rsplit('/').next().unwrap_or("");
                let direct = existing
                    .strip_prefix(&format!("{dir}/"))
                    .is_some_and(|r| !r.contains('/'));
                if direct && name.ends_with(".parquet") && !files.iter().any(|f| f.file == name) {
                    self.output
                        .delete(&existing)
                        .await
                        .map_err(self.st(&existing))?;
                    report.files_deleted += 1;
                }
            }
            let manifest_bytes =
                Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap_or_default());
            self.output
                .put(&manifest_path, manifest_bytes)
                .await
                .map_err(self.st(&manifest_path))?;
            report.partitions_written += 1;
        }
        for f in self
            .output
            .list(&format!("_staging/{run}"))
            .await
            .map_err(self.st("_staging"))?
        {
            if !f.ends_with("_complete.json") {
                self.output.delete(&f).await.map_err(self.st(&f))?;
            }
        }
        self.output
            .delete(&list_path)
            .await
            .map_err(self.st(&list_path))?;
        report.seconds = t.elapsed().as_secs_f64();
        Ok(report)
    }
}

fn final_path(f: &FileEntry) -> String {
    if f.partition.is_empty() {
        format!("{}/{}", f.dataset, f.file)
    } else {
        format!("{}/{}/{}", f.dataset, f.partition, f.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with the shapes billing data has: constant, repeating and nearly unique strings,
    /// nulls, long and short values, decimals, dates, a partition column; three row groups (polars
    /// splits a frame into `rows / row_group_size` groups, so the rows are a multiple of it).
    fn frame(rows: usize) -> DataFrame {
        let s = |f: &dyn Fn(usize) -> Option<String>| (0..rows).map(f).collect::<Vec<_>>();
        df!(
            "billing_period" => vec!["2026-10"; rows],
            "account" => s(&|_| Some("fc3b72c1-8056-4967-9c83-6ea8839a5dbc:bc037581".into())),
            "meter" => s(&|i| Some(format!("meter-{:08}-long-enough", (i / 3) % 97))),
            "short" => s(&|i| (i % 11 != 0).then(|| format!("s{}", i % 5))),
            "resource" => s(&|i| Some(format!("/subscriptions/x/resourceGroups/rg/{i}"))),
            "empty" => s(&|_| None),
            "cost" => (0..rows).map(|i| i as f64 * 0.25).collect::<Vec<_>>(),
        )
        .unwrap()
        .lazy()
        .with_columns([
            col("cost").cast(DataType::Decimal(38, 18)),
            lit(20_000).cast(DataType::Date).alias("day"),
        ])
        .collect()
        .unwrap()
    }

    /// `stage` (our encoder, our string dictionaries) writes the same bytes polars' own
    /// `ParquetWriter` writes for the frame with the partition column dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_file_is_byte_identical_to_polars_writer() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader {
            output: Store::open(dir.path().to_str().unwrap()).unwrap(),
            run_id: "r".into(),
            zstd_level: 3,
            row_group_size: 1000,
        };
        let df = frame(3000);
        let entry = loader
            .stage(Partition {
                dataset: "usage",
                keys: vec![("billing_period".into(), "2026-10".into())],
                file: "f".into(),
                df: df.clone(),
            })
            .await
            .unwrap();
        let ours = loader
            .output
            .get(&format!("_staging/r/{}", final_path(&entry)))
            .await
            .unwrap()
            .unwrap();
        let mut theirs = Vec::new();
        ParquetWriter::new(&mut theirs)
            .with_compression(zstd(3).unwrap())
            .with_statistics(StatisticsOptions::full())
            .with_row_group_size(Some(1000))
            .finish(&mut df.drop("billing_period").unwrap())
            .unwrap();
        assert_eq!(entry.rows, 3000);
        assert!(
            ours[..] == theirs[..],
            "staged bytes differ from polars' writer"
        );
    }
}
