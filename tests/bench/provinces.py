"""`make bench-provinces`: what many provinces in one root cost (README, "Past one machine").

Three demo provinces (different seeds and agency codes, `--scale` each) are written by three
motcua jobs (release binary, `run --province`) into one root on local disk. Measured, as whole
processes: each job's first night (everything pulled, 2024-Q3 published) and a nightly run after
`POST /demo/night` (wall time, peak memory); then, in one Spark session (local[2]), the national
roll-up of `cases_by_level` over every province and period, and the two `motcua sql --engine
spark` statements of 2024-Q3 over the three staging tables; the same statements in the DuckDB
command line. Every figure of the SQL is compared with motcua's tables.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

PROVINCES = {"01": (101, "H01"), "46": (146, "H46"), "79": (179, "H79")}
TOKEN = "bench-token"


def timed(cmd, env):
    started = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.time() - started, int(r.stderr.strip().splitlines()[-1]) / 1024, r.stdout


def statements(script):
    out = []
    for chunk in re.split(r";\n", script):
        body = "\n".join(l for l in chunk.splitlines() if l.strip() and not l.startswith("--"))
        if body:
            out.append(body)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-bench-provinces-"))
    root = work / "root"
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY="bench-pii-key-0123456789", TMPDIR=str(work))
    rows = []
    try:
        for code, (seed, letters) in PROVINCES.items():
            ready = work / f"url-{code}"
            src = subprocess.Popen([a.bin, "demo-source", "--port", "0", "--chaos", "off", "--seed", str(seed),
                                    "--scale", str(a.scale), "--agency-code", letters, "--ready-file", str(ready)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not ready.exists():
                    if src.poll() is not None:
                        sys.exit("the demo source stopped")
                    time.sleep(0.1)
                url = ready.read_text()
                common = ["--province", code, "--source-url", url, "--output", str(root)]
                first = timed([a.bin, "run", *common, "--period", "2024-Q3"], env)
                req = urllib.request.Request(f"{url}demo/night?changes={int(20000 * a.scale / 41.5) or 500}",
                                             method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
                urllib.request.urlopen(req, timeout=600).read()
                night = timed([a.bin, "run", *common], env)
                runs = sorted((root / "_runs" / f"province={code}").glob("*.json"))
                records = json.loads(runs[0].read_text())["counts"]["records_pulled"]
                rows.append((code, records, first, night))
            finally:
                src.send_signal(signal.SIGTERM)
                src.wait(timeout=60)

        print(f"\n{len(PROVINCES)} provinces at --scale {a.scale}, one root ({root}):\n")
        print("| province | records | first night: wall, peak | nightly run: wall, peak |")
        print("|---|---|---|---|")
        for code, records, first, night in rows:
            print(f"| {code} | {records:,} | {first[0]:.1f} s, {first[1]:.0f} MiB | {night[0]:.1f} s, {night[1]:.0f} MiB |")

        from pyspark.sql import SparkSession, functions as F
        t0 = time.time()
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", "4").config("spark.ui.showConsoleProgress", "false")
                 .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        session = time.time() - t0
        t0 = time.time()
        level = spark.read.parquet(str(root / "kpi" / "cases_by_level"))
        national = (level.groupBy("period", "level").agg(F.sum("received_total").alias("received_total"))
                    .collect())
        rollup = time.time() - t0
        script = subprocess.run([a.bin, "sql", "--engine", "spark", "--period", "2024-Q3", "--output", str(root)],
                                capture_output=True, text=True, check=True).stdout
        t0 = time.time()
        results = [spark.sql(s).collect() for s in statements(script)]
        spark_sql = time.time() - t0
        spark.stop()
        duck_script = subprocess.run([a.bin, "sql", "--engine", "duckdb", "--period", "2024-Q3", "--output",
                                      str(root)], capture_output=True, text=True, check=True).stdout
        duckdb = shutil.which("duckdb")
        duck = timed([duckdb, "-c", duck_script], env) if duckdb else None
        all_rows = {(r["province"], r["level"]): r["received_total"] for r in results[-1]}
        import pyarrow.dataset as ds
        import pyarrow as pa
        hive = ds.partitioning(pa.schema([("province", pa.string()), ("period", pa.string())]), flavor="hive")
        mine = {(r["province"], r["level"]): r["received_total"] for r in
                ds.dataset(root / "kpi" / "cases_by_level", partitioning=hive).to_table(
                    filter=ds.field("period") == "2024-Q3").to_pylist() if r["received_total"]}
        assert {k: v for k, v in all_rows.items() if v} == mine, "Spark SQL over staging differs from motcua"
        print(f"\nSpark local[2]: session start {session:.1f} s; national roll-up of cases_by_level "
              f"({len(national)} period × level rows) {rollup:.1f} s; `motcua sql --engine spark` 2024-Q3 over "
              f"three staging tables {spark_sql:.1f} s (received_total equal to motcua's on every row)")
        if duck:
            print(f"DuckDB CLI, the same statements: {duck[0]:.1f} s, {duck[1]:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
