"""Prometheus metrics (prometheus-client), correct under several gunicorn workers.

Each worker process counts in its own files under PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before the app is loaded; dead workers are marked by its `child_exit` hook), and
`/metrics` adds them up across processes. Without that variable (runserver, a management
command, tests) the process's own registry is served.

Label values are what the callers hand in: provider names come from the storage services
(`service.name`), operations from `provider_call`, outcomes from the fixed sets below. The
metric list, the dashboard and the alerts they support: docs/operations.md "Metrics".
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

PREFIX = "upload_broker"

PRESIGNS = Counter(
    f"{PREFIX}_presigns",
    "Upload instructions issued (single and multipart starts), by provider.",
    ["provider", "kind"],
)


@functools.lru_cache(maxsize=64)
def presigns(provider: str, kind: str) -> Any:
    """PRESIGNS' child for (provider, kind), looked up once per process: `labels()` takes a
    lock and checks its values on every call, on every presign. (A child made before a fork
    is safe: in multiprocess mode each value notices the new pid and opens its own file.)"""
    return PRESIGNS.labels(provider, kind)


#: Outcomes of a finalise (client confirm or provider notification).
CONFIRM_OUTCOMES = (
    "uploaded",  # verified, the row is now uploaded
    "already_uploaded",  # idempotent repeat
    "failed_verification",  # 422: the stored object did not match; it was deleted
    "not_uploaded_yet",  # 409: nothing at the provider yet
    "gone",  # 410: expired, deleted, claimed by the cleanup
    "provider_unavailable",  # 503
    "error",  # anything else (a 4xx the caller made, a bug)
)
CONFIRMS = Counter(
    f"{PREFIX}_confirms",
    "Finalise attempts (client confirms and provider notifications), by source and outcome.",
    ["source", "outcome"],
)
WEBHOOK_RESULTS = ("ok", "duplicate", "rejected", "unavailable")
WEBHOOKS = Counter(
    f"{PREFIX}_webhook_deliveries",
    "Provider notifications received, by provider and result.",
    ["provider", "result"],
)
CLEANUP = Counter(
    f"{PREFIX}_cleanup_objects",
    "Objects handled by the cleanup jobs, by job, provider and result (deleted, failed).",
    ["job", "provider", "result"],
)
CLEANUP_RUNS = Counter(
    f"{PREFIX}_cleanup_runs",
    "Cleanup job runs, by job and provider (skipped: the provider could not be reached).",
    ["job", "provider", "result"],
)
PROVIDER_CALL_SECONDS = Histogram(
    f"{PREFIX}_provider_call_seconds",
    "Wall-clock time of provider network calls, by provider and operation.",
    ["provider", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
PROVIDER_CALL_ERRORS = Counter(
    f"{PREFIX}_provider_call_errors",
    "Provider calls that failed (503 to the caller), by provider, operation and code.",
    ["provider", "operation", "code"],
)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def exposition() -> bytes:
    """The metrics text: summed over gunicorn's workers when they share a directory."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _networks(values: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(value, strict=False) for value in values]


def allowed(request: HttpRequest) -> bool:
    """A scrape is allowed with the bearer token, or from an allowed network (either suffices).

    Neither configured: nobody (the endpoint answers 403 with what to set)."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    presented = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return True
    networks = _networks(settings.METRICS_ALLOWED_NETWORKS)
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in network for network in networks)
    return False


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        response = HttpResponse(
            "Metrics need 'Authorization: Bearer <METRICS_TOKEN>' or a client address in "
            "METRICS_ALLOWED_NETWORKS (docs/operations.md).\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
        if settings.METRICS_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
