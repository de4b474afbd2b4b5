//! After a pipeline run under 10 % faults, no client secret, bearer token or SAS signature appears
//! in any log line (trace level), the run report, a ledger, a landed file, or any Parquet value.

use crate::pipeline::{toml, walk};
use costlake::pipeline::{self, RunReport, config::Pipeline};
use polars::prelude::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn leaks(text: &str, secrets: &[String]) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .filter(|s| {
            let enc: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            text.contains(s.as_str()) || text.contains(&enc)
        })
        .map(|s| format!("{}…", &s[..6]))
        .collect()
}

#[test]
fn a_faulty_pipeline_run_leaks_no_secret_anywhere() {
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let _ = tracing_log::LogTracer::init();
    let _guard = tracing::subscriber::set_default(sub);
    let dir = tempfile::tempdir().unwrap();
    let text = toml(dir.path(), "fault_rate = 0.1", "cost-details");
    let p = Pipeline::from_toml("sec.toml", &text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (secrets, report) = rt.block_on(async {
        let conn = pipeline::connect(&p).await.unwrap();
        let mut report = RunReport::default();
        pipeline::extract(&p, &conn, "run-sec", &mut report)
            .await
            .unwrap();
        pipeline::transform(&p, "run-sec", &mut report)
            .await
            .unwrap();
        pipeline::load(&p, "run-sec", &mut report).await.unwrap();
        let sim = conn.simulator.as_ref().unwrap();
        let injected = sim.counters().injected_total();
        assert!(injected > 0, "faults were injected");
        (sim.secrets(), report)
    });
    assert!(
        secrets.len() > 5,
        "secrets, tokens and signatures were issued: {}",
        secrets.len()
    );
    let mut scanned = 0;
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    assert_eq!(leaks(&logs, &secrets), Vec::<String>::new(), "trace logs");
    assert_eq!(
        leaks(&serde_json::to_string(&report).unwrap(), &secrets),
        Vec::<String>::new(),
        "run report"
    );
    for f in walk(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        let text = if f.to_string_lossy().ends_with(".zst") {
            String::from_utf8_lossy(&zstd::decode_all(&bytes[..]).unwrap()).into_owned()
        } else if f.extension().is_some_and(|e| e == "parquet") {
            let df = ParquetReader::new(std::fs::File::open(&f).unwrap())
                .finish()
                .unwrap();
            let mut all = String::new();
            for c in df.columns() {
                if let Ok(s) = c.str() {
                    for v in s.iter().flatten() {
                        all.push_str(v);
                        all.push('\n');
                    }
                }
            }
            all
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        assert_eq!(
            leaks(&text, &secrets),
            Vec::<String>::new(),
            "{}",
            f.display()
        );
        scanned += 1;
    }
    eprintln!(
        "secret scan: {} secrets/tokens/signatures, {} log lines, the run report and {scanned} files (ledgers, landed pages and blobs, manifests, Parquet values): none found",
        secrets.len(),
        logs.lines().count()
    );
}
