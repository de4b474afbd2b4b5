//! Micro-benchmarks of the transform's four steps, on data from the simulator's generator
//! (real page shapes, ~2.9 KB of JSON per usage row):
//!
//! ```text
//! cargo bench --bench micro
//! ```
//!
//! - `decode_page`: one landed 1 000-row `usageDetails` page (JSON bytes) → columns;
//! - `decode_page_parse_only`: the same bytes through sonic-rs without keeping anything (the floor);
//! - `price_sheet`: a 160 000-row price-sheet CSV → the `prices` frame;
//! - `join`: 131 072 usage rows priced against that sheet's index;
//! - `write_parquet`: those rows as zstd Parquet (one row group, columns encoded in parallel, as
//!   `transform` writes them).
//!
//! Throughput is shown in bytes of input per second where the input is bytes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use costlake::simulate::generator::{Scale, World};
use costlake::simulate::wire::{self, UsageFields};
use costlake::transform::{join, prices::PriceBuilder, usage::Builder};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use polars::prelude::*;
use std::sync::LazyLock;

fn world() -> World {
    let scale = Scale {
        customers: 500,
        subscriptions_per_customer: 4,
        rows_per_invoice: 200_000,
        months: 2,
        meters: 100_000,
        hostile_names: false,
    };
    World::new(
        2026,
        scale,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    )
}

static WORLD: LazyLock<World> = LazyLock::new(world);

/// A page of `rows` usage rows of invoice 0, as the simulator serves it.
fn page(rows: u64, from: u64) -> Vec<u8> {
    let w = &*WORLD;
    let scope = "/providers/Microsoft.Billing/billingAccounts/x/billingProfiles/y/invoices/z";
    let mut out = String::from("{\"value\":[");
    for i in from..from + rows {
        if i > from {
            out.push(',');
        }
        wire::usage_json(
            &mut out,
            w,
            scope,
            &w.usage_row(0, i, 0),
            UsageFields::V2024,
        );
    }
    out.push_str("],\"nextLink\":null}");
    out.into_bytes()
}

static PAGE: LazyLock<Vec<u8>> = LazyLock::new(|| page(1000, 0));

static SHEET: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let w = &*WORLD;
    let mut csv = wire::PRICE_HEADER_PASCAL.join(",");
    csv.push_str("\r\n");
    for line in wire::price_sheet_rows(w, 0, wire::PRICE_HEADER_PASCAL) {
        csv.push_str(&line);
    }
    csv.into_bytes()
});

static PRICES: LazyLock<DataFrame> = LazyLock::new(|| {
    let mut b = PriceBuilder::new();
    b.push_csv("sheet", &SHEET).unwrap();
    b.finish("2026-09", "P").unwrap()
});

/// Rows per join / write chunk: a row group (fewer in a debug build, where this is a smoke test).
const CHUNK: u64 = if cfg!(debug_assertions) {
    8_192
} else {
    131_072
};

static CHUNK_DF: LazyLock<DataFrame> = LazyLock::new(|| {
    let mut frames = Vec::new();
    for k in 0..CHUNK / 1000 + 1 {
        let mut b = Builder::new();
        b.push_json_page("p", &page(1000, k * 1000)).unwrap();
        frames.push(b.finish("2026-09", "P").unwrap());
    }
    let mut df = frames.remove(0);
    for f in frames {
        df.vstack_mut_owned(f).unwrap();
    }
    let mut df = df.slice(0, CHUNK as usize);
    df.rechunk_mut();
    df
});

#[divan::bench]
fn decode_page(b: Bencher) {
    let page = &*PAGE;
    b.counter(BytesCount::new(page.len())).bench(|| {
        let mut u = Builder::with_capacity(1000);
        u.push_json_page("p", black_box(page)).unwrap();
        u.finish("2026-09", "P").unwrap()
    });
}

#[divan::bench]
fn decode_page_parse_only(b: Bencher) {
    let page = &*PAGE;
    b.counter(BytesCount::new(page.len())).bench(|| {
        let v: serde::de::IgnoredAny = sonic_rs::from_slice(black_box(page)).unwrap();
        v
    });
}

#[divan::bench(sample_count = 10)]
fn price_sheet(b: Bencher) {
    let sheet = &*SHEET;
    b.counter(BytesCount::new(sheet.len())).bench(|| {
        let mut p = PriceBuilder::new();
        p.push_csv("sheet", black_box(sheet)).unwrap();
        p.finish("2026-09", "P").unwrap()
    });
}

#[divan::bench(sample_count = 10)]
fn join(b: Bencher) {
    let index = join::PriceIndex::new(&PRICES).unwrap();
    let chunk = &*CHUNK_DF;
    b.counter(ItemsCount::new(CHUNK))
        .bench(|| join::join_indexed(black_box(chunk), &index).unwrap());
}

#[divan::bench(sample_count = 10)]
fn price_index(b: Bencher) {
    let prices = &*PRICES;
    b.counter(ItemsCount::new(prices.height()))
        .bench(|| join::PriceIndex::new(black_box(prices)).unwrap());
}

#[divan::bench(sample_count = 5)]
fn write_parquet(b: Bencher) {
    let chunk = &*CHUNK_DF;
    let dir = tempfile::tempdir().unwrap();
    let loader = costlake::load::Loader {
        output: costlake::storage::Store::open(dir.path().to_str().unwrap()).unwrap(),
        run_id: "bench".into(),
        zstd_level: 3,
        row_group_size: CHUNK as usize,
    };
    b.counter(ItemsCount::new(CHUNK)).bench(|| {
        // One row group encoded (columns in parallel) and written to a spool file.
        let mut w = loader.writer("usage", Vec::new(), "bench".into()).unwrap();
        let enc = w.encode(black_box(chunk), None).unwrap();
        w.write_encoded(&enc).unwrap();
        w.rows()
    });
}

fn main() {
    // Under `cargo test --all-targets` each benchmark runs once, as a smoke test.
    divan::main();
}
