"""Log context: the request id and the upload id on every log line, and JSON lines on demand.

- `RequestIdMiddleware` takes a sane `X-Request-ID` from the client (or its proxy) or makes one,
  puts it in `request_id` for the length of the request and returns it in the response.
- `bind_upload(id)` / `upload_context(id)`: the upload a flow is about (services and actors).
- `JobLogContext` (Dramatiq middleware): a job's lines carry the request id that enqueued it.
- `ContextFilter` (installed on the handlers by `settings.LOGGING`) copies both onto every
  record, so the plain format and the JSON format (`LOG_FORMAT=json`, python-json-logger) show
  them, and blanks any configured secret that would reach a line.
- `BatchingStreamHandler` (the console handler): lines are formatted where they are logged and
  written in batches by a writer thread, off the request path; warnings and errors at once.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import os
import re
import select
import sys
import threading
import time
import traceback
import uuid
import weakref
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
            for secret in secrets:
                message = message.replace(secret, REDACTED)
            # The formatted message stays on the record: the formatter's getMessage() then
            # returns it without formatting the arguments a second time.
            record.msg, record.args = message, None
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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines are written in batches by one writer thread per process.

    Why: in a threaded gunicorn worker, every line written by the request thread is a system
    call under the handler's lock with the GIL released, and the worker's other threads queue
    behind it: presign's one INFO line cost 5-8 % of a worker's requests per second
    (docs/performance.md). The stdlib's QueueHandler/QueueListener move the write to another
    thread but still make one write, and one wake-up of that thread, per line.

    - A line is formatted in the thread that logs it (its request's context, its exception),
      then queued: no system call, no lock shared with the writer.
    - The writer thread wakes every `interval` seconds (sooner once `capacity` lines wait) and
      writes what is queued in chunks of at most PIPE_BUF bytes cut at line ends, so a pipe
      shared by several workers still receives whole lines, as with one write per line.
    - A record at `flush_level` or above (WARNING) is written at once by the thread that logs
      it, after every line queued before it: problems reach the log without delay, in order.
    - `flush()` writes what is queued; logging.shutdown calls it at exit (gunicorn's workers
      exit through sys.exit, graceful or quick). Lines queued when a process is killed
      (SIGKILL) are lost: at most `interval` seconds of INFO lines.
    - fork: the child drops the lines its parent had queued (the parent writes them) and starts
      its own writer on its first line; the writer never holds its lock across a fork.
    - `interval` 0: every line is written at once, as logging.StreamHandler does.
    """

    def __init__(
        self,
        stream: Any = None,
        interval: float = 0.1,
        capacity: int = 1000,
        flush_level: int | str = logging.WARNING,
    ) -> None:
        super().__init__(stream)
        self.interval = float(interval)
        self.capacity = int(capacity)
        self.flush_level = logging._checkLevel(flush_level)  # type: ignore[attr-defined]
        self._reset()
        _batching_handlers.add(self)

    def _reset(self) -> None:
        self._queue: collections.deque[str] = collections.deque()
        # Whoever writes to the stream holds it. Taken after the handler's own lock, never
        # before it (re-entered by setStream's flush).
        self._write_lock = threading.RLock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        if self.interval <= 0 or self._closed or record.levelno >= self.flush_level:
            with self._write_lock:
                self._queue.append(line)
                self._write_queued()
            return
        queue = self._queue
        queue.append(line)  # deque.append is atomic: no lock on the request path
        if self._writer is None:
            self._start_writer()
        elif len(queue) >= self.capacity:
            if len(queue) >= 4 * self.capacity:  # the stream is not keeping up: wait for it
                with self._write_lock:
                    self._write_queued()
            else:
                self._wake.set()

    def _start_writer(self) -> None:
        with self._write_lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=_write_batches,
                    args=(weakref.ref(self), self._wake),
                    name="log-writer",
                    daemon=True,
                )
                self._writer.start()

    def _write_queued(self) -> None:
        """Write every queued line; the caller holds `_write_lock`."""
        queue = self._queue
        if not queue:
            return
        chunk: list[str] = []
        size = 0
        try:
            while queue:
                line = queue.popleft()
                length = len(line) if line.isascii() else len(line.encode("utf-8", "replace"))
                if chunk and size + length > select.PIPE_BUF:
                    self._write_chunk(chunk)
                    chunk, size = [], 0
                chunk.append(line)
                size += length
            self._write_chunk(chunk)
        except Exception:
            # As Handler.handleError does: a broken stream is reported (if it can be), never
            # raised into the code that logged, nor allowed to end the writer thread.
            if logging.raiseExceptions and sys.stderr:
                with contextlib.suppress(Exception):
                    traceback.print_exc(file=sys.stderr)

    def _write_chunk(self, chunk: list[str]) -> None:
        self.stream.write("".join(chunk))
        self.stream.flush()  # one write per chunk, whatever the stream's own buffering

    def flush(self) -> None:
        with self._write_lock:
            self._write_queued()
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def setStream(self, stream: Any) -> Any:
        with self.lock or contextlib.nullcontext(), self._write_lock:
            return super().setStream(stream)  # writes what was queued to the old stream

    def close(self) -> None:
        self.flush()
        self._closed = True  # lines logged after close are written at once
        self._wake.set()
        super().close()


def _write_batches(ref: weakref.ref[BatchingStreamHandler], wake: threading.Event) -> None:
    """The writer thread's loop; it ends with its handler (closed or collected)."""
    while True:
        handler = ref()
        if handler is None or handler._closed:
            return
        interval = handler.interval
        del handler  # not kept alive by a sleeping writer
        wake.wait(interval)
        wake.clear()
        handler = ref()
        if handler is None:
            return
        with handler._write_lock:
            handler._write_queued()


_batching_handlers: weakref.WeakSet[BatchingStreamHandler] = weakref.WeakSet()
_held_across_fork: list[threading.RLock] = []


def _before_fork() -> None:
    # No writer is mid-write when the process forks (the child would inherit a held lock,
    # its stream's included).
    for handler in list(_batching_handlers):
        handler._write_lock.acquire()
        _held_across_fork.append(handler._write_lock)


def _after_fork_in_parent() -> None:
    while _held_across_fork:
        _held_across_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_across_fork.clear()
    for handler in list(_batching_handlers):
        closed = handler._closed
        handler._reset()
        handler._closed = closed


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
