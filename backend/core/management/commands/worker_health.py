"""`manage.py worker_health`: the health check of a Dramatiq worker container (docker-compose).

Healthy (exit 0) when the database and the broker answer and, on a Redis broker, a worker has
sent a heartbeat within the broker's heartbeat timeout: every consumer of a running
`rundramatiq` heartbeats at least once a second while it waits for messages (dramatiq keeps them
in the `<namespace>:__heartbeats__` sorted set, by worker id). Unhealthy: exit 1 with one line
saying what failed. On RabbitMQ only the connection is checked (it keeps no heartbeats).

The heartbeats do not say which host sent them: with several worker containers, a container
whose worker died is reported healthy while another one is alive. Use it to restart a wedged
stack, and the queue metrics (docs/operations.md) to see a missing worker.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.core import health


def heartbeats(broker: Any, max_age_ms: int) -> int:
    """How many workers of a Redis broker heartbeated within `max_age_ms`."""
    key = f"{broker.namespace}:__heartbeats__"
    now_ms = int(time.time() * 1000)
    return int(broker.client.zcount(key, now_ms - max_age_ms, "+inf"))


class Command(BaseCommand):
    help = "Exit 0 if the database, the broker and a Dramatiq worker are alive, else 1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Seconds since a worker's last heartbeat (default: the broker's timeout, 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name, check in (("database", health.check_database), ("broker", health.check_broker)):
            try:
                ok, detail = check()
            except Exception as exc:
                raise CommandError(f"unhealthy: {name}: {type(exc).__name__}") from None
            if not ok:
                raise CommandError(f"unhealthy: {name}: {detail}")
        broker = dramatiq.get_broker()
        from dramatiq.brokers.redis import RedisBroker

        if not isinstance(broker, RedisBroker):
            self.stdout.write(f"healthy: database and broker ({type(broker).__name__}) answer")
            return
        max_age = options["max_age"]
        max_age_ms = int(max_age * 1000) if max_age else int(broker.heartbeat_timeout)
        alive = heartbeats(broker, max_age_ms)
        if not alive:
            raise CommandError(
                f"unhealthy: no Dramatiq worker heartbeat in the last {max_age_ms / 1000:g} s"
            )
        self.stdout.write(f"healthy: {alive} worker(s) heartbeating")
