"""Health endpoints and the project's error handlers.

- `/healthz` (liveness): the process answers. No dependency is touched, so a database or
  provider outage never gets healthy processes restarted.
- `/readyz` (readiness): database, cache and broker answer (503 otherwise), plus each
  provider's circuit breaker state (reported, never failing readiness: see core/health.py).
- handler500 & co: an API path always answers the JSON error shape; a database or cache outage
  answers 503 + Retry-After wherever it surfaces.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from backend.core import health
from backend.core.errors import dependency_error, error_body, unavailable_response, wants_json


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    ready, checks = health.readiness()
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: called while the uncaught exception is being handled (sys.exc_info)."""
    mapped = dependency_error(sys.exc_info()[1])
    if mapped is not None:
        return unavailable_response(request, mapped)
    if wants_json(request):
        return JsonResponse(
            error_body("server_error", "Internal server error; it has been logged."), status=500
        )
    return defaults.server_error(request)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(
            error_body("not_found", f"No API endpoint at {request.path}; see /api/docs/."),
            status=404,
        )
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(error_body("bad_request", "Bad request."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)
    return defaults.permission_denied(request, exception)
