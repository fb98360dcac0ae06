"""Health endpoint for load balancers (database and cache reachable), and the 404 handler."""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found

from backend.core.errors import error_body


def health(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        cache.set("healthz", "1", 5)
        checks["cache"] = "ok" if cache.get("healthz") == "1" else "error: read back failed"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status=200 if ok else 503
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for a URL no route matches: the API's JSON error shape under /api/, Django's page
    elsewhere (a client of the API never gets HTML)."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            error_body("not_found", f"No API endpoint at {request.path}; see /api/docs/."),
            status=404,
        )
    return page_not_found(request, exception)
