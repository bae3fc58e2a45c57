"""Publishes the demo province once per session with the real binary, for the reader tests."""

import os
import pathlib
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


@pytest.fixture(scope="session")
def published():
    """An output root holding two published quarters of the demo province."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="motcua-readers-"))
    ready = work / "url"
    env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY)
    src = subprocess.Popen(
        [binary(), "demo-source", "--port", "0", "--chaos", "off", "--ready-file", str(ready)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert time.time() < deadline, "the demo source did not start"
            time.sleep(0.05)
        out = work / "out"
        run = subprocess.run(
            [binary(), "run", "--period", "2024-Q3", "--period", "2024-Q2",
             "--source-url", ready.read_text(), "--output", str(out),
             "--pipeline", str(ROOT / "pipelines" / "demo.toml")],
            env=env, capture_output=True, text=True,
        )
        assert run.returncode == 0, run.stderr
        yield out
    finally:
        src.kill()
        src.wait()
