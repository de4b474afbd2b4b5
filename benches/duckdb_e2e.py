"""The DuckDB side of `cargo bench --bench e2e`: the job a data engineer would write instead of
costlake, on the very same landed files.

    python3 benches/duckdb_e2e.py run     LANDING OUT COLUMNS.json   # transform + load, timed by the caller
    python3 benches/duckdb_e2e.py compare LAKE_A LAKE_B              # do two lakes agree? (exit 1 if not)

`run` reads the landed usage pages (zstd JSON, exactly as Azure served them) and the price-sheet
CSVs, applies costlake's join rule (README, "How usage meets prices") with exact decimals, and
writes the same hive-partitioned zstd Parquet datasets: usage, prices, costs, price_coverage.
Column names and JSON properties come from COLUMNS.json, which the benchmark writes from
costlake's own column tables, so both sides read the same fields.

Numbers: DuckDB's JSON reader turns a JSON number into a double before anything else (read as
DECIMAL it gives 11.595452125839998976 for 11.59545212584), so numbers are read as VARCHAR (the
double's shortest round-trip text) and cast to DECIMAL(38, 18): exact up to 17 significant digits.
Charged costs in a non-USD currency have more (quantity × price × FX), so DuckDB's sums differ from
costlake's in the last digits; the comparison allows 1e-9 per sum there and says so.
"""

import json
import os
from decimal import Decimal
import resource
import sys
import time

import duckdb


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The SQL that types a text value `v`, by the column kinds of columns.json: usage kinds (Str, Dec,
# Date, Bool) and price-sheet kinds (s, d, t) — exact decimals, dates from the first 10 characters.
CASTS = {
    "Str": "{v}",
    "s": "{v}",
    "Dec": "CAST({v} AS DECIMAL(38, 18))",
    "d": "CAST({v} AS DECIMAL(38, 18))",
    "Date": "CAST(substr({v}, 1, 10) AS DATE)",
    "t": "CAST(substr({v}, 1, 10) AS DATE)",
    "Bool": "(lower({v}) IN ('true', '1'))",
}


def typed(v: str, kind: str, out_name: str) -> str:
    if kind not in CASTS:
        raise ValueError(f"columns.json: unknown column kind {kind!r} for {out_name}")
    return f"{CASTS[kind].format(v=v)} AS {q(out_name)}"


def run(landing: str, out: str, columns_file: str) -> None:
    t0 = time.time()
    cols = json.load(open(columns_file))
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    trace = bool(os.environ.get("DUCKDB_E2E_TRACE"))

    def run_sql(sql):
        t = time.time()
        r = con.execute(sql)
        if trace:
            print(f"{time.time() - t:7.2f} s  {' '.join(sql.split())[:70]}", file=sys.stderr)
        return r

    run_sql("SET TimeZone = 'UTC'")
    pages = f"{landing}/units/usage/*/*/*/*/page-*.json.zst"
    # Declared columns, every property as VARCHAR, and `records = true` (without it DuckDB 2.0.0 took
    # 15.5 s instead of 1.3 s for 100 pages). Schema auto-detection is no option: from a sample of
    # USD rows it typed exchangeRatePricingToBilling as an integer and silently read 0.9024 as 1.
    props = [c for c in cols["usage"] if c[3] != "Json"]
    struct = ", ".join(f"{q(c[1])} VARCHAR" for c in props)
    value_type = f"STRUCT(tags JSON, properties STRUCT({struct}))[]"
    source = f"""read_json('{pages}', columns = {{'value': '{value_type}'}}, filename = true,
                            compression = 'zstd', format = 'unstructured', records = true,
                            maximum_object_size = 67108864)"""
    run_sql(f"CREATE TEMP VIEW pages AS SELECT filename, unnest(value) AS r FROM {source}")
    select = []
    for out_name, prop, _, kind in cols["usage"]:
        if kind == "Json":
            select.append(f"CAST(r.tags AS VARCHAR) AS {q(out_name)}")
            continue
        v = f"NULLIF(NULLIF(trim(r.properties.{q(prop)}, '\" '), ''), 'null')"
        select.append(typed(v, kind, out_name))
    run_sql(
        f"""
        CREATE TEMP TABLE usage AS
        SELECT
          regexp_extract(filename, '/units/usage/[^/]+/[^/]+/([^/]+)/', 1) AS billing_period,
          url_decode(regexp_extract(filename, '/units/usage/[^/]+/([^/]+)/', 1)) AS billing_profile,
          {", ".join(select)},
          CAST(r.tags AS MAP(VARCHAR, VARCHAR)) AS tags_map
        FROM pages
        """
    )
    price_select = []
    for out_name, header, kind in cols["prices"]:
        price_select.append(typed(f"NULLIF(trim({q(header)}), '')", kind, out_name))
    run_sql(
        f"""
        CREATE TEMP TABLE prices AS
        SELECT
          regexp_extract(filename, '/units/prices/[^/]+/[^/]+/([^/]+)/', 1) AS billing_period,
          url_decode(regexp_extract(filename, '/units/prices/[^/]+/([^/]+)/', 1)) AS billing_profile,
          {", ".join(price_select)}
        FROM read_csv('{landing}/units/prices/*/*/*/pricesheet.csv*', header = true, all_varchar = true,
                      filename = true)
        """
    )
    # The join rule, as in src/transform/join.rs.
    run_sql(
        """
        CREATE TEMP TABLE keyed AS
        SELECT *,
          row_number() OVER () AS _row,
          lower(meter_id) AS _meter,
          CASE
            WHEN lower(replace(coalesce(pricing_model, ''), ' ', '')) = 'reservation' THEN 'ReservedInstance'
            WHEN lower(replace(coalesce(pricing_model, ''), ' ', '')) = 'spot' THEN 'Spot'
            WHEN lower(replace(coalesce(pricing_model, ''), ' ', '')) = 'savingsplan' THEN 'SavingsPlan'
            WHEN coalesce(pricing_model, '') = '' AND reservation_id IS NOT NULL THEN 'ReservedInstance'
            WHEN lower(replace(coalesce(pricing_model, ''), ' ', '')) IN ('', 'ondemand') THEN 'Consumption'
            ELSE lower(replace(pricing_model, ' ', ''))
          END AS _ptype,
          CASE
            WHEN term IS NULL OR trim(term) = '' THEN ''
            WHEN TRY_CAST(trim(term) AS INTEGER) > 0 AND TRY_CAST(trim(term) AS INTEGER) % 12 = 0
              THEN 'P' || CAST(TRY_CAST(trim(term) AS INTEGER) // 12 AS VARCHAR) || 'Y'
            WHEN TRY_CAST(trim(term) AS INTEGER) IS NOT NULL
              THEN 'P' || CAST(TRY_CAST(trim(term) AS INTEGER) AS VARCHAR) || 'M'
            ELSE upper(trim(term))
          END AS _term
        FROM usage
        """
    )
    run_sql("DROP TABLE usage")
    run_sql(
        """
        CREATE TEMP TABLE costs AS
        WITH cand AS (
          SELECT k._row, coalesce(p.tier_minimum_units, 0) AS _tier, p.unit_price, p.market_price
          FROM keyed k JOIN prices p
            ON p.billing_period = k.billing_period AND p.billing_profile = k.billing_profile
           AND lower(p.meter_id) = k._meter AND p.price_type = k._ptype
           AND upper(coalesce(p.term, '')) = k._term
           AND p.effective_start_date <= k.date
           AND (p.effective_end_date IS NULL OR p.effective_end_date >= k.date)
           AND coalesce(p.tier_minimum_units, 0) <= abs(k.quantity)
        ),
        best AS (SELECT _row, max(_tier) AS _best FROM cand GROUP BY _row),
        picked AS (
          SELECT c._row, count(DISTINCT c.unit_price) AS _prices,
                 min(c.unit_price) AS _unit, min(c.market_price) AS _market
          FROM cand c JOIN best b ON c._row = b._row AND c._tier = b._best
          GROUP BY c._row
        ),
        judged AS (
          SELECT k.*, p._prices, p._unit, p._market,
            CASE
              WHEN k.charge_type IS NOT NULL AND lower(k.charge_type) <> 'usage' THEN 'purchase_or_refund'
              WHEN lower(coalesce(k.publisher_type, '')) = 'marketplace' OR k.meter_id IS NULL THEN 'marketplace'
              WHEN coalesce(p._prices, 0) = 0 THEN 'no_price_row'
              WHEN p._prices > 1 THEN 'ambiguous'
              ELSE 'matched'
            END AS price_match
          FROM keyed k LEFT JOIN picked p ON k._row = p._row
        )
        SELECT * EXCLUDE (_row, _meter, _term, _prices, _unit, _market, _ptype, price_match),
          CASE WHEN price_match = 'matched' THEN _market END AS list_unit_price,
          CASE WHEN price_match = 'matched' THEN _unit END AS contracted_unit_price,
          CASE WHEN price_match = 'matched' AND _ptype = 'Consumption' THEN
            CAST(CAST(round(CAST(quantity AS DECIMAL(38, 12)) * CAST(_market AS DECIMAL(38, 12)), 12) AS DECIMAL(38, 12))
                 * CAST(coalesce(exchange_rate, 1) AS DECIMAL(38, 12)) AS DECIMAL(38, 18)) END AS list_cost,
          CASE WHEN price_match = 'matched' AND _ptype = 'Consumption' THEN
            CAST(CAST(round(CAST(quantity AS DECIMAL(38, 12)) * CAST(_unit AS DECIMAL(38, 12)), 12) AS DECIMAL(38, 12))
                 * CAST(coalesce(exchange_rate, 1) AS DECIMAL(38, 12)) AS DECIMAL(38, 18)) END AS contracted_cost,
          cost_in_billing_currency AS effective_cost,
          price_match,
          CASE price_match
            WHEN 'purchase_or_refund' THEN 'charge type ' || charge_type || ' is priced per order, not by the price sheet'
            WHEN 'marketplace' THEN 'third-party charge: not on a Microsoft price sheet'
            WHEN 'no_price_row' THEN 'no ' || _ptype || ' price row for this meter, term and date'
            WHEN 'ambiguous' THEN CAST(_prices AS VARCHAR) || ' different unit prices at the same tier'
          END AS price_match_reason
        FROM judged
        """
    )
    run_sql("DROP TABLE keyed")
    opts = "FORMAT parquet, COMPRESSION zstd, PARTITION_BY (billing_period, billing_profile), ROW_GROUP_SIZE 131072"
    usage_cols = ", ".join(["billing_period", "billing_profile"] + [q(c[0]) for c in cols["usage"]] + ["tags_map"])
    run_sql(f"COPY (SELECT {usage_cols} FROM costs) TO '{out}/usage' ({opts})")
    run_sql(f"COPY costs TO '{out}/costs' ({opts})")
    run_sql(f"COPY prices TO '{out}/prices' ({opts})")
    run_sql(
        f"""
        COPY (
          SELECT billing_period, billing_profile, price_match, meter_id, meter_name, billing_currency,
                 CAST(count(*) AS UBIGINT) AS rows, sum(effective_cost) AS effective_cost
          FROM costs GROUP BY ALL ORDER BY ALL
        ) TO '{out}/price_coverage' ({opts})
        """
    )
    rows = run_sql("SELECT count(*) FROM costs").fetchone()[0]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": time.time() - t0, "peak_rss_kb": peak_kb}))


def summary(lake: str):
    con = duckdb.connect()
    costs = con.execute(
        f"""
        SELECT price_match, count(*) AS rows, sum(effective_cost), sum(list_cost), sum(contracted_cost),
               sum(quantity)
        FROM read_parquet('{lake}/costs/**/*.parquet', hive_partitioning = true,
                          hive_types = {{'billing_period': VARCHAR, 'billing_profile': VARCHAR}})
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    usage = con.execute(
        f"""
        SELECT billing_period, billing_profile, count(*), sum(cost_in_billing_currency)
        FROM read_parquet('{lake}/usage/**/*.parquet', hive_partitioning = true,
                          hive_types = {{'billing_period': VARCHAR, 'billing_profile': VARCHAR}})
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    return costs, usage


def close(x, y, tol):
    """Rows equal; every number equal, or within `tol` when one side went through a double."""
    if len(x) != len(y):
        return False, None
    worst = Decimal(0)
    for rx, ry in zip(x, y):
        for vx, vy in zip(rx, ry):
            if isinstance(vx, Decimal) and isinstance(vy, Decimal):
                worst = max(worst, abs(vx - vy))
            elif vx != vy:
                return False, None
    return worst <= tol, worst


def compare(a: str, b: str) -> int:
    sa, sb = summary(a), summary(b)
    ok = True
    for name, x, y in (("costs by price_match", sa[0], sb[0]), ("usage by period, profile", sa[1], sb[1])):
        same, worst = close(x, y, Decimal("1e-6"))
        ok = ok and same
        if x == y:
            verdict = "identical: counts and exact sums"
        elif same:
            verdict = f"same counts; sums within {worst} (DuckDB read some amounts through a double)"
        else:
            verdict = "DIFFERENT"
        print(f"  {name}: {verdict}")
        for row in x:
            print("    A", row)
        if x != y:
            for row in y:
                print("    B", row)
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
