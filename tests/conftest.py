"""Suite-wide fixtures and the CI strictness switch.

UPLOADS_TEST_STRICT=1 (set by .ci/run): a test that would skip because something is missing on
this machine (PostgreSQL, Redis, Chromium) fails instead, so CI always runs everything.
Tests marked `postgres` are about concurrency that SQLite cannot show; on a SQLite run they are
deselected (not skipped), and the PostgreSQL run executes them.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from django.conf import settings

# Tests import it from here (servers they start listen on it).
from devtools.ports import free_port as free_port

STRICT = os.environ.get("UPLOADS_TEST_STRICT") == "1"

# Provider fixtures: s3_storage, moto_server, s3_server_storage, cloudinary_standin,
# memory_storage, use_provider, boto3_clients; the StubBroker: broker.
pytest_plugins = ["tests.fixtures.providers", "tests.fixtures.jobs"]


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine that lacks a service; fail under UPLOADS_TEST_STRICT=1."""
    if STRICT:
        pytest.fail(f"UPLOADS_TEST_STRICT=1 and a required part is missing: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def using_postgres() -> bool:
    return "postgresql" in settings.DATABASES["default"]["ENGINE"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if using_postgres():
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("postgres") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> list[str]:
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    lines = [f"database engine: {engine}; strict (no skips allowed): {STRICT}"]
    if not using_postgres():
        lines.append("tests marked 'postgres' are deselected on this SQLite run")
    return lines


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under UPLOADS_TEST_STRICT=1: {report.longrepr}"


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    from backend.core import config

    cache.clear()
    config.clear_local_copy()


@pytest.fixture(autouse=True)
def _close_breakers() -> None:
    """No provider's circuit breaker state leaks from one test into the next."""
    from backend.storage import resilience

    resilience.reset_all()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if not port_open("127.0.0.1", 6379):
        skip_or_fail("Redis is not reachable on 127.0.0.1:6379")
    return url


@pytest.fixture
def redis_commands_sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command sent on a redis-py connection from here on, as the bytes sent."""
    from redis.connection import AbstractConnection

    sent: list[bytes] = []
    real = AbstractConnection.send_packed_command

    def recording(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        real(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    return sent
