"""gunicorn settings for the web process: `gunicorn -c gunicorn.conf.py backend.wsgi:application`.

Used by the Dockerfile, docker-compose.yml and docs/deploy.md. Every value can be overridden
from the environment (gunicorn is not Django, so this file reads its own variables; the Django
settings read GUNICORN_TIMEOUT too, to keep provider deadlines inside a worker's life).

Defaults fit a small machine (2 cores): threaded workers, so one request waiting on a slow
provider does not take a whole process away from health checks and cheap reads.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}.") from None


bind = os.environ.get("GUNICORN_BIND", "").strip() or "0.0.0.0:8000"
# One process per core plus one: the GIL limits a process to one core of Python at a time.
workers = _int("GUNICORN_WORKERS", multiprocessing.cpu_count() + 1)
threads = _int("GUNICORN_THREADS", 4)
worker_class = "gthread" if threads > 1 else "sync"
# A worker silent for this long is killed and restarted; provider deadlines stay well below it.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Behind a load balancer that reuses connections (keep-alive), idle sockets are kept this long.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-").strip() or None
errorlog = "-"
# Loading the app before forking shares its memory between workers; each worker still opens its
# own database connections and provider clients after the fork.
preload_app = os.environ.get("GUNICORN_PRELOAD", "1").strip() not in ("0", "false", "no")
# gunicorn's control socket lives at one fixed path per user; two servers on one machine (a
# second instance, tests, benches) would fight over it. Nothing here uses it.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip() in ("", "0")
