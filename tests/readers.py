"""Reads every dataset of a costlake lake with pyarrow.dataset, DuckDB and polars, and checks row
counts, exact decimal sums and column types against the expectation file written by the Rust test.

usage: python3 tests/readers.py LAKE EXPECTED.json   (exit 0 and "N passed, 0 failed" when all agree)
"""
import json
import sys
from decimal import Decimal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

lake, expected_path = sys.argv[1], sys.argv[2]
expected = json.load(open(expected_path))
KEYS = pa.schema([("billing_period", pa.string()), ("billing_profile", pa.string())])
passed, failed = 0, 0


def check(what, got, want):
    global passed, failed
    if got == want:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {what}: got {got!r}, want {want!r}")


for name, exp in sorted(expected.items()):
    path = f"{lake}/{name}"
    partitioned = exp["partitioned"]
    # pyarrow: explicit partition types, so a key that looks numeric stays text
    part = ds.partitioning(KEYS, flavor="hive") if partitioned else None
    t = ds.dataset(path, format="parquet", partitioning=part).to_table()
    if exp["rows"] is not None:
        check(f"{name} pyarrow rows", t.num_rows, exp["rows"])
    for col, typ in exp["types"].items():
        check(f"{name}.{col} pyarrow type", str(t.schema.field(col).type), typ)
    for col, total in exp["sums"].items():
        check(f"{name}.{col} pyarrow sum", pc.sum(t[col]).as_py() or Decimal(0), Decimal(total))
    # DuckDB
    glob = f"{path}/**/*.parquet" if partitioned else f"{path}/*.parquet"
    hive = ", hive_partitioning = true, hive_types = {'billing_period': VARCHAR, 'billing_profile': VARCHAR}" if partitioned else ""
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}'{hive})").fetchone()[0]
    check(f"{name} duckdb rows", rows, t.num_rows)
    for col, total in exp["sums"].items():
        s = con.execute(f"SELECT sum({col}) FROM read_parquet('{glob}'{hive})").fetchone()[0]
        check(f"{name}.{col} duckdb sum", s or Decimal(0), Decimal(total))
    if partitioned:
        periods = con.execute(f"SELECT count(DISTINCT billing_period) FROM read_parquet('{glob}'{hive})").fetchone()[0]
        check(f"{name} duckdb periods", periods, exp["periods"])
        pruned = con.execute(f"SELECT count(*) FROM read_parquet('{glob}'{hive}) WHERE billing_period = '{exp['first_period']}'").fetchone()[0]
        check(f"{name} duckdb rows of {exp['first_period']}", pruned, exp["first_period_rows"])
    # polars
    if partitioned:
        lf = pl.scan_parquet(glob, hive_partitioning=True, hive_schema={"billing_period": pl.String, "billing_profile": pl.String})
    else:
        lf = pl.scan_parquet(glob)
    df = lf.collect()
    check(f"{name} polars rows", df.height, t.num_rows)
    for col, total in exp["sums"].items():
        s = df[col].sum()
        check(f"{name}.{col} polars sum", Decimal(str(s)) if s is not None else Decimal(0), Decimal(total))
    for col, typ in exp["types"].items():
        if typ.startswith("decimal128"):
            check(f"{name}.{col} polars type", str(df.schema[col]), "Decimal(precision=38, scale=18)")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
