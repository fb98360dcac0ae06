"""Real processes for the fault tests: gunicorn with the shipped config, fault stand-ins.

- `fault_standin(**kw)` (tests/fixtures/providers.py): a fault stand-in on a loopback port.
- `gunicorn_server(env)`: `gunicorn -c gunicorn.conf.py backend.wsgi:application` with production
  settings (DJANGO_DEBUG=0, PostgreSQL = the test database, Redis), plus `env`; waits for
  /healthz. Its cache and breaker keys get a prefix of their own, so no state is shared with
  another test or checkout.

Ports come from `tests.conftest.free_port` (TEST_PORT_RANGE), below the ephemeral range.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from django.db import connections

from tests.conftest import free_port, skip_or_fail, using_postgres

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30
WSGI_APP = "backend.wsgi:application"


def database_url_of_tests() -> str:
    cfg = connections["default"].settings_dict
    auth = quote(cfg["USER"] or "", safe="")
    if cfg.get("PASSWORD"):
        auth += ":" + quote(cfg["PASSWORD"], safe="")
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


@dataclass
class Gunicorn:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def stop(self) -> None:
        # SIGQUIT: gunicorn's quick shutdown (the graceful one waits for idle keep-alives).
        for sig, grace in ((signal.SIGQUIT, 10), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                return
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue


def warm_up(server: Gunicorn) -> None:
    """First requests of a fresh worker pay one-off costs (lazy imports, URL resolver, first
    connections); measurements are about the fault, so every worker serves a few first."""
    paths = ["/healthz", "/readyz", "/api/v1/config/", "/api/v1/uploads/"] * 6
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda path: server.get(path, timeout=30), paths))


@pytest.fixture
def gunicorn_server(
    redis_url: str, tmp_path: Path
) -> Iterator[Callable[[dict[str, str]], Gunicorn]]:
    if not using_postgres():
        skip_or_fail("the fault tests run gunicorn against PostgreSQL (the PostgreSQL run)")
    servers: list[Gunicorn] = []
    tag = uuid.uuid4().hex[:10]

    def start(env: dict[str, str]) -> Gunicorn:
        port = free_port()
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "fault-test-secret-key-not-for-production",
            "DJANGO_ENV_FILE": str(tmp_path / "no.env"),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url_of_tests(),
            "REDIS_URL": redis_url,
            "CACHE_URL": f"{redis_url}?key_prefix=faults-{tag}",
            "PROVIDER_BREAKER_KEY_PREFIX": f"faults-{tag}:breaker",
            # Throttle windows and quota hashes of this run only: hashes outlive the test
            # database (two days), and another run's would count rows that no longer exist.
            "THROTTLE_KEY_PREFIX": f"faults-{tag}:",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_ACCESS_LOG": "",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        log = tmp_path / f"gunicorn-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "gunicorn.conf.py",
                    "backend.wsgi:application",
                ],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop exactly what we started
            )
        server = Gunicorn(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if server.get("/healthz", timeout=1).status_code == 200:
                    warm_up(server)
                    return server
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer:\n{log.read_text(errors='replace')[-3000:]}")

    yield start
    for server in servers:
        server.stop()
        tail = server.log.read_text(errors="replace")[-3000:]
        print(f"--- {server.url} log tail ---\n{tail}")
