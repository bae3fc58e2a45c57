"""`make bench`: motcua's stages on demo provinces of several sizes, side by side with DuckDB.

For each size (the demo generator's --scale; 1 is about 163 thousand records) it starts the
demo source (quiet), then measures with the release binary, each stage in its own process:

  pull        `run --period 2024-Q3` on an empty root: pull over loopback (parse and normalise
              included, page by page), stage, one quarter;
  raw→staging `replay --all --period 2024-Q3`: the raw layer parsed, normalised, rejected,
              deduplicated and staged again, without the source;
  1 quarter   `run --period 2024-Q3` again: an incremental pull (the lookback only), then
              staging → KPIs for one quarter;
  12 quarters `backfill --from 2022-Q1 --to 2024-Q4`: staging → KPIs for 12 quarters;

each with its records per second and peak resident memory (GNU time), taken from the run
record's stage timings. DuckDB then computes the same cases_by_level of 2024-Q3 from the same
staging Parquet with SQL; the figures must be equal, and the table gives motcua / DuckDB.
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


def bench(size, binary, work, log):
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN="bench-token", MOTCUA_PII_KEY="bench-pii-key-0123456789")
    ready = work / f"url-{size}"
    src = subprocess.Popen([binary, "demo-source", "--port", "0", "--chaos", "off", "--scale", str(size),
                            "--ready-file", str(ready)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready.exists():
            if src.poll() is not None:
                sys.exit("the demo source stopped")
            time.sleep(0.2)
        url = ready.read_text()
        out = work / f"out-{size}"
        pipeline = work / "pipeline.toml"
        pipeline.write_text('name = "bench"\nconcurrency = 4\n[source]\npage_size = 1000\n')
        common = ["--source-url", url, "--output", str(out), "--pipeline", str(pipeline)]
        row = {"size": size}
        secs, rss = sh([binary, "run", "--period", "2024-Q3", *common], env, log)
        rec = last_record(out)
        n = rec["counts"]["records_pulled"]
        row.update(records=n, cases=rec["counts"]["cases_in_staging"], pull_s=rec["timings_secs"]["pull"],
                   pull_rss=rss, run_s=secs)
        secs, rss = sh([binary, "replay", "--all", "--period", "2024-Q3", *common], env, log)
        rec = last_record(out)
        t = rec["timings_secs"]
        row.update(staging_s=t["replay_raw"] + t["stage"], staging_rss=rss)
        secs, rss = sh([binary, "run", "--period", "2024-Q3", *common], env, log)
        t = last_record(out)["timings_secs"]
        row.update(q1_s=t["load_staging"] + t["compute"], q1_rss=rss)
        secs, rss = sh([binary, "backfill", "--from", "2022-Q1", "--to", "2024-Q4", *common], env, log)
        t = last_record(out)["timings_secs"]
        row.update(q12_s=t["load_staging"] + t["compute"] + t["publish"], q12_rss=rss)
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
        return row
    finally:
        src.kill()
        src.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sizes", default="1,6")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-bench-"))
    rows = []
    with open(work / "bench.log", "w") as log:
        for s in args.sizes.split(","):
            rows.append(bench(float(s), args.bin, work, log))
            print(f"size {s}: done", file=sys.stderr)
    head = ("| records | cases | pull rec/s (RSS MiB) | raw→staging rec/s (RSS MiB) | 1 quarter s (RSS MiB) "
            "| 12 quarters s (RSS MiB) | DuckDB 1 quarter s | motcua / DuckDB | raw MB | cases MB | kpi KB |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['records']:,} | {r['cases']:,} | {r['records'] / r['pull_s']:,.0f} ({r['pull_rss']:.0f}) "
            f"| {r['records'] / r['staging_s']:,.0f} ({r['staging_rss']:.0f}) | {r['q1_s']:.2f} ({r['q1_rss']:.0f}) "
            f"| {r['q12_s']:.2f} ({r['q12_rss']:.0f}) | {r['duckdb_s']:.2f} | {r['q1_s'] / r['duckdb_s']:.2f} "
            f"| {r['raw_mb']:.0f} | {r['cases_mb']:.0f} | {r['kpi_kb']:.0f} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, Python DuckDB {duckdb.__version__}"
    text = "\n".join(lines)
    print(f"\n{machine}\n{text}")
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
