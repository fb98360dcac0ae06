"""Readiness checks behind `/readyz`.

Core checks what every process needs (database, cache, broker); other apps register more with
`register()` from their `AppConfig.ready()` (storage adds each provider's breaker state), so core
never imports them. A check returns `(ok, detail)`; an "informational" check is reported but
never makes the instance unready (a provider outage is shared by every instance: taking them all
out of the load balancer would not help).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, Any]]

#: Socket timeouts of the broker check's own connection: a black-holed broker costs this much.
BROKER_CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class _Registered:
    check: Check
    informational: bool


_checks: dict[str, _Registered] = {}


def register(name: str, check: Check, *, informational: bool = False) -> None:
    _checks[name] = _Registered(check, informational)


def _describe(exc: BaseException) -> str:
    # The exception class only: messages can carry hosts and user names.
    return f"error: {type(exc).__name__}"


def check_database() -> tuple[bool, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return True, "ok"


def check_cache() -> tuple[bool, Any]:
    cache.set("readyz", "1", 5)
    return (True, "ok") if cache.get("readyz") == "1" else (False, "error: read back failed")


def check_broker() -> tuple[bool, Any]:
    url = settings.DRAMATIQ_BROKER_URL
    if not url:
        return True, "ok (in-process stub broker, development)"
    if url.startswith(("amqp://", "amqps://")):
        import pika

        params = pika.URLParameters(url)
        params.socket_timeout = BROKER_CHECK_TIMEOUT
        params.stack_timeout = BROKER_CHECK_TIMEOUT
        params.connection_attempts = 1
        pika.BlockingConnection(params).close()
        return True, "ok"
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=BROKER_CHECK_TIMEOUT, socket_timeout=BROKER_CHECK_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return True, "ok"


register("database", check_database)
register("cache", check_cache)
register("broker", check_broker)


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, {check name: detail}) over every registered check."""
    ready = True
    results: dict[str, Any] = {}
    for name, registered in list(_checks.items()):
        try:
            ok, detail = registered.check()
        except Exception as exc:  # a readiness check reports every failure, it never raises
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            ok, detail = False, _describe(exc)
        results[name] = detail
        if not ok and not registered.informational:
            ready = False
    return ready, results
