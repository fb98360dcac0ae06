"""Errors a caller can act on, and the one JSON shape the API renders them in.

Every error body is `{"error": {"code": str, "message": str, "details": {...}}}`; the services raise
`ApplicationError` subclasses and never build HTTP responses themselves.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of every error a service raises on purpose. `code` is stable and documented."""

    status_code = 400
    code = "invalid_request"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}


class ValidationFailed(ApplicationError):
    status_code = 400
    code = "validation_failed"


class NotSupported(ApplicationError):
    """The chosen provider cannot do what was asked (e.g. Cloudinary and S3 multipart)."""

    status_code = 400
    code = "not_supported"


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"


class Gone(ApplicationError):
    status_code = 410
    code = "gone"


class QuotaExceeded(ApplicationError):
    status_code = 429
    code = "quota_exceeded"


class ServiceUnavailable(ApplicationError):
    """A dependency is not usable right now; the client should retry after `retry_after` s."""

    status_code = 503
    code = "service_unavailable"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int = 30,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class StorageUnavailable(ServiceUnavailable):
    """No storage provider is configured (or the chosen one cannot be built)."""

    code = "storage_unavailable"


class ProviderUnavailable(ServiceUnavailable):
    """The provider did not answer usefully (network error, 5xx, throttling)."""

    code = "provider_unavailable"


class DependencyUnavailable(ServiceUnavailable):
    """The database or the cache cannot be reached (down, black-holed, out of connections)."""

    code = "dependency_unavailable"


#: Retry-After of a dependency outage: short, since most are a failover or a restart.
DEPENDENCY_RETRY_AFTER = 10


def dependency_error(exc: BaseException | None) -> DependencyUnavailable | None:
    """The 503 a database or cache outage becomes; None for any other exception.

    OperationalError / InterfaceError are the connection-level database errors (refused,
    timed out, "too many clients", connection lost); IntegrityError and friends are bugs or
    races and stay what they are. The client learns which dependency, never why."""
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        which = "database"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        logger.warning("cache unavailable: %s: %s", type(exc).__name__, exc)
        which = "cache"
    else:
        return None
    return DependencyUnavailable(
        f"The service's {which} is unavailable; retry later.",
        code=f"{which}_unavailable",
        retry_after=DEPENDENCY_RETRY_AFTER,
    )


def wants_json(request: HttpRequest) -> bool:
    """API routes (and webhooks, under /api/) always answer in the JSON error shape."""
    return request.path.startswith("/api/")


def unavailable_response(request: HttpRequest, exc: ServiceUnavailable) -> HttpResponse:
    """503 + Retry-After: the error shape for the API, a plain page for admin and demo."""
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(error_body(exc.code, exc.message, exc.details), status=503)
    else:
        response = HttpResponse(
            f"{exc.message}\n", status=503, content_type="text/plain; charset=utf-8"
        )
    response["Retry-After"] = str(exc.retry_after)
    return response


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail: Any, path: str, out: dict[str, list[str]]) -> None:
    """DRF's nested error details (fields, list items, nested serializers) as
    `{"field.0.sub": ["message", ...]}`: plain strings, never Python reprs."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            _flatten(value, f"{path}.{key}" if path else str(key), out)
    elif isinstance(detail, list) and any(isinstance(d, dict | list) for d in detail):
        for index, value in enumerate(detail):
            if value:  # DRF puts {} for list items without errors
                _flatten(value, f"{path}.{index}" if path else str(index), out)
    elif isinstance(detail, list):
        out.setdefault(path, []).extend(str(d) for d in detail)
    else:
        out.setdefault(path, []).append(str(detail))


def _drf_details(exc: drf_exceptions.APIException) -> tuple[str, dict[str, Any]]:
    detail = exc.detail
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        _flatten(detail, "", fields)
        parts = [f"{k}: {' '.join(v)}" for k, v in fields.items()]
        return "; ".join(parts) or str(exc.default_detail), {"fields": fields}
    if isinstance(detail, list):
        return " ".join(str(d) for d in detail), {}
    return str(detail), {}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: ApplicationError and DRF's own errors in one JSON shape."""
    # Token and session authentication query the database inside DRF: an outage surfaces here.
    exc = dependency_error(exc) or exc
    request = context.get("request")
    if request is not None:
        # Errors are JSON whatever the view renders on success (the schema view's YAML, the
        # browsable API's HTML): DRF renders this response with the request's renderer.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = "application/json"
    if isinstance(exc, ApplicationError):
        headers = {}
        if isinstance(exc, ServiceUnavailable):
            headers["Retry-After"] = str(exc.retry_after)
            logger.warning("503 %s: %s", exc.code, exc.message)
        return Response(
            error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=headers
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, drf_exceptions.APIException):
        return response
    message, details = _drf_details(exc)
    code = exc.get_codes() if not isinstance(exc.detail, dict | list) else exc.default_code
    if isinstance(exc, drf_exceptions.ValidationError):
        code = "validation_failed"
    response.data = error_body(str(code), message, details)
    return response
