"""A newcomer's start: `make run` prints the 2024-Q3 table by level and leaves Parquet behind."""

import csv
import os
import subprocess

import pyarrow.parquet as pq

from conftest import ROOT


def test_make_run_prints_the_reference_quarter_and_leaves_parquet(tmp_path):
    out = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    r = subprocess.run(["make", "--no-print-directory", "run", f"OUTPUT={out}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert any(line.startswith("2024-Q3 (decree09, 2024-06-15") for line in lines), r.stdout
    # The table as the quarter's agencies were, then the same restated to today's (two levels).
    first = lines.index(next(line for line in lines if line.startswith("2024-Q3 (decree09")))
    restated = lines.index(next(line for line in lines if line.startswith("2024-Q3 restated to the agencies of")))
    table = lines[first:restated]
    printed = {line.split()[0]: line.split()[1:] for line in table if line.split()[:1] in (["province"], ["district"], ["commune"], ["all"])}
    today = {line.split()[0]: line.split()[1:] for line in lines[restated:] if line.split()[:1] in (["province"], ["district"], ["commune"], ["all"])}
    assert set(today) == {"province", "commune", "all"} and today["all"] == printed["all"], today
    with open(ROOT.parent / "shared/reference/hue-2024-q3-cases.csv") as f:
        for ref in csv.DictReader(f):
            row = printed[ref["level"]]
            assert row[0] == ref["received_new"] and row[1] == ref["received_online"], (ref["level"], row)
            assert row[2] == ref["online_rate_pct"] and row[3] == ref["resolved_total"], (ref["level"], row)
    level = pq.read_table(out / "kpi/cases_by_level/period=2024-Q3/part-0.parquet")
    assert level.num_rows == 4
    # Staging: one file per partition, case_month=YYYY-MM (or none) / bucket=N (schemas/staging-layout.md).
    parts = list((out / "cases").rglob("*.parquet"))
    assert parts and all(p.name == "part-0.parquet" for p in parts), parts[:5]
    assert all(p.parent.parent.name.startswith("case_month=") and p.parent.name.startswith("bucket=") for p in parts)
    assert sum(pq.read_metadata(p).num_rows for p in parts) == pq.read_table(out / "cases").num_rows > 0
    assert (out / "reports/period=2024-Q3/index.html").is_file()
