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

from conftest import PII_KEY, ROOT, TOKEN, binary

EXAMPLE = ROOT.parent / "shared" / "reference" / "example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path: pathlib.Path):
    deadline = time.time() + 60
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


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
    deadline = time.time() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)
    client.create_bucket(Bucket="motcua")
    yield client, env
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def example_source():
    work = pathlib.Path(tempfile.mkdtemp())
    ready = work / "url"
    proc = subprocess.Popen([binary(), "demo-source", "--port", "0", "--chaos", "off", "--dataset", str(EXAMPLE),
                             "--ready-file", str(ready)], env=dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(ready)
    yield ready.read_text()
    proc.kill()
    proc.wait()


def motcua(url, output, extra_env):
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY, **extra_env)
    return subprocess.run([binary(), "run", "--period", "2024-Q3", "--source-url", url, "--output", output],
                          env=env, capture_output=True, text=True)


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
