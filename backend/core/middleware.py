"""Middleware of the core app."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from backend.core.errors import dependency_error, unavailable_response


class DependencyErrorMiddleware:
    """A database or cache outage raised by a view answers 503 + Retry-After, never a 500.

    Covers every plain Django view (admin, demo, webhooks, health); DRF views map the same
    errors in `api_exception_handler`. Errors raised by other middleware (a session save)
    reach `backend.core.views.server_error` (handler500), which answers the same way."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        mapped = dependency_error(exception)
        return unavailable_response(request, mapped) if mapped is not None else None
