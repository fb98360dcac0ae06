"""The shipped gunicorn.conf.py's garbage-collector settings reach the workers: the preloaded
app is frozen before the fork and generation 0 runs at GUNICORN_GC_THRESHOLD (0: CPython's own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def _serve_probe(tmp_path: Path, threshold: str) -> dict:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_ACCESS_LOG": "",
        "GUNICORN_GC_THRESHOLD": threshold,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    log = tmp_path / f"gunicorn-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "tests.fixtures.gc_probe"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{log.read_text(errors='replace')[-2000:]}")
            try:
                return requests.get(f"http://127.0.0.1:{port}/", timeout=1).json()
            except requests.RequestException:
                time.sleep(0.1)
        pytest.fail(f"gunicorn did not answer:\n{log.read_text(errors='replace')[-2000:]}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=15)


def test_workers_run_with_the_frozen_app_and_the_configured_threshold(tmp_path: Path) -> None:
    state = _serve_probe(tmp_path, "12345")
    assert state["enabled"] is True
    assert state["threshold"][0] == 12345
    assert state["frozen"] > 1000  # at least the probe's preloaded objects, and the imports


def test_zero_keeps_cpythons_threshold(tmp_path: Path) -> None:
    import gc

    state = _serve_probe(tmp_path, "0")
    assert state["threshold"] == list(gc.get_threshold())
