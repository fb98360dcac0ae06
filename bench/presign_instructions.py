"""The presign path's own cost in CPU instructions, repeatable on a busy machine.

`bench/http_presign.py` measures the deployed stack (gunicorn, wrk, CPU time from /proc), and a
shared 2-core VM moves those numbers by ±10 % from one minute to the next. This script counts
what the web process itself executes per request, which does not drift: each endpoint runs in
its own Python process under valgrind's callgrind, instrumented only around the measured loop
(`callgrind_control -i on/off`), through Django's test client with the bench settings (DEBUG
off, PostgreSQL, the Redis throttle on) against the same floor endpoint.

    .venv/bin/python bench/presign_instructions.py             # make bench-instructions
    .venv/bin/python bench/presign_instructions.py --gunicorn  # a real worker, ~5 minutes

What it leaves out: kernel time (socket syscalls, so a network round trip counts only its
Python and C client code), PostgreSQL's and Redis's own work, gunicorn. Read it beside the
HTTP bench, not instead of it. Needs valgrind (Debian: apt-get install valgrind).

`--gunicorn` counts a real gunicorn worker instead (the shipped gunicorn.conf.py, one worker
and its threads, under callgrind with the master), driven by wrk over loopback: the worker's
whole user-space work per request, gunicorn's HTTP handling, thread hand-offs, the metrics
files and the log stream included, and also the floor plus one Redis round trip
(bench/httpstack/floor_urls.py). Counters are zeroed after a warm-up and dumped after each
endpoint's run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.httpstack import bench_database_url  # noqa: E402

# Its own database (the HTTP bench uses `<name>_bench`), set before http_presign reads it at
# import; the valgrind children inherit it through the environment.
os.environ["BENCH_DATABASE_URL"] = bench_database_url("_bench_instructions")

from bench import http_presign as hp  # noqa: E402  (reads BENCH_DATABASE_URL at import)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
CASES = [
    ("floor", "/bench/floor/", "s3"),
    ("presign (s3)", "/api/v1/uploads/", "s3"),
    ("presign (cloudinary)", "/api/v1/uploads/", "cloudinary"),
]


def _as_a_gunicorn_worker() -> None:
    """The garbage-collector policy of the shipped gunicorn.conf.py's workers (its own hooks,
    run here): what the process loaded frozen, generation 0 at GUNICORN_GC_THRESHOLD. Without
    it a full collection falling inside the measured requests or not moves a count by ~5 %."""
    import gc
    import runpy

    # The file makes a metrics directory unless one is set; none is needed here.
    saved = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved or tempfile.gettempdir()
    try:
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        if saved is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    conf["post_fork"](None, None)
    gc.collect()
    conf["post_worker_init"](None)


def child(path: str, provider: str, requests: int) -> None:
    """Inside valgrind: warm up, then run `requests` requests with instrumentation on."""
    hp._setup_django()
    from django.test import Client
    from rest_framework.authtoken.models import Token

    import backend.core.config as app_config
    from backend.storage import switching
    from backend.storage.factory import CloudStorageFactory

    for handler in logging.getLogger().handlers:  # the INFO line is formatted, not shown
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    switching.activate_provider(provider, actor="bench")
    tokens = list(Token.objects.values_list("key", flat=True))
    client = Client(HTTP_HOST="127.0.0.1")

    def run(count: int) -> None:
        for i in range(count):
            answer = client.post(
                path,
                hp.BODY,
                content_type="application/json",
                HTTP_AUTHORIZATION="Token " + tokens[i % len(tokens)],
            )
            if answer.status_code != 201:
                raise SystemExit(f"{path}: {answer.status_code} {answer.content[:200]!r}")

    # Every user once at least: a user's first upload seeds its quota counters from the rows
    # (once per user and Redis lifetime), which is not the steady state measured here.
    run(len(tokens) + 30)
    if CloudStorageFactory.active().name != provider:
        raise SystemExit(f"the active provider is not {provider}")
    # Under valgrind a request takes ~50x longer: without this the 0.5 s AppConfig copy would
    # be refreshed every few requests, which the real process does once per 0.5 s.
    app_config.LOCAL_TTL_SECONDS = 10**9
    run(5)
    _as_a_gunicorn_worker()
    subprocess.run(
        ["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True
    )
    run(requests)
    subprocess.run(
        ["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True
    )


def measure(path: str, provider: str, workdir: Path) -> float:
    out = workdir / f"callgrind.{provider}.{path.strip('/').replace('/', '-')}"
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            path,
            provider,
            str(REQUESTS),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **hp.SERVER_ENV, "PYTHONPATH": str(ROOT)},
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not match:
        raise SystemExit(f"valgrind run failed:\n{result.stderr[-2000:]}")
    return int(match.group(1)) / REQUESTS


GUNICORN_CASES = [
    ("floor", "/bench/floor/", "s3"),
    ("floor + Redis trip", "/bench/floor-redis/", "s3"),
    ("presign (cloudinary)", "/api/v1/uploads/", "cloudinary"),
    ("presign (s3)", "/api/v1/uploads/", "s3"),
]


def _callgrind_total(path: Path) -> int:
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not match:
        raise SystemExit(f"no totals in {path}")
    return int(match.group(1))


def gunicorn_worker(tokens: list[str]) -> dict[str, float]:
    """Instructions per request of one real gunicorn worker (see the module docstring)."""
    import time

    seconds = int(os.environ.get("BENCH_SECONDS", "20"))
    workdir, script = hp.wrk_workdir("bench-instructions-gunicorn-", tokens)
    proc = hp.start_gunicorn(
        workdir,
        wrapper=(
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={workdir}/callgrind.%p",
        ),
        # A worker under valgrind runs ~50x slower: not killed for it.
        env={"GUNICORN_WORKERS": "1", "GUNICORN_TIMEOUT": "600"},
    )
    # Light load: the worker is the only thing measured, and valgrind serialises its threads.
    hp.CONNECTIONS, hp.THREADS = 4, 1
    counts: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 600
        while not hp._children(proc.pid) and time.monotonic() < deadline:
            time.sleep(1)
        [worker] = hp._children(proc.pid)
        # The master listens before its worker has booted (slowly, under valgrind): wait for
        # answers, so that no boot work falls inside a measured run.
        while hp._wrk("/bench/floor/", script, 2, proc.pid, "").requests == 0:
            if time.monotonic() > deadline:
                raise SystemExit("the gunicorn worker did not answer within 10 minutes")
        for label, path, provider in GUNICORN_CASES:
            hp._use_provider(provider)
            # Warm: caches, and every user's quota counters seeded from the rows (a user's first
            # presign after the bench cleared Redis counts its rows: not the steady state). Under
            # valgrind 8 s may serve fewer requests than there are users: warm until they did.
            warmed = 0
            while warmed < len(tokens) + 30:
                warmed += hp._wrk(path, script, 8, proc.pid, "").requests
            subprocess.run(
                ["callgrind_control", "-z", str(worker)], check=True, capture_output=True
            )
            measured = hp._wrk(path, script, seconds, proc.pid, "")
            before = set(workdir.glob(f"callgrind.{worker}.*"))
            subprocess.run(
                ["callgrind_control", "-d", str(worker)], check=True, capture_output=True
            )
            for _ in range(120):
                new = set(workdir.glob(f"callgrind.{worker}.*")) - before
                if new:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("callgrind wrote no dump within a minute")
            [dump] = new
            time.sleep(1)  # written whole
            if measured.non2xx:
                raise SystemExit(f"{path}: {measured.non2xx} answers were not 2xx")
            counts[label] = _callgrind_total(dump) / measured.requests
    finally:
        hp.stop(proc, workdir, timeout=60)
    return counts


def _print(title: str, counts: dict[str, float]) -> None:
    floor = counts["floor"]
    print(title)
    print(f"{'endpoint':<22}{'instructions':>14}{'x floor':>9}")
    for label, count in counts.items():
        print(f"{label:<22}{count / 1000:>12.0f} k{count / floor:>9.2f}")


def main() -> None:
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    hp._ensure_database()
    hp._setup_django()
    tokens = hp._prepare()
    if "--gunicorn" in sys.argv:
        if not shutil.which("wrk"):
            raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
        _print("user-space instructions per request, one gunicorn worker", gunicorn_worker(tokens))
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    try:
        counts = {label: measure(path, provider, workdir) for label, path, provider in CASES}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _print(
        f"user-space instructions per request, web process only ({REQUESTS} requests each)", counts
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
