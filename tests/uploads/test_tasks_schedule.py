"""The periodic jobs really reach the scheduler.

dramatiq-crontab's autodiscovery swallows an ImportError raised inside an app's tasks.py: the jobs
would then silently never run. So we check the scheduler itself, in a fresh process, through the
same loading path `manage.py crontab` uses.
"""

from __future__ import annotations

import json

from apscheduler.triggers.cron import CronTrigger
from django.conf import settings
from dramatiq_crontab import scheduler

from backend.uploads import tasks
from tests.fixtures.processes import run_python


def test_jobs_are_registered_with_the_scheduler_in_this_process() -> None:
    jobs = {job.name: job for job in scheduler.get_jobs()}
    assert "expire_orphans" in jobs and "reconcile_providers" in jobs
    expected = CronTrigger.from_crontab(settings.UPLOAD_SCHEDULES["expire_orphans"])
    assert str(jobs["expire_orphans"].trigger.fields) == str(expected.fields)
    expected = CronTrigger.from_crontab(settings.UPLOAD_SCHEDULES["reconcile"])
    assert str(jobs["reconcile_providers"].trigger.fields) == str(expected.fields)
    expected = CronTrigger.from_crontab(settings.UPLOAD_SCHEDULES["recheck_deleted"])
    assert str(jobs["recheck_deleted_uploads"].trigger.fields) == str(expected.fields)
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
    out = run_python(SCRIPT, SCHEDULE_EXPIRE_ORPHANS="*/5 * * * *")
    assert out.returncode == 0, out.stderr
    jobs = json.loads(out.stdout.strip().splitlines()[-1])
    assert "minute='*/5'" in jobs["expire_orphans"]  # schedule comes from the environment
    assert "minute='17'" in jobs["reconcile_providers"]
