"""`manage.py worker_health` (the compose worker's health check) against a real Redis broker."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import pytest
from django.core.management import CommandError, call_command
from dramatiq.brokers.redis import RedisBroker

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

JOBS_REDIS_DB = int(os.environ.get("TEST_REDIS_JOBS_DB", "11"))


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[RedisBroker]:
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{JOBS_REDIS_DB}", "", ""))
    broker = RedisBroker(url=url, namespace=f"worker-health-{uuid.uuid4().hex[:8]}")
    broker.url = url  # type: ignore[attr-defined]  # what the command's broker check pings
    broker.declare_queue("uploads")
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)
    try:
        yield broker
    finally:
        dramatiq.set_broker(previous)
        broker.client.delete(f"{broker.namespace}:__heartbeats__")
        broker.close()


def run(*args: str) -> str:
    out = StringIO()
    call_command("worker_health", *args, stdout=out)
    return out.getvalue()


def test_unhealthy_without_a_worker_then_healthy_while_one_runs(
    redis_broker: RedisBroker, settings: Any
) -> None:
    settings.DRAMATIQ_BROKER_URL = redis_broker.url  # type: ignore[attr-defined]
    with pytest.raises(CommandError, match="no Dramatiq worker heartbeat"):
        run()
    worker = dramatiq.Worker(redis_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert "1 worker(s) heartbeating" in run()
                break
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        worker.stop()
    time.sleep(1.2)
    with pytest.raises(CommandError, match="no Dramatiq worker heartbeat in the last 1 s"):
        run("--max-age", "1")


def test_unhealthy_when_the_broker_is_down(settings: Any) -> None:
    settings.DRAMATIQ_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with pytest.raises(CommandError, match="unhealthy: broker"):
        run()
