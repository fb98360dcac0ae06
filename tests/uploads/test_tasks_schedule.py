"""The periodic jobs really reach the scheduler, and the dev in-process worker starts only when
it should.

dramatiq-crontab's autodiscovery swallows an ImportError raised inside an app's tasks.py: the jobs
would then silently never run. So we check the scheduler itself, in a fresh process, through the
same loading path `manage.py crontab` uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from django.conf import settings
from django.test import override_settings
from dramatiq_crontab import scheduler

from backend.uploads import tasks

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "backend.settings_test",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def test_jobs_are_registered_with_the_scheduler_in_this_process() -> None:
    jobs = {job.name: job for job in scheduler.get_jobs()}
    assert "expire_orphans" in jobs and "reconcile_providers" in jobs
    expected = CronTrigger.from_crontab(settings.UPLOAD_SCHEDULES["expire_orphans"])
    assert str(jobs["expire_orphans"].trigger.fields) == str(expected.fields)
    expected = CronTrigger.from_crontab(settings.UPLOAD_SCHEDULES["reconcile"])
    assert str(jobs["reconcile_providers"].trigger.fields) == str(expected.fields)
    # The scheduler sends the actor itself.
    assert jobs["expire_orphans"].func == tasks.expire_orphans.send


SCRIPT = """
import json, django
django.setup()
from dramatiq_crontab.management.commands.crontab import Command
from dramatiq_crontab import scheduler
Command().load_tasks({})
print(json.dumps({j.name: str(j.trigger) for j in scheduler.get_jobs()}))
"""


def test_crontab_command_loading_path_registers_the_jobs_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=_env(SCHEDULE_EXPIRE_ORPHANS="*/5 * * * *"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    jobs = json.loads(out.stdout.strip().splitlines()[-1])
    assert "minute='*/5'" in jobs["expire_orphans"]  # schedule comes from the environment
    assert "minute='17'" in jobs["reconcile_providers"]


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
        assert tasks.should_start_inprocess_worker(argv) is expected


INPROCESS_SCRIPT = """
import sys, time, pathlib
sys.argv = ["manage.py", sys.argv[1]]
import django, dramatiq
django.setup()
from backend.uploads import tasks

@dramatiq.actor
def touch(path):
    pathlib.Path(path).write_text("ran")

assert tasks._inprocess_worker is None  # not in the autoreloader parent: first request only
from django.core.signals import request_started
request_started.send(sender=None)
request_started.send(sender=None)
print("worker", tasks._inprocess_worker is not None, flush=True)
if tasks._inprocess_worker is not None:
    assert tasks.start_inprocess_worker() is tasks._inprocess_worker  # started once
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
    out = subprocess.run(
        [sys.executable, "-c", script, command],
        cwd=ROOT,
        env=_env(DRAMATIQ_RUN_INPROCESS_WORKER="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"worker {starts}" in out.stdout
    if starts:
        assert "ran True" in out.stdout
        assert out_file.read_text() == "ran"
