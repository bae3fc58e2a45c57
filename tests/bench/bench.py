"""`make bench`: motcua's stages on demo provinces of several sizes, side by side with DuckDB.

For each size (the demo generator's --scale; 1 is about 163 thousand records, 6 about a
million, 61 about ten million) it measures with the release binary, each stage in its own
process, records per second from the run records' stage timings and peak resident memory
from GNU time:

  pull            `run --period 2024-Q3` on an empty root against the demo source (quiet) on
                  127.0.0.1: pull over loopback, landing, normalising; sizes up to --pull-max
                  only (a demo source holds its province in memory). Larger provinces are
                  written straight into raw/ by `demo-source --write-raw` (not measured);
  raw→staging     `replay --all` with the 12 quarters 2022-Q1 … 2024-Q4: the raw layer read
                  back, parsed, normalised, rejected, deduplicated and staged; the same
                  process's wall time and peak memory are the end-to-end figure
                  raw → staging → KPIs for 12 quarters;
  1 quarter       `run --from-staging --period 2024-Q3`: staging → KPIs for one quarter;
  12 quarters     `backfill --from-staging --from 2022-Q1 --to 2024-Q4`: staging → KPIs,
                  published, for 12 quarters.

DuckDB then computes the same cases_by_level of 2024-Q3 from the same staging Parquet with SQL
(best of three); the figures must be equal, and the table gives motcua / DuckDB.
"""

import argparse
import gzip
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb

MEASURES = """
  count_if(received_new AND coalesce(channel = 2, false))            AS received_online,
  count_if(received_new AND NOT coalesce(channel = 2, false))        AS received_offline,
  count_if(received_new)                                             AS received_new,
  count_if(accepted AND accepted_date < F AND NOT (ended AND coalesce(end_date < F, false))) AS carried_over,
  count_if(status IN (7, 9, 10) AND end_date BETWEEN F AND L)        AS resolved_total,
  count_if(resolved AND coalesce(end_date < due_date, false))        AS resolved_early,
  count_if(resolved AND (due_date IS NULL OR end_date = due_date))   AS resolved_on_time,
  count_if(resolved AND coalesce(end_date > due_date, false))        AS resolved_overdue,
  count_if(resolved AND coalesce(end_date > due_date, false) AND supplement_requests > 0) AS resolved_overdue_excused,
  count_if(status = 7 AND end_date BETWEEN F AND L)                  AS resolved_withdrawn,
  count_if(status = 8 AND end_date BETWEEN F AND L)                  AS stopped,
  count_if(in_progress)                                              AS in_progress_total,
  count_if(in_progress AND (due_date IS NULL OR due_date >= L))      AS in_progress_within,
  count_if(in_progress AND coalesce(due_date < L, false))            AS in_progress_overdue,
  count_if(coalesce(submitted_date <= L, false) AND NOT coalesce(accepted_date <= L, false)
           AND NOT coalesce(refused_date <= L, false))               AS waiting_acceptance,
  count_if(status = 3 AND refused_date BETWEEN F AND L)              AS refused,
  count_if(received_new AND coalesce(paid_online, false))            AS paid_online,
  count_if(received_new AND coalesce(digitized, false))              AS digitized
"""

SQL = """
WITH c AS (
  SELECT s.*, coalesce(a.level, 'unknown') AS level,
         status NOT IN (1, 3) AS accepted,
         status IN (7, 8, 9, 10) AS ended,
         (status NOT IN (1, 3) AND accepted_date BETWEEN F AND L) AS received_new,
         (status IN (9, 10) AND end_date BETWEEN F AND L) AS resolved,
         (status NOT IN (1, 3) AND accepted_date <= L
          AND NOT (status IN (7, 8, 9, 10) AND coalesce(end_date <= L, false))) AS in_progress
  FROM read_parquet('{cases}') s LEFT JOIN agencies a USING (agency_code))
SELECT level, {measures} FROM c GROUP BY level
UNION ALL
SELECT 'all', {measures} FROM c
"""


def sh(cmd, env, log):
    """Runs cmd under GNU time; returns (seconds, peak RSS in MiB)."""
    started = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
    secs = time.time() - started
    log.write(r.stderr)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rss_kib = int(r.stderr.strip().splitlines()[-1])
    return secs, rss_kib / 1024


def last_record(out):
    runs = sorted((out / "_runs").glob("*.json"))
    return json.loads(runs[-1].read_text())


def du(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def agencies_from_raw(out):
    """agency_code → level from the first /v1/donvi response in raw/."""
    page = next(p for p in sorted((out / "raw").rglob("*.json.gz")) if p.parent.name == "v1-donvi")
    rows = []
    for a in json.loads(gzip.decompress(page.read_bytes()))["data"]:
        cap = str(a.get("Cap")).strip()
        rows.append((str(a["MaDonVi"]).strip(), {"1": "province", "2": "district", "3": "commune"}.get(cap, "unknown")))
    return rows


def duckdb_level_table(out):
    con = duckdb.connect()
    con.execute("CREATE TABLE agencies (agency_code VARCHAR, level VARCHAR)")
    con.executemany("INSERT INTO agencies VALUES (?, ?)", agencies_from_raw(out))
    measures = MEASURES.replace(" F", " DATE '2024-06-15'").replace(" L", " DATE '2024-09-14'")
    sql = SQL.format(cases=f"{out}/cases/**/*.parquet", measures=measures)
    sql = re.sub(r"\bF\b", "DATE '2024-06-15'", sql)
    sql = re.sub(r"\bL\b", "DATE '2024-09-14'", sql)
    best = None
    for _ in range(3):  # best of three, as for a warm cache
        started = time.time()
        rows = con.execute(sql).fetchall()
        secs = time.time() - started
        best = secs if best is None else min(best, secs)
    cols = [d[0] for d in con.description]
    return {r[0]: dict(zip(cols, r)) for r in rows}, best


QUARTERS = [f"{y}-Q{q}" for y in (2022, 2023, 2024) for q in (1, 2, 3, 4)]


def bench(size, binary, work, log, pull_max):
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN="bench-token", MOTCUA_PII_KEY="bench-pii-key-0123456789")
    out = work / f"out-{size}"
    pipeline = work / "pipeline.toml"
    pipeline.write_text('name = "bench"\nconcurrency = 4\n[source]\npage_size = 1000\n')
    common = ["--output", str(out), "--pipeline", str(pipeline)]
    row = {"size": size}
    if size <= pull_max:
        ready = work / f"url-{size}"
        src = subprocess.Popen([binary, "demo-source", "--port", "0", "--chaos", "off", "--scale", str(size),
                                "--ready-file", str(ready)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            while not ready.exists():
                if src.poll() is not None:
                    sys.exit("the demo source stopped")
                time.sleep(0.2)
            secs, rss = sh([binary, "run", "--period", "2024-Q3", "--source-url", ready.read_text(), *common], env, log)
        finally:
            src.kill()
            src.wait()
        rec = last_record(out)
        row.update(pull_s=rec["timings_secs"]["pull"], pull_rss=rss)
    else:
        started = time.time()
        sh([binary, "demo-source", "--scale", str(size), "--write-raw", str(out)], env, log)
        row.update(pull_s=None, generated_s=time.time() - started)
    periods = [a for q in QUARTERS for a in ("--period", q)]
    secs, rss = sh([binary, "replay", "--all", *periods, *common], env, log)
    rec = last_record(out)
    t = rec["timings_secs"]
    row.update(records=rec["counts"]["records_pulled"], cases=rec["counts"]["cases_in_staging"],
               staging_s=t["replay_raw"] + t["stage"], staging_rss=rss, e2e_s=secs, e2e_rss=rss)
    secs, rss = sh([binary, "run", "--from-staging", "--period", "2024-Q3", *common], env, log)
    row.update(q1_s=last_record(out)["timings_secs"]["compute"], q1_rss=rss)
    secs, rss = sh([binary, "backfill", "--from-staging", "--from", "2022-Q1", "--to", "2024-Q4", *common], env, log)
    t = last_record(out)["timings_secs"]
    row.update(q12_s=t["compute"] + t["publish"], q12_rss=rss)
    mine = {r["level"]: r for r in __import__("pyarrow.parquet", fromlist=["x"]).read_table(
        out / "kpi/cases_by_level/period=2024-Q3/part-0.parquet").to_pylist()}
    theirs, duck_s = duckdb_level_table(out)
    counts = [c for c in theirs["all"] if c != "level"]
    for level, r in theirs.items():
        if all(v == 0 for k, v in r.items() if k != "level") and level not in mine:
            continue
        for c in counts:
            if mine[level][c] != r[c]:
                sys.exit(f"DuckDB and motcua differ at size {size}: {level} {c}: {mine[level][c]} vs {r[c]}")
    row.update(duckdb_s=duck_s, equal=True, raw_mb=du(out / "raw") / 2**20, cases_mb=du(out / "cases") / 2**20,
               kpi_kb=du(out / "kpi") / 1024)
    shutil.rmtree(out, ignore_errors=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sizes", default="1,6,61")
    ap.add_argument("--pull-max", type=float, default=10, help="largest size pulled from a demo source")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-bench-"))
    rows = []
    with open(work / "bench.log", "w") as log:
        for s in args.sizes.split(","):
            rows.append(bench(float(s), args.bin, work, log, args.pull_max))
            print(f"size {s}: done", file=sys.stderr)
    head = ("| records | cases | pull rec/s (RSS MiB) | raw→staging rec/s | raw→staging→KPIs 12 quarters s (RSS MiB) "
            "| 1 quarter s (RSS MiB) | 12 quarters s (RSS MiB) | DuckDB 1 quarter s | motcua / DuckDB "
            "| raw MB | cases MB | kpi KB |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        pull = (f"{r['records'] / r['pull_s']:,.0f} ({r['pull_rss']:.0f})" if r["pull_s"]
                else f"— (written to raw in {r['generated_s']:.0f} s)")
        lines.append(
            f"| {r['records']:,} | {r['cases']:,} | {pull} | {r['records'] / r['staging_s']:,.0f} "
            f"| {r['e2e_s']:.1f} ({r['e2e_rss']:.0f}) | {r['q1_s']:.3f} ({r['q1_rss']:.0f}) "
            f"| {r['q12_s']:.2f} ({r['q12_rss']:.0f}) | {r['duckdb_s']:.3f} | {r['q1_s'] / r['duckdb_s']:.2f} "
            f"| {r['raw_mb']:.0f} | {r['cases_mb']:.0f} | {r['kpi_kb']:.0f} |")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
               f"Python DuckDB {duckdb.__version__}")
    text = "\n".join(lines)
    print(f"\n{machine}\n{text}\n")
    # The targets of issue 5, each met or not.
    for r in rows:
        ratio = r["q1_s"] / r["duckdb_s"]
        print(f"{r['records']:>12,} records: staging → KPIs 1 quarter / DuckDB = {ratio:.2f} "
              f"({'met' if ratio <= 1.0 else 'NOT met'}: ≤ 1.0)")
        if r["pull_s"]:
            rate = r["records"] / r["pull_s"]
            print(f"{r['records']:>12,} records: pull {rate:,.0f} records/s ({'met' if rate >= 100_000 else 'NOT met'}: ≥ 100,000)")
        if r["records"] >= 9_000_000:
            ok = r["e2e_s"] < 120 and r["e2e_rss"] < 4096
            print(f"{r['records']:>12,} records: raw → staging → KPIs 12 quarters {r['e2e_s']:.0f} s, "
                  f"{r['e2e_rss']:,.0f} MiB ({'met' if ok else 'NOT met'}: < 120 s, < 4,096 MiB)")
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
