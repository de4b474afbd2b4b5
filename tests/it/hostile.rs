//! Hostile input and a hostile disk: IDs full of characters a path must not trust, corrupt landed
//! files, a full disk and a refused write on the output. Each ends in a safe encoding or a clear
//! error naming what and where, nothing outside the root, no half-visible partition, and a rerun
//! that completes.

use crate::crash::{lake_files, write};
use crate::pipeline::{read_dataset, toml, walk};
use std::path::Path;
use std::process::{Command, Stdio};

fn costlake(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_costlake"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !uid {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root; these tests need it (tmpfs, chattr)"
        );
        eprintln!("SKIPPED: needs root for a size-limited tmpfs and chattr");
    }
    uid
}

fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn hostile_profile_names_are_encoded_and_decoded_back() {
    // The run's root inside a folder of its own, so "beside the root" sees no other test's files.
    let outer = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir_in(outer.path()).unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(
        &f,
        toml(dir.path(), "hostile_names = true", "usage-details"),
    )
    .unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path().parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (ok, err) = costlake(&["run", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    let after: Vec<_> = std::fs::read_dir(dir.path().parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        after.is_empty(),
        "nothing written beside the root: {after:?}"
    );
    let lake = dir.path().join("lake");
    let dirs: Vec<String> = walk(&lake)
        .iter()
        .filter_map(|p| p.parent())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains("billing_profile="))
        .collect();
    assert!(
        dirs.iter().all(|d| d.contains("%3A")
            && d.contains("%C3%BC")
            && d.contains("%25")
            && !d.contains(':')),
        "encoded once: {:?}",
        &dirs[..1]
    );
    let usage = read_dataset(&lake, "usage");
    let mut names: Vec<String> = usage
        .column("billing_profile")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|n| n.contains(":ü€ 100%..x")),
        "decoded back exactly: {names:?}"
    );
    if Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let q = format!(
            "import duckdb; print(sorted(r[0] for r in duckdb.sql(\"SELECT DISTINCT billing_profile FROM read_parquet('{}/usage/**/*.parquet', hive_partitioning = true, hive_types = {{'billing_period': VARCHAR, 'billing_profile': VARCHAR}})\").fetchall()))",
            lake.display()
        );
        let out = Command::new("python3").args(["-c", &q]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            names.iter().all(|n| text.contains(n.as_str())),
            "DuckDB decodes the same names: {text}"
        );
    }
}

#[test]
fn corrupt_landed_files_give_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    let (ok, err) = costlake(&["extract", &f]);
    assert!(ok, "{err}");
    let pages: Vec<_> = walk(&dir.path().join("landing"))
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("/units/usage/")
                && p.to_string_lossy().ends_with("page-00002.json.zst")
        })
        .collect();
    // A truncated compressed page.
    let bytes = std::fs::read(&pages[0]).unwrap();
    std::fs::write(&pages[0], &bytes[..bytes.len() / 2]).unwrap();
    let (ok, err) = costlake(&["transform", &f]);
    assert!(
        !ok && err.contains("page-00002.json.zst") && err.contains("truncated or corrupt"),
        "{err}"
    );
    // A page that decompresses but is not JSON.
    std::fs::write(
        &pages[0],
        zstd::encode_all(
            &b"{\"value\":[{\"properties\":{\"quantity\":\"12,5\"}}]}"[..],
            3,
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, err) = costlake(&["transform", &f]);
    assert!(
        !ok && err.contains("page-00002.json.zst") && err.contains("quantity"),
        "{err}"
    );
    assert!(
        !dir.path().join("lake/usage").exists(),
        "nothing published from bad input"
    );
}

#[test]
fn a_full_disk_and_a_refused_write_fail_clearly_and_a_rerun_completes() {
    if !root() {
        return;
    }
    let reference = {
        let d = tempfile::tempdir().unwrap();
        let (ok, err) = costlake(&["run", &write(d.path())]);
        assert!(ok, "{err}");
        lake_files(&d.path().join("lake"))
    };

    // Disk full: the lake on a 160 KiB tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    assert!(
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=160k",
                "tmpfs",
                lake.to_str().unwrap()
            ]
        ),
        "mount a small tmpfs"
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            sh("umount", &[self.0.to_str().unwrap()]);
        }
    }
    let _guard = Unmount(&lake);
    let (ok, full) = costlake(&["run", &f]);
    assert!(!ok && full.contains("No space left on device"), "{full}");
    check_whole(&lake);
    assert!(
        sh("mount", &["-o", "remount,size=64m", lake.to_str().unwrap()]),
        "grow the tmpfs"
    );
    assert!(
        !lake.join("_lock.json").exists(),
        "a failed run releases its lease"
    );
    let (ok, err) = costlake(&["run", &f]);
    assert!(ok, "{err}");
    assert_eq!(
        lake_files(&lake),
        reference,
        "after the disk was freed, the rerun completes the same lake"
    );
    let report = walk(&lake.join("_runs")).pop().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert!(
        report["extract"]["units"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| !u["unit"].as_str().unwrap().contains("/2026-11"))
            .all(|u| u["skipped"] == true),
        "the ledgers kept extract's work"
    );
    eprintln!(
        "disk full: {}",
        full.lines().take(3).collect::<Vec<_>>().join(" | ")
    );

    // Permission denied: an immutable lake folder refuses every new entry, even to root.
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path());
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    assert!(sh("chattr", &["+i", lake.to_str().unwrap()]), "chattr +i");
    struct Mutable<'a>(&'a Path);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            sh("chattr", &["-i", self.0.to_str().unwrap()]);
        }
    }
    let guard = Mutable(&lake);
    let (ok, err) = costlake(&["run", &f]);
    assert!(
        !ok && err.contains("Operation not permitted") && err.contains(&*lake.to_string_lossy()),
        "{err}"
    );
    drop(guard);
    let (ok, e2) = costlake(&["run", &f]);
    assert!(ok, "{e2}");
    assert_eq!(lake_files(&lake), reference);
    eprintln!(
        "permission denied: {}",
        err.lines().take(3).collect::<Vec<_>>().join(" | ")
    );
}

/// Every Parquet file readable, and none without its partition's manifest.
fn check_whole(lake: &Path) {
    use polars::prelude::SerReader;
    for p in walk(lake).into_iter().filter(|p| {
        p.extension().is_some_and(|e| e == "parquet") && !p.to_string_lossy().contains("_staging")
    }) {
        assert!(
            p.parent().unwrap().join("_manifest.json").exists(),
            "{} without manifest",
            p.display()
        );
        polars::prelude::ParquetReader::new(std::fs::File::open(&p).unwrap())
            .finish()
            .unwrap_or_else(|e| panic!("{} is corrupt: {e}", p.display()));
    }
}
