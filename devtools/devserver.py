"""`python -m devtools.devserver runserver --noreload ADDR`: manage.py with the jobs in-process.

Development only (the demo, `make demo`): with no broker configured, settings select dramatiq's
in-memory stub broker, and nothing would ever run the jobs a web process sends (provider
deletes, cleanup). With DRAMATIQ_RUN_INPROCESS_WORKER=1 (refused in production by the settings)
and a serving command, this starts one worker thread and the periodic jobs' scheduler inside the
web process, on its first request (`runserver`'s autoreloader parent never serves one, so it
never starts a second worker). Any other command runs exactly as with manage.py.

Messages live in this process's memory: a restart loses queued jobs, and the scheduled cleanup
picks up whatever they would have done.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import django
import dramatiq
from django.conf import settings
from django.core.management import execute_from_command_line
from django.core.signals import request_started
from dramatiq.brokers.stub import StubBroker
from dramatiq_crontab import scheduler

# Commands that serve the app in development; any other command (migrate, shell, tests ...) must
# not start background threads.
INPROCESS_WORKER_COMMANDS = frozenset({"runserver", "runserver_plus", "demo", "rundemo"})

logger = logging.getLogger(__name__)
_inprocess_lock = threading.Lock()
_inprocess_worker: dramatiq.Worker | None = None


def should_start_inprocess_worker(argv: list[str] | None = None) -> bool:
    if not settings.DRAMATIQ_RUN_INPROCESS_WORKER:
        return False
    if not isinstance(dramatiq.get_broker(), StubBroker):
        return False  # a real broker has real workers (rundramatiq)
    argv = list(sys.argv if argv is None else argv)
    return len(argv) > 1 and argv[1] in INPROCESS_WORKER_COMMANDS


def start_inprocess_worker() -> dramatiq.Worker:
    """Start (once per process) a worker thread consuming the stub broker, and the scheduler."""
    global _inprocess_worker
    # After django.setup() only (it imports models): declares the actors, registers schedules.
    from backend.uploads import tasks  # noqa: F401

    with _inprocess_lock:
        if _inprocess_worker is None:
            worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=2, worker_timeout=500)
            worker.start()
            _inprocess_worker = worker
            # There is no Redis lock here: one dev server process is one scheduler.
            threading.Thread(
                target=scheduler.start, name="dramatiq-crontab-inprocess", daemon=True
            ).start()
            logger.warning(
                "Running Dramatiq jobs and their schedule in-process on the stub broker "
                "(development only)."
            )
        return _inprocess_worker


def install(argv: list[str] | None = None) -> bool:
    """Arrange for the worker to start on the first request, when this command should have one."""
    if not should_start_inprocess_worker(argv):
        return False
    request_started.connect(_start_on_request, dispatch_uid="devtools-inprocess-worker")
    return True


def _start_on_request(**kwargs: Any) -> None:
    start_inprocess_worker()


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    django.setup()
    install()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
