"""Log context: the request id and the upload id on every log line, and JSON lines on demand.

- `RequestIdMiddleware` takes a sane `X-Request-ID` from the client (or its proxy) or makes one,
  puts it in `request_id` for the length of the request and returns it in the response.
- `bind_upload(id)` / `upload_context(id)`: the upload a flow is about (services and actors).
- `JobLogContext` (Dramatiq middleware): a job's lines carry the request id that enqueued it.
- `ContextFilter` (installed on the handlers by `settings.LOGGING`) copies both onto every
  record, so the plain format and the JSON format (`LOG_FORMAT=json`, python-json-logger) show
  them, and blanks any configured secret that would reach a line.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
upload_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("upload_id", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
#: What a client-sent id may look like (a UUID, a proxy's trace id); anything else is replaced.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}$")
REDACTED = "[redacted]"
#: Settings whose values never appear in a log line (replaced by REDACTED if they would).
SECRET_SETTINGS = (
    "SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "CLOUDINARY_API_SECRET",
    "METRICS_TOKEN",
)
#: Shorter values are not worth hunting for (and would blank ordinary words).
MIN_SECRET_LENGTH = 8


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    return value if value and SANE_REQUEST_ID.match(value) else None


def bind_upload(value: object) -> None:
    """The rest of this request (or job) is about upload `value` (reset when the request ends)."""
    upload_id.set(str(value) if value else None)


@contextmanager
def upload_context(value: object) -> Iterator[None]:
    """Lines logged inside are about upload `value`; the previous value comes back after."""
    token = upload_id.set(str(value) if value else None)
    try:
        yield
    finally:
        upload_id.reset(token)


class RequestIdMiddleware:
    """First middleware: every line logged for a request carries its id; the response too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        # Set, not reset here: Django logs a 4xx/5xx ("Not Found: /x") after the middleware
        # chain returned; request_finished (below) clears both when the response is closed.
        request_id.set(rid)
        upload_id.set(None)
        request.request_id = rid  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response


def _clear(**kwargs: Any) -> None:
    request_id.set(None)
    upload_id.set(None)


request_finished.connect(_clear, dispatch_uid="backend-core-logs-clear")


def _secret_values() -> list[str]:
    from django.conf import settings

    values = []
    for name in SECRET_SETTINGS:
        value = str(getattr(settings, name, "") or "")
        if len(value) >= MIN_SECRET_LENGTH:
            values.append(value)
    url = str(getattr(settings, "CLOUDINARY_URL", "") or "")
    match = re.match(r"^cloudinary://[^:]+:([^@]+)@", url)
    if match and len(match.group(1)) >= MIN_SECRET_LENGTH:
        values.append(match.group(1))
    return sorted(set(values), key=len, reverse=True)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `upload_id` to every record; blanks configured secrets."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._secrets: list[str] | None = None

    def _known_secrets(self) -> list[str]:
        if self._secrets is None:
            try:
                self._secrets = _secret_values()
            except Exception:  # settings not ready (a line logged while they load)
                return []
        return self._secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "upload_id"):
            record.upload_id = upload_id.get()
        secrets = self._known_secrets()
        if secrets:
            message = record.getMessage()
            cleaned = message
            for secret in secrets:
                cleaned = cleaned.replace(secret, REDACTED)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


class JobLogContext(dramatiq.Middleware):
    """Dramatiq middleware: a job's lines carry the request id of the request that enqueued it.

    The id travels in the message's options; a job enqueued outside a request carries none.
    Upload ids are set by the actor itself (`upload_context`)."""

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        rid = request_id.get()
        if rid and "request_id" not in message.options:
            message.options["request_id"] = rid

    def before_process_message(self, broker: Any, message: Any) -> None:
        request_id.set(sane_request_id(message.options.get("request_id")))
        upload_id.set(None)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        request_id.set(None)
        upload_id.set(None)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        request_id.set(None)
        upload_id.set(None)


class PlainFormatter(logging.Formatter):
    """The plain text format, with `-` for a request id or upload id that is not set."""

    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        shown = {name: getattr(record, name, None) for name in ("request_id", "upload_id")}
        if None not in shown.values():  # a request's lines: both set
            return super().format(record)
        for name, value in shown.items():
            setattr(record, name, "-" if value is None else value)
        try:
            return super().format(record)
        finally:
            for name, value in shown.items():
                setattr(record, name, value)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own `asctime`, with the seconds part formatted once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        msec_format = self.default_msec_format
        return msec_format % (cached[1], record.msecs) if msec_format else cached[1]
