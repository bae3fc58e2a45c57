"""An s3:// output root through the usual AWS environment variables, against moto_server on 127.0.0.1."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import pathlib

import boto3
import pyarrow.parquet as pq
import pytest
import io

from conftest import PII_KEY, ROOT, TOKEN, binary, demo_source as demo_process

EXAMPLE = ROOT.parent / "shared" / "reference" / "example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str):
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"{what} did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def s3():
    exe = shutil.which("moto_server")
    assert exe, "moto_server is installed by make test (pip: moto[server])"
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    wait_for_port(port, "moto_server")
    client.create_bucket(Bucket="motcua")
    yield client, env
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def example_source():
    with demo_process("--chaos", "off", "--dataset", str(EXAMPLE)) as url:
        yield url


def motcua(url, output, extra_env, args=("run", "--period", "2024-Q3"), popen=False):
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY, **extra_env)
    cmd = [binary(), *args, "--source-url", url, "--output", output]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def kpi_figures(read):
    """Every KPI figure of every published table and period, by a reader of the root."""
    out = {}
    for key in read.keys():
        if key.startswith("kpi/") and key.endswith("part-0.parquet"):
            t = pq.read_table(io.BytesIO(read.get(key)))
            out[key] = t.drop_columns(["run_id", "computed_at"]).to_pylist()
    return out


class S3Reader:
    def __init__(self, client, bucket, prefix):
        self.c, self.b, self.p = client, bucket, prefix

    def keys(self):
        pages = self.c.get_paginator("list_objects_v2").paginate(Bucket=self.b, Prefix=self.p + "/")
        return sorted(o["Key"][len(self.p) + 1:] for page in pages for o in page.get("Contents", []))

    def get(self, key):
        return self.c.get_object(Bucket=self.b, Key=f"{self.p}/{key}")["Body"].read()


class LocalReader:
    def __init__(self, root):
        self.root = pathlib.Path(root)

    def keys(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def get(self, key):
        return (self.root / key).read_bytes()


FIGURES = ["level", "received_new", "received_online", "resolved_total", "resolved_early", "resolved_on_time",
           "resolved_overdue", "in_progress_total", "waiting_acceptance", "online_rate", "on_time_rate"]


def test_an_s3_root_publishes_the_same_figures_and_layout_as_a_local_one(s3, example_source, tmp_path):
    client, env = s3
    run = motcua(example_source, "s3://motcua/province/hue", env)
    assert run.returncode == 0, run.stderr
    local = tmp_path / "local"
    ok = motcua(example_source, str(local), {})
    assert ok.returncode == 0, ok.stderr

    keys = [o["Key"] for o in client.list_objects_v2(Bucket="motcua", Prefix="province/hue/")["Contents"]]
    rel = sorted(k[len("province/hue/"):] for k in keys)
    readers = [k for k in rel if k.startswith(("kpi/", "cases/", "quality/"))]
    local_readers = sorted(str(p.relative_to(local)) for p in local.rglob("*.parquet")
                           if p.relative_to(local).parts[0] in ("kpi", "cases", "quality"))
    strip = lambda ks: sorted(k.split("run_id=")[0] for k in ks)
    assert strip(readers) == strip(local_readers)
    assert not any(k.startswith("_staging/") for k in rel)
    assert any(k.startswith("_runs/") for k in rel) and "_state/cursor.json" in rel

    body = client.get_object(Bucket="motcua", Key="province/hue/kpi/cases_by_level/period=2024-Q3/part-0.parquet")["Body"].read()
    remote = pq.read_table(io.BytesIO(body)).select(FIGURES).to_pylist()
    mine = pq.read_table(local / "kpi/cases_by_level/period=2024-Q3/part-0.parquet").select(FIGURES).to_pylist()
    assert remote == mine and len(mine) == 5


def test_a_missing_bucket_says_so(s3, example_source):
    _, env = s3
    run = motcua(example_source, "s3://no-such-bucket/x", env)
    assert run.returncode != 0
    assert "no-such-bucket" in run.stderr or "NoSuchBucket" in run.stderr, run.stderr


def test_an_unreachable_endpoint_says_so(example_source):
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ALLOW_HTTP": "true"}
    run = motcua(example_source, "s3://motcua/x", env)
    assert run.returncode != 0
    assert "s3://motcua/x" in run.stderr, run.stderr


@pytest.fixture(scope="module")
def demo_source():
    with demo_process("--chaos", "on", "--scale", "0.2") as url:
        yield url


def test_run_and_backfill_on_s3_equal_a_local_folder_figure_for_figure(s3, demo_source, tmp_path):
    client, env = s3
    local = tmp_path / "local"
    for args in (("run", "--period", "2024-Q3"), ("backfill", "--from", "2024-Q1", "--to", "2024-Q4")):
        remote = motcua(demo_source, "s3://motcua/equal", env, args)
        assert remote.returncode == 0, remote.stderr
        mine = motcua(demo_source, str(local), {}, args)
        assert mine.returncode == 0, mine.stderr
    on_s3 = kpi_figures(S3Reader(client, "motcua", "equal"))
    on_disk = kpi_figures(LocalReader(local))
    assert len(on_s3) == 4 * 5 and on_s3 == on_disk, "4 quarters, 3 tables as was and 2 restated"
    layout = lambda keys: sorted(k.split("run_id=")[0] for k in keys if k.startswith(("kpi/", "cases/", "reports/")))
    assert layout(S3Reader(client, "motcua", "equal").keys()) == layout(LocalReader(local).keys())


def test_two_runs_on_one_s3_root_one_publishes(s3, demo_source):
    _, env = s3
    a = motcua(demo_source, "s3://motcua/race", env, popen=True)
    b = motcua(demo_source, "s3://motcua/race", env, popen=True)
    results = [p.communicate() + (p.returncode,) for p in (a, b)]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 6], [r[1][-500:] for r in results]


@pytest.fixture(scope="module")
def s3s():
    exe = shutil.which("s3s-fs")
    assert exe, "s3s-fs is installed by make test (cargo install s3s-fs --version 0.14.1 --features binary --locked)"
    root = pathlib.Path(tempfile.mkdtemp())
    (root / "motcua").mkdir()
    port = free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--access-key", "AKIDMOTCUA",
                             "--secret-key", "motcua-secret-key", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, "s3s-fs")
    yield {"AWS_ACCESS_KEY_ID": "AKIDMOTCUA", "AWS_SECRET_ACCESS_KEY": "motcua-secret-key",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
    proc.kill()
    proc.wait()


def test_a_signature_checking_s3_accepts_the_right_credentials(s3s, example_source, tmp_path):
    run = motcua(example_source, "s3://motcua/signed", s3s)
    assert run.returncode == 0, run.stderr
    local = motcua(example_source, str(tmp_path / "local"), {})
    assert local.returncode == 0, local.stderr
    assert "published 1 period" in run.stdout


def test_wrong_credentials_say_so(s3s, example_source):
    env = dict(s3s, AWS_SECRET_ACCESS_KEY="not-the-secret")
    run = motcua(example_source, "s3://motcua/signed", env)
    assert run.returncode != 0
    assert "SignatureDoesNotMatch" in run.stderr and "AWS_ACCESS_KEY_ID" in run.stderr, run.stderr
    assert "not-the-secret" not in run.stderr


def test_provinces_share_one_bucket_run_at_once_and_read_as_one_table(s3, demo_source, example_source):
    """Three provinces' jobs at once into one S3 root (schemas/root-layout.md): each has its own
    lock, so all three publish; pyarrow reads every province from the bucket as one table."""
    import pyarrow.dataset as ds
    import pyarrow as pa
    from pyarrow import fs
    client, env = s3
    jobs = {"01": demo_source, "46": example_source, "79": demo_source}
    procs = {p: motcua(src, "s3://motcua/national", env, ("run", "--period", "2024-Q3", "--province", p), popen=True)
             for p, src in jobs.items()}
    for p, proc in procs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, (p, err[-2000:])
    keys = S3Reader(client, "motcua", "national").keys()
    for p in jobs:
        assert f"_state/province={p}/cursor.json" in keys and f"_state/province={p}/lock" not in keys
        assert any(k.startswith(f"_runs/province={p}/") for k in keys)
        assert f"kpi/cases_by_level/province={p}/period=2024-Q3/part-0.parquet" in keys
    assert all(k.split("/")[2 if k.startswith(("kpi/", "dim/", "quality/")) else 1].startswith("province=")
               for k in keys), "every object under a province= folder"

    s3fs = fs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1", scheme="http",
                           endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"))
    hive = ds.partitioning(pa.schema([("province", pa.string()), ("period", pa.string())]), flavor="hive")
    table = ds.dataset("motcua/national/kpi/cases_by_level", filesystem=s3fs, format="parquet",
                       partitioning=hive).to_table().to_pylist()
    by = {}
    for r in table:
        by.setdefault(r["province"], {})[r["level"]] = r["received_total"]
    assert set(by) == set(jobs)
    assert by["01"] == by["79"] and by["01"] != by["46"], "each province its own figures"
    for p in jobs:
        one = pq.read_table(io.BytesIO(S3Reader(client, "motcua", "national").get(
            f"kpi/cases_by_level/province={p}/period=2024-Q3/part-0.parquet"))).to_pylist()
        assert by[p] == {r["level"]: r["received_total"] for r in one}
