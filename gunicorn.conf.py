"""gunicorn settings for the web process: `gunicorn -c gunicorn.conf.py backend.wsgi:application`.

Used by the Dockerfile, docker-compose.yml and docs/deploy.md. Every value can be overridden
from the environment (gunicorn is not Django, so this file reads its own variables; the Django
settings read GUNICORN_TIMEOUT too, to keep provider deadlines inside a worker's life).

Defaults fit a small machine (2 cores): threaded workers, so one request waiting on a slow
provider does not take a whole process away from health checks and cheap reads.
"""

from __future__ import annotations

import gc
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
# The request id (X-Request-ID, set by backend.core.logs.RequestIdMiddleware) on every access line.
access_log_format = os.environ.get("GUNICORN_ACCESS_LOG_FORMAT", "").strip() or (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms '
    "request_id=%({x-request-id}o)s"
)

# --- Garbage collection in the workers ------------------------------------------------------
# A presign allocates a few thousand container objects: with CPython's generation-0 threshold
# (700) that is several collections per request, and each older-generation collection walks
# every object of the loaded app (Django, DRF, botocore's service models). What the master
# preloaded is frozen before each fork (out of the collector's sight, and its memory pages stay
# shared copy-on-write, which a collection would dirty), what a worker loads at its start is
# frozen after it, and generation 0 is collected every GUNICORN_GC_THRESHOLD allocations
# (0 keeps CPython's own threshold). About 1.5 % of a request's CPU (docs/performance.md).
gc_threshold = _int("GUNICORN_GC_THRESHOLD", 10_000)


def pre_fork(server: object, worker: object) -> None:
    gc.freeze()


def post_fork(server: object, worker: object) -> None:
    if gc_threshold > 0:
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])


def post_worker_init(worker: object) -> None:
    gc.freeze()


# --- Metrics across workers (prometheus-client multiprocess mode, backend/core/metrics.py) -----
# Each worker writes its counters to files in this directory; /metrics adds them up. It must be
# set before the app (and prometheus_client) is imported, which is why it is set here, and it
# must be emptied when the server starts (files of an earlier run would be counted again).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
_metrics_dir_is_ours = not _metrics_dir
if _metrics_dir_is_ours:
    import tempfile

    _metrics_dir = tempfile.mkdtemp(prefix="upload-broker-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server: object) -> None:
    import glob

    os.makedirs(_metrics_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(_metrics_dir, "*.db")):
        os.remove(stale)


def child_exit(server: object, worker: object) -> None:
    # A dead worker's live gauges are dropped; its counters stay in the sum (they happened).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    # A directory this file made is removed with the server; one you set is left as it is.
    if _metrics_dir_is_ours:
        import shutil

        shutil.rmtree(_metrics_dir, ignore_errors=True)
