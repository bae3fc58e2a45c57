"""The HTML report opens in headless Chromium, shows the published figures, prints on A4."""

import html.parser
import re
import shutil
import subprocess
import tempfile

import duckdb
import pyarrow.parquet as pq

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def chromium(*args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is installed by make test (apt-get install chromium)"
    with tempfile.TemporaryDirectory(prefix="motcua-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


class Cells(html.parser.HTMLParser):
    """Collects every <td data-row data-m data-v> of the page."""

    def __init__(self):
        super().__init__()
        self.cells = {}
        self.resources = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-m" in a:
            self.cells[(a["data-row"], a["data-m"])] = a["data-v"]
        for k in ("src", "href"):
            if a.get(k):
                self.resources.append(a[k])


def report(published, period="2024-Q3"):
    return published / "reports" / f"period={period}" / "index.html"


def test_the_report_renders_in_chromium_with_the_published_figures(published, tmp_path):
    page = report(published)
    url = page.resolve().as_uri()
    shot = tmp_path / "report.png"
    r = chromium("--window-size=1240,1754", f"--screenshot={shot}", url)
    assert r.returncode == 0, r.stderr
    assert shot.stat().st_size > 50_000, "a real page was drawn"
    assert "Uncaught" not in r.stderr and "Failed to load resource" not in r.stderr, r.stderr
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr
    cells = Cells()
    cells.feed(dom.stdout)
    assert not [x for x in cells.resources if re.match(r"(https?:)?//", x)], "self-contained: nothing fetched"
    assert "2024-Q3" in dom.stdout and "15/06/2024" in dom.stdout and "14/09/2024" in dom.stdout

    level = pq.read_table(published / "kpi/cases_by_level/period=2024-Q3/part-0.parquet").to_pylist()
    run_id = level[0]["run_id"]
    assert run_id in dom.stdout, "the run id is printed"
    shown = 0
    for row in level:
        for m in ("received_total", "received_online", "received_offline", "carried_over", "resolved_total",
                  "resolved_early", "resolved_on_time", "resolved_overdue", "in_progress_total",
                  "in_progress_within", "in_progress_overdue", "waiting_acceptance", "refused"):
            assert int(cells.cells[(row["level"], m)]) == row[m], (row["level"], m)
            shown += 1
        for m in ("online_rate", "on_time_rate", "progress_rate_766"):
            want = "" if row[m] is None else f"{row[m]:.6f}"
            assert cells.cells[(row["level"], m)] == want, (row["level"], m)
    assert shown >= 4 * 13

    # The quarter's agencies are not today's: the level table restated to them is beside it.
    restated = pq.read_table(published / "kpi/cases_by_level_restated/period=2024-Q3/part-0.parquet").to_pylist()
    assert "by-level-restated" in dom.stdout and "restated to the agencies of" in dom.stdout
    assert [r["level"] for r in restated] == ["province", "commune", "all"], "two levels today"
    for row in restated:
        for m in ("received_total", "resolved_total", "in_progress_total", "waiting_acceptance"):
            assert int(cells.cells[("restated." + row["level"], m)]) == row[m], (row["level"], m)
    assert restated[-1]["received_total"] == level[-1]["received_total"], "restated all = as-was all"

    # Per agency: the agency × field rows summed over fields.
    glob = published / "kpi/cases_by_agency/period=2024-Q3/part-0.parquet"
    agencies = duckdb.sql(f"SELECT agency_code, sum(received_total)::BIGINT t, sum(resolved_overdue)::BIGINT o, "
                          f"sum(waiting_acceptance)::BIGINT w FROM read_parquet('{glob}') GROUP BY 1").fetchall()
    assert len(agencies) > 150
    for code, total, overdue, waiting in agencies:
        assert int(cells.cells[(code, "received_total")]) == total, code
        assert int(cells.cells[(code, "resolved_overdue")]) == overdue, code
        assert int(cells.cells[(code, "waiting_acceptance")]) == waiting, code
    catalog = pq.read_table(published / "kpi/catalog_by_level/period=2024-Q3/part-0.parquet").to_pylist()
    for row in catalog:
        assert int(cells.cells[(row["level"], "catalog.procedures")]) == row["procedures"]


def test_the_report_prints_on_a4(published, tmp_path):
    pdf = tmp_path / "report.pdf"
    r = chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", report(published).resolve().as_uri())
    assert r.returncode == 0, r.stderr
    body = pdf.read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page[^s]", body))
    assert 2 <= pages <= 20, pages
    boxes = set(re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", body))
    assert boxes, "the PDF has page boxes"
    for w, h in boxes:  # A4 is 595.3 × 841.9 points
        assert abs(float(w) - 595.3) < 2 and abs(float(h) - 841.9) < 2, boxes
