"""The development server's in-process job worker (devtools/devserver.py) starts only when it
should, and then really runs jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from devtools import devserver
from tests.fixtures.processes import run_python


@pytest.mark.parametrize(
    ("flag", "argv", "expected"),
    [
        (True, ["manage.py", "runserver"], True),
        (True, ["manage.py", "migrate"], False),
        (True, ["manage.py", "rundramatiq"], False),
        (True, ["pytest"], False),
        (False, ["manage.py", "runserver"], False),
    ],
)
def test_inprocess_worker_only_for_dev_servers(flag: bool, argv: list[str], expected: bool) -> None:
    with override_settings(DRAMATIQ_RUN_INPROCESS_WORKER=flag):
        assert devserver.should_start_inprocess_worker(argv) is expected


INPROCESS_SCRIPT = """
import sys, time, pathlib
sys.argv = ["manage.py", sys.argv[1]]
import django, dramatiq
django.setup()
from devtools import devserver
from tests.fixtures.processes import run_python
devserver.install()

@dramatiq.actor
def touch(path):
    pathlib.Path(path).write_text("ran")

assert devserver._inprocess_worker is None  # not in the autoreloader parent: first request only
from django.core.signals import request_started
request_started.send(sender=None)
request_started.send(sender=None)
print("worker", devserver._inprocess_worker is not None, flush=True)
if devserver._inprocess_worker is not None:
    assert devserver.start_inprocess_worker() is devserver._inprocess_worker  # started once
    touch.send(OUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not pathlib.Path(OUT).exists():
        time.sleep(0.05)
    print("ran", pathlib.Path(OUT).exists(), flush=True)
"""


@pytest.mark.parametrize(("command", "starts"), [("runserver", True), ("migrate", False)])
def test_inprocess_worker_runs_jobs_for_the_dev_server(
    tmp_path: Path, command: str, starts: bool
) -> None:
    out_file = tmp_path / "ran.txt"
    script = f"OUT = {str(out_file)!r}\n" + INPROCESS_SCRIPT
    out = run_python(script, command, DRAMATIQ_RUN_INPROCESS_WORKER="1")
    assert out.returncode == 0, out.stderr
    assert f"worker {starts}" in out.stdout
    if starts:
        assert "ran True" in out.stdout
        assert out_file.read_text() == "ran"
