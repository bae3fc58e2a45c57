"""Three provinces in one root, read as one table by DuckDB, pyarrow and Spark; the SQL of
`motcua sql` run by DuckDB and Spark over the three staging tables gives every figure of
motcua's own tables; the Trino statement parses as Trino (sqlglot).

Three demo provinces (different seeds, sizes and agency codes) are written by three motcua
jobs (`run --province`) into one root (`schemas/root-layout.md`)."""

import math
import os
import pathlib
import re
import subprocess
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import PII_KEY, TOKEN, binary, demo_source

# code -> (seed, scale, agency code letters)
PROVINCES = {"01": (101, 0.03, "H01"), "46": (146, 0.05, "H46"), "79": (179, 0.04, "H79")}
PERIODS = ["2024-Q3", "2024-07", "2025-Q3", "2024"]  # a year: Spark would infer 2024 as an int
KPI_TABLES = ["cases_by_agency", "cases_by_level", "cases_by_agency_restated",
              "cases_by_level_restated", "catalog_by_level"]
COUNTS = ["received_online", "received_offline", "received_new", "carried_over", "received_total",
          "resolved_total", "resolved_early", "resolved_on_time", "resolved_overdue",
          "resolved_overdue_excused", "resolved_withdrawn", "stopped", "in_progress_total",
          "in_progress_within", "in_progress_overdue", "waiting_acceptance", "refused",
          "paid_online", "digitized"]
RATES = ["online_rate", "on_time_rate", "progress_rate_766"]
KEYS = {"cases_by_agency": ["province", "level", "agency_code", "field_code"],
        "cases_by_level": ["province", "level"]}
HIVE = ds.partitioning(pa.schema([("province", pa.string()), ("period", pa.string())]), flavor="hive")


@pytest.fixture(scope="module")
def root():
    scratch = tempfile.TemporaryDirectory(prefix="motcua-provinces-")
    root = pathlib.Path(scratch.name) / "root"
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY)
    for code, (seed, scale, letters) in PROVINCES.items():
        with demo_source("--chaos", "off", "--seed", str(seed), "--scale", str(scale),
                         "--agency-code", letters) as url:
            periods = [a for p in PERIODS for a in ("--period", p)]
            run = subprocess.run([binary(), "run", "--province", code, "--source-url", url,
                                  "--output", str(root), *periods],
                                 env=env, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
    yield root
    scratch.cleanup()


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession
    s = (SparkSession.builder.master("local[2]").appName("motcua-tests")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def motcua_rows(root, table, period):
    """motcua's published rows of `table` for `period`, every province: {keys: figures}."""
    t = ds.dataset(root / "kpi" / table, format="parquet", partitioning=HIVE).to_table(
        filter=ds.field("period") == period)
    return figures_by_key(t.to_pylist(), KEYS[table])


def figures_by_key(rows, keys):
    out = {}
    for r in rows:
        counts = [int(r[c]) for c in COUNTS]
        if any(counts):  # motcua publishes rows with at least one non-zero measure
            out[tuple(r[k] for k in keys)] = counts + [r[c] for c in RATES]
    return out


def assert_same(got, want, what):
    assert got.keys() == want.keys(), f"{what}: rows differ: {sorted(got.keys() ^ want.keys())[:5]}"
    for k, w in want.items():
        g = got[k]
        assert g[:len(COUNTS)] == w[:len(COUNTS)], f"{what} {k}: {g} != {w}"
        for a, b in zip(g[len(COUNTS):], w[len(COUNTS):]):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-12), f"{what} {k}: {a} != {b}"


def motcua_sql(root, engine, period, *extra):
    out = subprocess.run([binary(), "sql", "--engine", engine, "--period", period,
                          "--output", str(root), *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def statements(script):
    """(table, statement) of a `motcua sql` script, and its other statements (SET …)."""
    named, other = [], []
    for chunk in re.split(r";\n", script):
        lines = [l for l in chunk.splitlines() if l.strip()]
        body = "\n".join(l for l in lines if not l.startswith("--"))
        if not body:
            continue
        table = next((l[3:].strip() for l in lines if l.startswith("-- cases_by_")), None)
        (named if table else other).append((table, body))
    return named, other


def test_every_kpi_table_of_every_province_reads_as_one_table_in_duckdb_and_pyarrow(root):
    for table in KPI_TABLES:
        glob = f"{root}/kpi/{table}/*/*/*.parquet"
        con = duckdb.connect()
        read = f"read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false)"
        types = {r[0]: r[1] for r in con.sql(f"DESCRIBE SELECT * FROM {read}").fetchall()}
        assert types["province"] == "VARCHAR" and types["period"] == "VARCHAR", table
        duck = con.sql(f"SELECT province, period, count(*) FROM {read} GROUP BY ALL").fetchall()
        arrow = ds.dataset(root / "kpi" / table, format="parquet", partitioning=HIVE).to_table()
        assert arrow.schema.field("province").type == pa.string()
        per_file = {}
        for code in PROVINCES:
            for period in PERIODS:
                f = root / "kpi" / table / f"province={code}" / f"period={period}" / "part-0.parquet"
                per_file[(code, period)] = pq.read_table(f).num_rows if f.exists() else None
        assert {(p, q): n for p, q, n in duck} == per_file, table
        assert arrow.num_rows == sum(per_file.values())
        assert set(arrow.column("province").to_pylist()) == set(PROVINCES)
        assert set(arrow.column("period").to_pylist()) == set(PERIODS)


def test_spark_reads_every_kpi_table_with_partitions_as_strings_and_rolls_up(root, spark):
    from pyspark.sql import functions as F
    for table in KPI_TABLES:
        df = spark.read.parquet(str(root / "kpi" / table))
        types = dict(df.dtypes)
        assert types["province"] == "string" and types["period"] == "string", (table, types)
        values = {(r.province, r.period) for r in df.select("province", "period").distinct().collect()}
        assert values == {(p, q) for p in PROVINCES for q in PERIODS}, table  # "01" stays "01"
        assert df.count() == ds.dataset(root / "kpi" / table, format="parquet", partitioning=HIVE).count_rows()
    # The national roll-up: per level, the sum of the three provinces' figures.
    level = spark.read.parquet(str(root / "kpi" / "cases_by_level"))
    for period in PERIODS:
        national = {r["level"]: [r[c] for c in COUNTS] for r in
                    level.where(F.col("period") == period).groupBy("level")
                    .agg(*[F.sum(c).alias(c) for c in COUNTS]).collect()}
        want = {}
        for code in PROVINCES:
            f = root / "kpi/cases_by_level" / f"province={code}" / f"period={period}" / "part-0.parquet"
            for r in pq.read_table(f).to_pylist():
                sums = want.setdefault(r["level"], [0] * len(COUNTS))
                for i, c in enumerate(COUNTS):
                    sums[i] += r[c]
        assert national == want, period
        assert national["all"][COUNTS.index("received_total")] > 0


@pytest.mark.parametrize("period", PERIODS)
def test_motcua_sql_on_duckdb_gives_every_figure_of_motcuas_tables(root, period):
    named, other = statements(motcua_sql(root, "duckdb", period))
    assert [t for t, _ in named] == ["cases_by_agency", "cases_by_level"] and not other
    con = duckdb.connect()
    for table, sql in named:
        res = con.sql(sql)
        rows = [dict(zip(res.columns, r)) for r in res.fetchall()]
        assert_same(figures_by_key(rows, KEYS[table]), motcua_rows(root, table, period), f"duckdb {table} {period}")


@pytest.mark.parametrize("period", PERIODS)
def test_motcua_sql_on_spark_gives_every_figure_of_motcuas_tables(root, spark, period):
    named, other = statements(motcua_sql(root, "spark", period))
    assert [t for t, _ in named] == ["cases_by_agency", "cases_by_level"]
    for _, sql in other:
        spark.sql(sql)
    for table, sql in named:
        rows = [r.asDict() for r in spark.sql(sql).collect()]
        assert_same(figures_by_key(rows, KEYS[table]), motcua_rows(root, table, period), f"spark {table} {period}")


def test_the_trino_statements_parse_as_trino(root):
    import sqlglot
    from sqlglot.errors import ErrorLevel
    script = motcua_sql(root, "trino", "2024-Q3", "--trino-schema", "hive.motcua", "--convention", "calendar")
    assert "DATE '2024-07-01'" in script and "DATE '2024-09-30'" in script
    named, other = statements(script)
    assert [t for t, _ in named] == ["cases_by_agency", "cases_by_level"] and not other
    for table, sql in named:
        tree = sqlglot.parse_one(sql, read="trino", error_level=ErrorLevel.RAISE)
        tables = {t.sql(dialect="trino") for t in tree.find_all(sqlglot.exp.Table)}
        assert {"hive.motcua.cases", "hive.motcua.agencies"} <= tables, tables
        selected = [e.alias_or_name for e in tree.selects]
        assert selected[-len(COUNTS) - len(RATES):] == COUNTS + RATES, table


def test_the_readme_national_rollup_runs_on_spark(root, spark):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```sql\n(.*?)```", readme, re.S) if b.startswith("-- Spark")]
    rows = spark.sql(block.replace("s3a://motcua-national/prod", str(root)).strip().rstrip(";")).collect()
    got = {r["level"]: (r["received_new"], r["online_rate"]) for r in rows}
    want = {}
    for code in PROVINCES:
        f = root / "kpi/cases_by_level" / f"province={code}" / "period=2024-Q3" / "part-0.parquet"
        for r in pq.read_table(f).to_pylist():
            n = want.setdefault(r["level"], [0, 0])
            n[0] += r["received_new"]
            n[1] += r["received_online"]
    assert got.keys() == want.keys()
    for level, (new, online) in want.items():
        assert got[level][0] == new
        assert (got[level][1] is None and new == 0) or math.isclose(got[level][1], online / new), level
