"""`make bench`: what a province pays, at one and ten million records, each step its own process.

For each size (records of the demo province; `--sizes 1000000,10000000`), with the release binary:

  draw        `demo-source --chaos off --scale N` drawing its province to disk (time to ready);
  pull        `run` (as cron's first night) on an empty root against it over loopback: records pulled
              per second of the pull stage (landing raw, normalising), the whole run's wall time
              and peak memory, and the demo source's peak memory at the end;
  nightly     `POST /demo/night?changes=20000` (recent cases progress, new cases arrive), then
              `run` as cron runs it (the current quarter and the previous one): wall time, peak
              memory, records pulled, staging bytes rewritten of staging's bytes; then a second
              night with 20 corrections of old cases too, for what those cost;
  KPI         `run --from-staging --period 2024-Q3` (staging → the three tables, identities,
              published, report), cold (`_state/kpi-cache` removed: every partition counted) and
              then with the counts of unchanged partitions cached, beside the DuckDB command line (`duckdb`, from `duckdb-cli`)
              computing the same `cases_by_level` and `cases_by_agency` of 2024-Q3 from the
              same staging Parquet in one SQL statement (counts under each case's agency on its
              attribution date, as `agencies.md` says): whole processes, best of three each,
              alternating; every figure of both tables must be equal or the bench stops;
  replay      `replay --all --period 2024-Q3`: raw → staging rebuilt (records per second of
              reading raw and staging), wall time and peak memory of the whole process.

Peak memory is GNU time's maximum resident set size. Targets (issue 12) are printed met or not.
"""

import argparse
import csv
import io
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pyarrow.parquet as pq

RECORDS_PER_SCALE = 240_802  # records of the demo province at --scale 1

COUNTS = [
    "received_online", "received_offline", "received_new", "carried_over", "received_total",
    "resolved_total", "resolved_early", "resolved_on_time", "resolved_overdue",
    "resolved_overdue_excused", "resolved_withdrawn", "stopped", "in_progress_total",
    "in_progress_within", "in_progress_overdue", "waiting_acceptance", "refused", "paid_online",
    "digitized",
]

MEASURES = """
  count_if(received_new AND online)                                  AS received_online,
  count_if(received_new AND NOT online)                              AS received_offline,
  count_if(received_new)                                             AS received_new,
  count_if(carried)                                                  AS carried_over,
  count_if(received_new OR carried)                                  AS received_total,
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

# Both tables in one statement: agency × field rows, then per level and for all.
SQL = """
WITH s AS (
  SELECT *, CASE WHEN status IN (7, 8, 9, 10) AND end_date <= L THEN end_date ELSE L END AS attributed_on
  FROM read_parquet('{cases}')),
c AS (
  SELECT s.*,
    coalesce(list_sort(list_transform(list_filter(transfers, lambda x: x.transferred_on > attributed_on),
                                      lambda x: struct_pack(d := x.transferred_on, a := x.from_agency)))[1].a,
             agency_code) AS agency,
    coalesce(channel = 2, false) AS online,
    status NOT IN (1, 3) AND accepted_date BETWEEN F AND L AS received_new,
    status NOT IN (1, 3) AND accepted_date < F AND NOT (status IN (7, 8, 9, 10) AND coalesce(end_date < F, false)) AS carried,
    status IN (9, 10) AND end_date BETWEEN F AND L AS resolved,
    status NOT IN (1, 3) AND accepted_date <= L AND NOT (status IN (7, 8, 9, 10) AND coalesce(end_date <= L, false)) AS in_progress
  FROM s),
j AS (SELECT c.*, coalesce(d.level, 'unknown') AS level
      FROM c LEFT JOIN read_parquet('{dim}') d ON d.agency_code = c.agency)
SELECT CASE WHEN grouping(level) = 1 THEN 'all' ELSE level END AS level,
       agency, field_code, grouping(agency) AS per_level, {measures}
FROM j GROUP BY GROUPING SETS ((level, agency, field_code), (level), ())
"""


def duckdb_sql(out):
    sql = SQL.format(cases=f"{out}/cases/**/*.parquet", dim=f"{out}/dim/agencies/part-0.parquet",
                     measures=MEASURES)
    sql = re.sub(r"\bF\b", "DATE '2024-06-15'", sql)
    return re.sub(r"\bL\b", "DATE '2024-09-14'", sql)


def timed(cmd, env, log, **kw):
    """Runs cmd under GNU time; returns (wall seconds, peak RSS MiB, stdout)."""
    started = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True, **kw)
    secs = time.time() - started
    log.write(f"$ {' '.join(cmd)[:300]}\n{r.stderr[-4000:]}\n")
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)[:300]} failed:\n{r.stderr[-3000:]}")
    return secs, int(r.stderr.strip().splitlines()[-1]) / 1024, r.stdout


def peak_rss(pid):
    """A live process's peak resident memory so far (VmHWM), MiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def last_record(out):
    runs = sorted((out / "_runs").glob("*.json"))
    return json.loads(runs[-1].read_text())


def post(url, token):
    req = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def mine(out):
    """motcua's two tables of 2024-Q3: {(level, agency, field): counts} and {level: counts}."""
    agency = {}
    for r in pq.read_table(out / "kpi/cases_by_agency/period=2024-Q3/part-0.parquet").to_pylist():
        if any(r[c] for c in COUNTS):
            agency[(r["level"], r["agency_code"], r["field_code"])] = [r[c] for c in COUNTS]
    level = {r["level"]: [r[c] for c in COUNTS]
             for r in pq.read_table(out / "kpi/cases_by_level/period=2024-Q3/part-0.parquet").to_pylist()
             if any(r[c] for c in COUNTS)}
    return agency, level


def theirs(csv_text):
    agency, level = {}, {}
    for r in csv.DictReader(io.StringIO(csv_text)):
        counts = [int(r[c]) for c in COUNTS]
        if not any(counts):
            continue
        if r["per_level"] == "1":
            level[r["level"]] = counts
        else:
            agency[(r["level"], r["agency"], r["field_code"] or None)] = counts
    return agency, level


def night_run(binary, url, token, env, common, log, out, corrections):
    night = post(f"{url}demo/night?changes=20000&corrections={corrections}", token)
    secs, rss, _ = timed([binary, "run", "--source-url", url, *common], env, log)
    rec = last_record(out)
    c = rec["counts"]
    return dict(night=night, secs=secs, rss=rss, pulled=c["records_pulled"],
                written=c["staging_bytes_written"], staging=c["staging_bytes"],
                partitions=c["staging_partitions_written"], of=c["staging_partitions"],
                timings=rec["timings_secs"])


def bench(records, binary, duckdb_bin, work, log):
    token = "bench-token"
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=token, MOTCUA_PII_KEY="bench-pii-key-0123456789",
               TMPDIR=str(work))
    out = work / f"out-{records}"
    pipeline = work / "pipeline.toml"
    pipeline.write_text('name = "bench"\nconcurrency = 4\n[source]\npage_size = 1000\n')
    common = ["--output", str(out), "--pipeline", str(pipeline)]
    row = {"target": records}
    ready = work / f"url-{records}"
    src_err = open(work / f"source-{records}.log", "w+")
    started = time.time()
    src = subprocess.Popen([binary, "demo-source", "--port", "0", "--chaos", "off",
                            "--scale", f"{records / RECORDS_PER_SCALE:.4f}", "--ready-file", str(ready)],
                           env=env, stdout=subprocess.DEVNULL, stderr=src_err)
    try:
        while not ready.exists():
            if src.poll() is not None:
                src_err.seek(0)
                sys.exit(f"the demo source stopped:\n{src_err.read()[-2000:]}")
            time.sleep(0.2)
        row["draw_s"] = time.time() - started
        url = ready.read_text()
        # As cron's first night: everything pulled, the current and previous quarters published.
        secs, rss, _ = timed([binary, "run", "--source-url", url, *common], env, log)
        rec = last_record(out)
        row.update(records=rec["counts"]["records_pulled"], cases=rec["counts"]["cases_in_staging"],
                   pull_rate=rec["counts"]["records_pulled"] / rec["timings_secs"]["pull"],
                   pull_run_s=secs, pull_rss=rss)
        row["night"] = night_run(binary, url, token, env, common, log, out, 0)
        row["night_corr"] = night_run(binary, url, token, env, common, log, out, 20)
        row["source_rss"] = peak_rss(src.pid)
    finally:
        src.send_signal(signal.SIGINT)
        try:
            src.wait(timeout=60)
        except subprocess.TimeoutExpired:
            src.kill()
            src.wait()

    kpi, cold, duck = [], [], []
    sql = duckdb_sql(out)
    for _ in range(3):
        shutil.rmtree(out / "_state" / "kpi-cache", ignore_errors=True)
        secs, rss, _ = timed([binary, "run", "--from-staging", "--period", "2024-Q3", *common], env, log)
        cold.append((secs, rss))
        secs, rss, _ = timed([binary, "run", "--from-staging", "--period", "2024-Q3", *common], env, log)
        kpi.append((secs, rss))
        secs, rss, text = timed([duckdb_bin, "-csv", "-c", sql], env, log)
        duck.append((secs, rss))
    a_m, l_m = mine(out)
    a_d, l_d = theirs(text)
    if l_m != l_d or a_m != a_d:
        bad = [k for k in set(a_m) | set(a_d) if a_m.get(k) != a_d.get(k)][:5]
        sys.exit(f"DuckDB and motcua differ at {records}: levels {l_m == l_d}, agency rows {bad}")
    row.update(kpi_s=min(k[0] for k in kpi), kpi_rss=max(k[1] for k in kpi),
               cold_s=min(k[0] for k in cold), cold_rss=max(k[1] for k in cold),
               duck_s=min(d[0] for d in duck), duck_rss=max(d[1] for d in duck),
               agency_rows=len(a_m))

    secs, rss, _ = timed([binary, "replay", "--all", "--period", "2024-Q3", *common], env, log)
    rec = last_record(out)
    t = rec["timings_secs"]
    row.update(replay_rate=rec["counts"]["records_pulled"] / (t["replay_raw"] + t["stage"]),
               replay_s=secs, replay_rss=rss, replay_records=rec["counts"]["records_pulled"],
               staging_mb=rec["counts"]["staging_bytes"] / 2**20)
    shutil.rmtree(out, ignore_errors=True)
    return row


def report(rows):
    lines = [
        "| records (cases in staging) | draw s | pull rec/s | pull run s (MiB) | source MiB "
        "| nightly s (MiB) | pulled | rewritten of staging | nightly + 20 old corrections s, rewritten "
        "| KPI s (MiB), counts cached | KPI s (MiB), cold | DuckDB CLI s (MiB) | KPI / DuckDB, cached, cold "
        "| replay rec/s | replay s (MiB) | staging MB |",
        "|" + "---|" * 16,
    ]
    for r in rows:
        n, c = r["night"], r["night_corr"]
        lines.append(
            f"| {r['records']:,} ({r['cases']:,}) | {r['draw_s']:.0f} | {r['pull_rate']:,.0f} "
            f"| {r['pull_run_s']:.1f} ({r['pull_rss']:.0f}) | {r['source_rss'] or 0:.0f} "
            f"| {n['secs']:.2f} ({n['rss']:.0f}) | {n['pulled']:,} "
            f"| {n['written'] / 2**20:.1f} MB of {n['staging'] / 2**20:.0f} ({100 * n['written'] / n['staging']:.1f} %, {n['partitions']} of {n['of']} files) "
            f"| {c['secs']:.2f}, {100 * c['written'] / c['staging']:.1f} % "
            f"| {r['kpi_s']:.2f} ({r['kpi_rss']:.0f}) | {r['cold_s']:.2f} ({r['cold_rss']:.0f}) "
            f"| {r['duck_s']:.2f} ({r['duck_rss']:.0f}) "
            f"| {r['kpi_s'] / r['duck_s']:.2f}, {r['cold_s'] / r['duck_s']:.2f} | {r['replay_rate']:,.0f} | {r['replay_s']:.1f} ({r['replay_rss']:.0f}) "
            f"| {r['staging_mb']:.0f} |")
    return "\n".join(lines)


def targets(rows):
    out = []
    for r in rows:
        n = r["night"]
        big = r["records"] >= 9_000_000
        checks = [("KPI whole process / DuckDB CLI ≤ 0.4 (counts cached)", r["kpi_s"] / r["duck_s"] <= 0.4),
                  ("KPI whole process / DuckDB CLI ≤ 0.4 (cold: every partition counted)",
                   r["cold_s"] / r["duck_s"] <= 0.4)]
        if big:
            checks += [
                ("nightly run ≤ 3 s wall", n["secs"] <= 3),
                ("nightly ≤ 10 % of staging bytes rewritten", n["written"] / n["staging"] <= 0.10),
                ("nightly peak memory ≤ 256 MiB", n["rss"] <= 256),
                ("run --from-staging peak memory ≤ 256 MiB (cold and cached)",
                 max(r["kpi_rss"], r["cold_rss"]) <= 256),
                ("replay --all peak memory ≤ 512 MiB", r["replay_rss"] <= 512),
                ("raw → staging ≥ 150 k records/s", r["replay_rate"] >= 150_000),
                ("pull ≥ 150 k records/s", r["pull_rate"] >= 150_000),
                ("demo source ≤ 1 GiB", (r["source_rss"] or 1e9) <= 1024),
                ("pulling client ≤ 1 GiB", r["pull_rss"] <= 1024),
            ]
        for what, ok in checks:
            out.append(f"{r['records']:>12,} records: {what}: {'met' if ok else 'NOT met'}")
    return "\n".join(out)


def duckdb_cli():
    """The `duckdb` that `pip install duckdb-cli` put in this Python's scripts folder."""
    import site
    import sysconfig
    for d in (sysconfig.get_path("scripts"), os.path.join(site.USER_BASE, "bin")):
        p = os.path.join(d, "duckdb")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("duckdb") or "duckdb"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--duckdb", default=duckdb_cli())
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--out", default="", help="also write the table to this file")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-bench-"))
    rows = []
    try:
        with open(work / "bench.log", "w") as log:
            for s in args.sizes.split(","):
                rows.append(bench(int(float(s)), args.bin, args.duckdb, work, log))
                print(f"{s} records: done", file=sys.stderr)
    finally:
        if rows:
            print(json.dumps(rows, indent=1, default=str), file=sys.stderr)
    version = subprocess.run([args.duckdb, "-version"], capture_output=True, text=True).stdout.strip()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, DuckDB CLI {version}")
    text = report(rows)
    print(f"\n{machine}\n\n{text}\n\n{targets(rows)}\n")
    if args.out:
        pathlib.Path(args.out).write_text(f"{machine}\n\n{text}\n\n{targets(rows)}\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
