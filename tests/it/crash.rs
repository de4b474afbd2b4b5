//! SIGKILL during extract, and again during load, then a rerun: the lake equals an uninterrupted
//! run's, byte for byte, and the resumed extract fetched only the pages it had not landed.

use crate::pipeline::{toml, walk};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn costlake(args: &[&str], envs: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_costlake"));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn ok(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn write(dir: &Path) -> String {
    let file = dir.join("p.toml");
    // Small pages so the extract takes long enough to be killed in the middle.
    std::fs::write(
        &file,
        toml(dir, "page_size = 10", "usage-details")
            .replace("time_scale = 6000", "time_scale = 120"),
    )
    .unwrap();
    file.to_string_lossy().into_owned()
}

fn count(dir: &Path, f: impl Fn(&str) -> bool) -> usize {
    walk(dir).iter().filter(|p| f(&p.to_string_lossy())).count()
}

fn kill_when(mut child: Child, what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{what}: condition never met"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// sha256 of every Parquet file and manifest-less listing, relative to the lake.
pub fn lake_files(lake: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(lake)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| !p.to_string_lossy().contains("_staging"))
        .map(|p| {
            (
                p.strip_prefix(lake).unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn sigkill_in_extract_and_in_load_then_rerun_equals_an_uninterrupted_run() {
    let clean = tempfile::tempdir().unwrap();
    let f = write(clean.path());
    ok(costlake(&["run", &f], &[]));
    let reference = lake_files(&clean.path().join("lake"));
    assert!(reference.len() > 20);

    // 1. Kill during extract, once at least 25 pages are landed.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    let env = [
        ("COSTLAKE_SIM_PORT", free_port().to_string()),
        ("COSTLAKE_SIM_BLOB_PORT", free_port().to_string()),
    ];
    let landing = dir.path().join("landing");
    let child = costlake(&["run", &f], &env).spawn().unwrap();
    kill_when(child, "extract", || {
        count(&landing, |p| {
            p.contains("/units/usage/") && p.ends_with(".json.zst")
        }) >= 25
    });
    assert!(
        !dir.path().join("lake/usage").exists(),
        "killed before load"
    );
    // What the ledgers say was landed before the kill (invoiced units only; open months are re-read).
    let mut before: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for l in walk(&landing).into_iter().filter(|p| {
        p.ends_with("_ledger.json")
            && p.to_string_lossy().contains("/units/usage/")
            && !p.to_string_lossy().contains("/open/")
    }) {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&l).unwrap()).unwrap();
        let unit = v["unit"].as_str().unwrap().to_owned();
        before.insert(
            unit,
            (
                v["state"].as_str().unwrap().to_owned(),
                v["pages"].as_array().unwrap().len(),
            ),
        );
    }
    assert!(
        before.values().any(|(s, _)| s == "started"),
        "the kill interrupted a unit: {before:?}"
    );
    ok(costlake(&["run", &f], &env));
    let report = walk(&dir.path().join("lake/_runs")).pop().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let (mut refetched, mut saved) = (0u64, 0u64);
    for u in report["extract"]["units"].as_array().unwrap() {
        let unit = u["unit"].as_str().unwrap();
        let (fetched, total) = (
            u["pages_fetched"].as_u64().unwrap(),
            u["pages_total"].as_u64().unwrap(),
        );
        if let Some((state, landed)) = before.get(unit) {
            let expect = if state == "done" {
                0
            } else {
                total - *landed as u64
            };
            assert_eq!(
                fetched, expect,
                "{unit}: {state} with {landed} pages before the kill"
            );
            refetched += fetched;
            saved += *landed as u64;
        }
    }
    eprintln!(
        "extract killed with {saved} usage pages in ledgers; the rerun fetched only the other {refetched}"
    );
    assert_eq!(
        lake_files(&dir.path().join("lake")),
        reference,
        "byte-identical lake after a kill in extract"
    );

    // 2. Kill during load (publishing slowed down), then load again.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    ok(costlake(&["extract", &f], &[]));
    ok(costlake(&["transform", &f], &[]));
    let lake = dir.path().join("lake");
    let child = costlake(
        &["load", &f],
        &[("COSTLAKE_CHAOS_LOAD_DELAY_MS", "150".into())],
    )
    .spawn()
    .unwrap();
    kill_when(child, "load", || {
        count(&lake, |p| {
            p.ends_with(".parquet") && !p.contains("_staging")
        }) >= 6
    });
    let published = lake_files(&lake);
    assert!(
        !published.is_empty() && published.len() < reference.len(),
        "killed in the middle of publishing: {} of {}",
        published.len(),
        reference.len()
    );
    for (path, bytes) in &published {
        assert_eq!(
            reference.get(path),
            Some(bytes),
            "{path}: a published file is whole and final even before the kill"
        );
    }
    ok(costlake(&["load", &f], &[]));
    assert_eq!(
        lake_files(&lake),
        reference,
        "byte-identical lake after a kill in load"
    );
    assert_eq!(
        count(&lake, |p| p.contains("_staging") && p.ends_with(".parquet")),
        0,
        "staging cleaned up"
    );
    eprintln!(
        "load killed after {} of {} files; the rerun completed it byte-identically",
        published.len(),
        reference.len()
    );
}

#[test]
fn a_second_run_of_the_same_pipeline_exits_while_the_first_holds_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    let lock = dir.path().join("lake/_lock.json");
    let mut first = costlake(&["run", &f], &[]).spawn().unwrap();
    let t = Instant::now();
    while !lock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the first run never took the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = costlake(&["run", &f], &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is locked by run") && err.contains("since"),
        "{err}"
    );
    assert!(
        first.wait().unwrap().success(),
        "the first run finishes undisturbed"
    );
    assert!(!lock.exists(), "the lease is released at the end");
    ok(costlake(&["run", &f], &[]));
    eprintln!(
        "second run refused with: {}",
        err.lines().next().unwrap_or("")
    );
}

/// A reader polling the lake while a load publishes (slowed down) never sees a partition's data
/// without its manifest, nor a partition whose rows come from two runs.
#[test]
fn a_reader_polling_during_load_sees_whole_partitions_with_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    ok(costlake(&["run", &f], &[]));
    let lake = dir.path().join("lake");
    let first = lake_files(&lake);
    // Restate the open month and reload slowly, polling all the while.
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("page_size = 10", "page_size = 10\nrestatements = 1");
    std::fs::write(&f, text).unwrap();
    ok(costlake(&["extract", &f], &[]));
    ok(costlake(&["transform", &f], &[]));
    let mut load = costlake(
        &["load", &f],
        &[("COSTLAKE_CHAOS_LOAD_DELAY_MS", "100".into())],
    )
    .spawn()
    .unwrap();
    let (mut polls, mut saw_new) = (0, 0);
    loop {
        let done = load.try_wait().unwrap().is_some();
        for (path, bytes) in lake_files(&lake) {
            let part = std::path::Path::new(&path).parent().unwrap();
            assert!(
                lake.join(part).join("_manifest.json").exists(),
                "{path} visible without its manifest"
            );
            if first.get(&path) != Some(&bytes) {
                saw_new += 1;
            }
        }
        polls += 1;
        if done {
            break;
        }
    }
    assert!(load.wait().unwrap().success());
    assert!(
        saw_new > 0,
        "the reload published new data while being watched"
    );
    eprintln!(
        "reader polled the lake {polls} times during a load: every partition whole and with its manifest"
    );
}

/// SIGKILL at 10 seeded random points spread over extract, transform and load (their windows taken
/// from an uninterrupted run's report), a rerun after each: always the uninterrupted run's lake.
#[test]
fn sigkill_at_ten_seeded_random_points_then_rerun_gives_the_same_lake() {
    use rand::{Rng, SeedableRng};
    let clean = tempfile::tempdir().unwrap();
    let f = write(clean.path());
    let slow_load = [("COSTLAKE_CHAOS_LOAD_DELAY_MS", "60".to_owned())];
    ok(costlake(&["run", &f], &slow_load));
    let reference = lake_files(&clean.path().join("lake"));
    let report = walk(&clean.path().join("lake/_runs")).pop().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let secs = |s: &str| report[s]["seconds"].as_f64().unwrap();
    let (ex, tr, lo) = (secs("extract"), secs("transform"), secs("load"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    // 4 points in extract, 3 in transform, 3 in load; 0.4 s for the process to start.
    let mut points: Vec<(f64, &str)> = Vec::new();
    for (n, from, len, stage) in [
        (4, 0.0, ex, "extract"),
        (3, ex, tr, "transform"),
        (3, ex + tr, lo, "load"),
    ] {
        for _ in 0..n {
            points.push((0.4 + from + rng.random_range(0.05..0.95) * len, stage));
        }
    }
    let mut results = Vec::new();
    for (i, (at, stage)) in points.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path());
        let env = [
            slow_load[0].clone(),
            ("COSTLAKE_SIM_PORT", free_port().to_string()),
            ("COSTLAKE_SIM_BLOB_PORT", free_port().to_string()),
        ];
        let mut child = costlake(&["run", &f], &env).spawn().unwrap();
        std::thread::sleep(Duration::from_secs_f64(*at));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        ok(costlake(&["run", &f], &env));
        let lake = dir.path().join("lake");
        let same = lake_files(&lake) == reference;
        results.push(format!(
            "#{:<2} {stage:<9} at {at:>5.2}s: {}",
            i + 1,
            if finished {
                "finished before the kill"
            } else if same {
                "killed; rerun → identical lake"
            } else {
                "killed; rerun → DIFFERENT"
            }
        ));
        assert!(
            same,
            "kill point {} ({stage} at {at:.2}s): the rerun's lake differs",
            i + 1
        );
        let usage = crate::pipeline::read_dataset(&lake, "usage");
        let n = usage.height();
        assert_eq!(
            usage
                .unique_stable(None, polars::prelude::UniqueKeepStrategy::First, None)
                .unwrap()
                .height(),
            n,
            "no duplicate rows"
        );
    }
    eprintln!(
        "stage windows from an uninterrupted run: extract {ex:.2}s, transform {tr:.2}s, load {lo:.2}s\n{}",
        results.join("\n")
    );
}
