"""Real readers (DuckDB, pyarrow) see the published tables as outputs.md promises."""

import gzip
import json
import os
import pathlib
import re
import subprocess

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import zstandard

from conftest import PII_KEY, ROOT, TOKEN, binary

KPI_TABLES = ["cases_by_agency", "cases_by_level", "catalog_by_level"]
UTC_US = pa.timestamp("us", tz="UTC")
TEXT = (pa.string(), pa.large_string())


def parquet_files(root: pathlib.Path):
    """The published Parquet files: not raw, not motcua's own state (`_state/kpi-cache`)."""
    return sorted(p for p in root.rglob("*.parquet")
                  if not {"raw", "_state"} & set(p.relative_to(root).parts))


def expected_type(column: str, layer: str = "kpi"):
    """The type outputs.md (and agencies.md) demand for a published column of a layer."""
    if column in ("period_start", "period_end", "restated_to", "valid_from", "valid_to") or column.endswith("_date"):
        return pa.date32()
    if column == "transfers":
        return tuple(pa.list_(pa.struct([("from_agency", t), ("to_agency", t), ("transferred_on", pa.date32())]))
                     for t in TEXT) + tuple(
            pa.large_list(pa.struct([("from_agency", t), ("to_agency", t), ("transferred_on", pa.date32())]))
            for t in TEXT)
    if column == "successor_codes":
        return tuple(pa.list_(t) for t in TEXT) + tuple(pa.large_list(t) for t in TEXT)
    if column == "main_successor":
        return TEXT
    if column in ("computed_at", "updated_at") or column.endswith("_at"):
        return UTC_US
    if column.endswith("_rate") or column == "progress_rate_766":
        return pa.float64()
    if column in ("channel", "applicant_kind", "status"):
        return pa.int32()
    if layer == "cases" and column in ("paid_online", "digitized"):
        return pa.bool_()
    if column in ("level", "period_convention", "run_id", "reason", "detail", "raw_path", "record_key",
                  "source_run_id") or column.endswith(("_code", "_name", "_key", "_id", "_text")):
        return TEXT
    return pa.int64()  # every count


def test_only_part0_files_where_readers_look(published):
    for layer in ("kpi", "cases", "quality"):
        files = [p for p in (published / layer).rglob("*") if p.is_file()]
        assert files, layer
        strays = [str(p) for p in files if p.name != "part-0.parquet"]
        assert not strays, strays
    assert not (published / "_staging").exists()


def test_types_are_those_outputs_md_demands(published):
    for f in parquet_files(published):
        schema = pq.read_schema(f)
        assert "period" not in schema.names, f"{f}: the partition column lives in the path only"
        layer = f.relative_to(published).parts[0]
        for field in schema:
            want = expected_type(field.name, layer)
            ok = field.type in want if isinstance(want, tuple) else field.type == want
            assert ok, f"{f}: {field.name} is {field.type}, want {want}"
            assert not pa.types.is_string_view(field.type)
            assert not pa.types.is_unsigned_integer(field.type)


def test_duckdb_reads_every_table_with_hive_partitioning_and_filters(published):
    con = duckdb.connect()
    for table in KPI_TABLES:
        glob = str(published / "kpi" / table / "**" / "*.parquet")
        periods = {r[0] for r in con.execute(
            f"SELECT DISTINCT period FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()}
        assert periods == {"2024-Q2", "2024-Q3"}, periods
        n = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
            f"WHERE period = '2024-Q3' AND level = 'province'").fetchone()[0]
        assert n >= 1, table
        types = {r[0]: r[1] for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()}
        assert types["period_start"] == "DATE" and types["computed_at"] == "TIMESTAMP WITH TIME ZONE", types
        assert types["level"] == "VARCHAR"
        counts = [c for c in types if c != "period" and expected_type(c) == pa.int64()]
        assert counts and all(types[c] == "BIGINT" for c in counts), types
    q3 = con.execute(
        f"SELECT received_new, online_rate FROM read_parquet('{published}/kpi/cases_by_level/**/*.parquet', "
        f"hive_partitioning = true) WHERE period = '2024-Q3' AND level = 'all'").fetchall()
    assert q3 == [(106071, q3[0][1])] and round(q3[0][1] * 100, 2) == 64.89


def test_duckdb_count_equals_the_real_non_null_count_in_every_column(published):
    """Parquet statistics must be right: DuckDB answers count(col) from them."""
    con = duckdb.connect()
    for f in parquet_files(published):
        table = pq.read_table(f)
        for name in table.column_names:
            real = len(table[name]) - table[name].null_count
            got = con.execute(f'SELECT count("{name}") FROM read_parquet(\'{f}\')').fetchone()[0]
            assert got == real, f"{f}: count({name}) = {got}, real {real}"
            nn = con.execute(f'SELECT count(*) FROM read_parquet(\'{f}\') WHERE "{name}" IS NOT NULL').fetchone()[0]
            assert nn == real, f"{f}: {name} IS NOT NULL gives {nn}, real {real}"
        assert_null_count_statistics(f)


def test_pyarrow_reads_with_hive_partitioning_and_filters_strings(published):
    for table in KPI_TABLES:
        dataset = ds.dataset(published / "kpi" / table, format="parquet", partitioning="hive")
        t = dataset.to_table(filter=(ds.field("level") == "district") & (ds.field("period") == "2024-Q3"))
        assert t.num_rows >= 1, table
        assert set(t["level"].to_pylist()) == {"district"}
    cases = ds.dataset(published / "cases", format="parquet", partitioning="hive")
    t = cases.to_table(filter=ds.field("agency_code") == "000.00.01.H57")
    assert t.num_rows > 100
    assert pc.all(pc.equal(t["agency_code"], "000.00.01.H57")).as_py()


def raw_body(path):
    """A raw body as the source sent it: zstd (`.json.zst`), or gzip for earlier runs."""
    data = path.read_bytes()
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompress(data)
    return gzip.decompress(data)


def test_no_personal_data_outside_raw(published):
    """Every name, ID number, phone, email and address the source served is absent outside raw/."""
    names, tokens = set(), set()
    for page in (p for p in (published / "raw").rglob("*.json.*") if p.parent.name == "v1-hoso"):
        for rec in json.loads(raw_body(page)).get("data") or []:
            for k in ("ChuHoSo", "DiaChi", "TrichYeuHoSo", "Email"):
                if rec.get(k):
                    names.add(str(rec[k]).strip())
            for k in ("SoGiayToChuHoSo", "SoDienThoai"):
                if rec.get(k):
                    tokens.add(str(rec[k]).strip())
            for step in rec.get("QuaTrinhXuLy") or []:
                if step.get("NguoiXuLy"):
                    names.add(step["NguoiXuLy"].strip())
    assert len(names) > 1000 and len(tokens) > 1000, "the source served personal data to look for"

    texts = []
    for f in sorted(p for p in published.rglob("*") if p.is_file() and "raw" not in p.relative_to(published).parts):
        if f.suffix == ".parquet":
            t = pq.read_table(f)
            for name in t.column_names:
                if pa.types.is_string(t[name].type) or pa.types.is_large_string(t[name].type):
                    texts.extend(v for v in t[name].to_pylist() if v)
        else:
            texts.append(f.read_text(errors="replace"))
    words = set()
    phrases = set()
    for text in texts:
        parts = re.split(r"[^\w@.]+", text)
        words.update(parts)
        for n in (3, 4, 5):
            for i in range(len(parts) - n + 1):
                phrases.add(" ".join(parts[i:i + n]))
    leaked_tokens = tokens & words
    assert not leaked_tokens, sorted(leaked_tokens)[:5]
    leaked_names = {n for n in names if n in phrases or n in words}
    assert not leaked_names, sorted(leaked_names)[:5]


def readme_duckdb_blocks():
    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    return [b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if b.startswith("-- duckdb")]


def test_the_readme_duckdb_statements_run_and_agencies_roll_up_to_levels_exactly(published):
    blocks = readme_duckdb_blocks()
    assert len(blocks) == 4, "the README's DuckDB blocks"
    con = duckdb.connect()
    for b in blocks[:2]:
        con.execute(b.replace("'data/", f"'{published}/"))
    q3 = con.execute(blocks[1]).fetchall()
    assert len(q3) == 4 and {r[1] for r in q3} == {"province", "district", "commune", "all"}
    assert con.execute(blocks[2]).fetchall() == [], "every level row equals the sum of its agency rows"
    # Every measure, not only those the README lists.
    measures = [c for c, t, *_ in con.execute("DESCRIBE cases_by_level").fetchall()
                if t == "BIGINT"]
    assert len(measures) == 19
    sums = ", ".join(f"sum({m})::BIGINT AS {m}" for m in measures)
    rolled = con.execute(f"""
        SELECT period, level, {sums} FROM cases_by_agency GROUP BY ALL
        UNION ALL SELECT period, 'all', {sums} FROM cases_by_agency GROUP BY ALL""").fetchall()
    levels = con.execute(f"SELECT period, level, {', '.join(measures)} FROM cases_by_level").fetchall()
    rolled = {(r[0], r[1]): r[2:] for r in rolled}
    for row in levels:
        want = rolled.get((row[0], row[1]), tuple([0] * len(measures)))
        assert row[2:] == want, row[:2]


def test_dim_agencies_joins_cases_by_agency_as_the_readme_shows(published):
    blocks = readme_duckdb_blocks()
    con = duckdb.connect()
    con.execute(blocks[0].replace("'data/", f"'{published}/"))
    gone = con.execute(blocks[3].replace("'data/", f"'{published}/")).fetchall()
    # Every district and commune of 2024 ended in 2025; each row names where its cases went.
    assert {r[0] for r in gone} == {"district", "commune", "province"}, {r[0] for r in gone}
    assert all(r[4] for r in gone), "every retired agency has a successor"
    direct = con.execute(f"""
        SELECT sum(received_total) FROM read_parquet('{published}/kpi/cases_by_agency/period=2024-Q3/*.parquet') a
        JOIN read_parquet('{published}/dim/agencies/part-0.parquet') d USING (agency_code)
        WHERE d.valid_to IS NOT NULL""").fetchone()[0]
    assert sum(r[5] for r in gone) == direct
    # Restated to today, the province has two levels, and the same all row.
    restated = con.execute(f"""
        SELECT level, received_total FROM read_parquet('{published}/kpi/cases_by_level_restated/**/*.parquet',
        hive_partitioning = true) WHERE period = '2024-Q3' ORDER BY level""").fetchall()
    as_was = dict(con.execute(f"""
        SELECT level, received_total FROM read_parquet('{published}/kpi/cases_by_level/**/*.parquet',
        hive_partitioning = true) WHERE period = '2024-Q3'""").fetchall())
    assert [r[0] for r in restated] == ["all", "commune", "province"]
    assert dict(restated)["all"] == as_was["all"]
    # Districts' cases go to the ward of their seat, merged departments' to departments.
    assert dict(restated)["commune"] == as_was["district"] + as_was["commune"]
    assert dict(restated)["province"] == as_was["province"]


@pytest.fixture(scope="module")
def one_big_partition(tmp_path_factory):
    """A staging partition of 150,000 cases (ten row groups, a column chunk of more than a
    megabyte — each case's agency name text is its own, about 100 bytes —, nulls in many
    columns), written by motcua from a raw layer of one run: large enough that a page size left
    at the default (1 MiB) would split a chunk into several pages."""
    root = tmp_path_factory.mktemp("big")
    run = root / "raw" / "run_id=20240915T000000000Z-b1b1"
    for d in ("v1-donvi", "v1-tthc", "v1-hoso"):
        (run / d).mkdir(parents=True)
    env_of = lambda data: gzip.compress(json.dumps({"error_code": "0", "message": "", "data": data}).encode())
    (run / "v1-donvi" / "000000.json.gz").write_bytes(env_of(
        [{"MaDonVi": f"000.00.{i:02}.H57", "TenDonVi": f"Sở {i}", "Cap": "1"} for i in range(1, 9)]))
    (run / "v1-tthc" / "000001.json.gz").write_bytes(env_of(
        [{"MaTTHC": "1.000001", "TenTTHC": "Cấp phép", "MaLinhVuc": "HT", "TenLinhVuc": "Hộ tịch", "Cap": "1"}]))
    page = []
    for i in range(150_000):
        ended = i % 3 == 0
        rec = {"MaHoSo": f"000.00.01.H57-240701-{i:07}", "MaDonVi": f"000.00.{1 + i % 8:02}.H57",
               "TrangThaiHoSo": "9" if ended else "4", "NgayTiepNhan": "20240701080000",
               "NgayCapNhat": f"202407{2 + i % 9:02}09{i % 60:02}00",
               "DonViXuLy": f"Bộ phận tiếp nhận và trả kết quả số {i:07} của Ủy ban nhân dân phường thử nghiệm"}
        if ended:
            rec["NgayKetThucXuLy"] = "20240720100000"
        if i % 5:
            rec["MaLinhVuc"], rec["TenLinhVuc"], rec["KenhThucHien"] = "HT", "Hộ tịch", str(1 + i % 2)
        if i % 7 == 0:
            rec["NgayHenTra"] = "20240725170000"
        page.append(rec)
        if len(page) == 1000:
            n = i // 1000
            (run / "v1-hoso" / f"{n + 2:06}_page={n + 1}.json.gz").write_bytes(env_of(page))
            page = []
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY)
    r = subprocess.run([binary(), "replay", "--all", "--period", "2024-Q3", "--output", str(root),
                        "--pipeline", str(ROOT / "pipelines" / "demo.toml")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return root / "cases" / "case_month=2024-07" / "bucket=0" / "part-0.parquet"


def test_duckdb_count_is_right_on_a_partition_large_enough_to_matter(one_big_partition):
    """With several row groups and megabyte column chunks, DuckDB's count(col) (answered from the
    null_count statistics) still equals the real non-null count of every column."""
    meta = pq.ParquetFile(one_big_partition).metadata
    assert meta.num_rows == 150_000 and meta.num_row_groups >= 2, meta
    biggest = max(meta.row_group(0).column(c).total_uncompressed_size for c in range(meta.num_columns))
    assert biggest > 1 << 20, f"a column chunk of {biggest} bytes: not large enough to matter"
    table = pq.read_table(one_big_partition)
    con = duckdb.connect()
    nulls = 0
    for name in table.column_names:
        real = len(table[name]) - table[name].null_count
        nulls += table[name].null_count > 0
        got = con.execute(f'SELECT count("{name}") FROM read_parquet(\'{one_big_partition}\')').fetchone()[0]
        assert got == real, f"count({name}) = {got}, real {real}"
    assert nulls >= 5, "columns with nulls, for the statistics to be tested"
    assert_null_count_statistics(one_big_partition)


def assert_null_count_statistics(path):
    """Every column chunk's null_count statistic equals the nulls it holds (polars 0.55 writes
    it wrong, several times too large, when a dictionary column chunk has several pages)."""
    f = pq.ParquetFile(path)
    for g in range(f.metadata.num_row_groups):
        rows = f.read_row_group(g)
        leaves = {}
        for name in rows.column_names:
            col = rows[name].combine_chunks()
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                continue  # nested leaves count list slots, not rows
            leaves[name] = col.null_count
        rg = f.metadata.row_group(g)
        for c in range(rg.num_columns):
            chunk = rg.column(c)
            if chunk.path_in_schema in leaves and chunk.statistics is not None and chunk.statistics.has_null_count:
                assert chunk.statistics.null_count == leaves[chunk.path_in_schema], (
                    f"{path} row group {g} {chunk.path_in_schema}: null_count statistic "
                    f"{chunk.statistics.null_count}, real {leaves[chunk.path_in_schema]}")
