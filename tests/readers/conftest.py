"""Publishes the demo province once per session with the real binary, for the reader tests."""

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "readers-token-5b1c"
PII_KEY = "readers-pii-key-0123456789"


def binary() -> str:
    if os.environ.get("MOTCUA_BIN"):
        return os.environ["MOTCUA_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "motcua")


@contextlib.contextmanager
def demo_source(*args):
    """A `motcua demo-source` process on a free port (with `args`); yields its URL."""
    ready = pathlib.Path(tempfile.mkdtemp(prefix="motcua-demo-")) / "url"
    src = subprocess.Popen(
        [binary(), "demo-source", "--port", "0", "--ready-file", str(ready), *args],
        env=dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert src.poll() is None, "the demo source stopped"
            assert time.time() < deadline, "the demo source did not start"
            time.sleep(0.05)
        yield ready.read_text()
    finally:
        src.terminate()  # SIGTERM: the source removes the province it drew to the temp dir
        try:
            src.wait(timeout=30)
        except subprocess.TimeoutExpired:
            src.kill()
            src.wait()
        shutil.rmtree(ready.parent, ignore_errors=True)  # the folder of the ready file


@pytest.fixture(scope="session")
def published():
    """An output root holding two published quarters of the demo province."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-readers-"))
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY)
    with demo_source("--chaos", "off") as url:
        out = work / "out"
        run = subprocess.run(
            [binary(), "run", "--period", "2024-Q3", "--period", "2024-Q2",
             "--source-url", url, "--output", str(out),
             "--pipeline", str(ROOT / "pipelines" / "demo.toml")],
            env=env, capture_output=True, text=True,
        )
        assert run.returncode == 0, run.stderr
    yield out
    shutil.rmtree(work, ignore_errors=True)
