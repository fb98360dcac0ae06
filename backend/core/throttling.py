"""DRF's rate throttles with their state in Redis, one round trip per check.

DRF's `SimpleRateThrottle` keeps a pickled list of request timestamps per key in the cache and
reads and rewrites the whole list on every request (two round trips, and work that grows with the
rate). Here the same list lives in Redis, moved by one Lua script: drop the timestamps older than
the window from its tail, count, refuse or push. The behaviour is DRF's, to the request: the same
rates and scopes, the same cache keys (under `<THROTTLE_KEY_PREFIX>window:`), the same list (newest
first, trimmed from the oldest end while it is outside the window), the same `wait()` (hence the
same Retry-After). Without THROTTLE_REDIS_URL (development, the test settings) DRF's own
cache-based implementation runs.

A view may also *defer* its check (`defer`) to the moment its work is admitted, so that another
script (the upload quotas, backend/uploads/quotas.py) runs the window check in the same round
trip: the Lua functions below are shared by both scripts.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from hiredis import pack_command as _pack  # redis[hiredis] (pyproject.toml)
from rest_framework import exceptions, throttling
from rest_framework.request import Request

# The sliding window as Lua functions, for every script that checks a window, on a Redis list
# of timestamps, newest first, as DRF keeps its history: `window_count` drops the oldest while
# they are outside the window (DRF's `while history[-1] <= now - duration: pop()`, 128 at a time)
# and counts the rest, `window_add` pushes one. A list, not a sorted set: a push is O(1) and needs
# no unique member, the reservation script costs Redis about a third less CPU, and a window takes
# a sixth of the memory (docs/performance.md).
WINDOW_FUNCTIONS = """
local function window_count(key, now, duration)
  local cutoff = now - duration
  local oldest = redis.call('LINDEX', key, -1)
  while oldest and tonumber(oldest) <= cutoff do
    local tail = redis.call('LRANGE', key, -128, -1)
    local expired = 0
    for i = #tail, 1, -1 do
      if tonumber(tail[i]) > cutoff then break end
      expired = expired + 1
    end
    redis.call('LTRIM', key, 0, -1 - expired)
    oldest = expired == #tail and redis.call('LINDEX', key, -1)
  end
  return redis.call('LLEN', key)
end
local function window_oldest(key)
  return redis.call('LINDEX', key, -1) or ''
end
local function window_add(key, now, duration)
  redis.call('LPUSH', key, now)
  redis.call('PEXPIRE', key, math.ceil(duration * 1000))
end
"""


class Script:
    """A Lua script run by EVALSHA (loaded on first use, and again after a Redis restart)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


# KEYS[1] the throttle key; ARGV: now, window (s), limit.
# Returns {allowed (0/1), entries in the window (after adding when allowed), oldest timestamp}.
SLIDING_WINDOW = Script(
    WINDOW_FUNCTIONS
    + """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local count = window_count(key, now, duration)
if count >= tonumber(ARGV[3]) then
  return {0, count, window_oldest(key)}
end
window_add(key, ARGV[1], duration)
return {1, count + 1, ''}
"""
)


class RedisScripts:
    """Scripts on one Redis connection per thread of this process.

    A check is the hot path of every throttled endpoint: the EVALSHA is packed and sent on the
    thread's own connection and its reply read (hiredis), without redis-py's client layer
    (connection pool checkout, retry wrapper, command dispatch), which cost two thirds of the
    client's user CPU per check (27 -> 10 us measured; docs/performance.md). The connections
    come from a redis-py pool built from THROTTLE_REDIS_URL, so every URL form (TLS, unix
    socket, password, db) works as elsewhere. `send` and `Sent.result` split a call in two, so
    the caller can work while Redis answers.

    Once connected, a TCP or unix socket keeps its timeout in the kernel (SO_RCVTIMEO and
    SO_SNDTIMEO) and is blocking for Python: CPython polls before every send and receive on a
    socket with a Python timeout, two system calls and two releases of the GIL where one does
    (in a threaded worker each release hands the core to another thread). A kernel timeout
    surfaces as EAGAIN, which redis-py reports as a ConnectionError; it is raised here as the
    TimeoutError it is, so that a script Redis may still run is never sent twice."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis

        self.url = url
        self.pid = os.getpid()
        self._pool = redis.ConnectionPool.from_url(url, socket_timeout=timeout)
        self._local = threading.local()

    def serves(self, url: str) -> bool:
        """Whether these scripts are on `url` (a forked child never sees its parent's: below)."""
        return self.url == url

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # Built from the pool's settings, not checked out of it: a thread's connection closes
            # with the thread (servers that start a thread per request, like runserver), and the
            # pool's cap on connections it made would count the dead ones forever.
            connection = self._pool.connection_class(**self._pool.connection_kwargs)
            self._local.connection = connection
        return connection

    def send(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Sent:
        """Send the EVALSHA; `result()` of the answer reads the reply. One call at a time per
        thread: read a reply before sending the next call."""
        from redis.exceptions import ConnectionError

        connection = self._connection()
        # hiredis's packer itself (redis-py's wrapper walks the arguments in Python first);
        # every argument here is a str, int or float.
        command = [_pack(("EVALSHA", script.sha, len(keys), *keys, *args))]
        try:
            connect(connection)
            connection.send_packed_command(command, check_health=False)
        except ConnectionError as exc:
            raise_if_timed_out(connection, exc)
            # A connection gone stale (Redis restarted, an idle timeout): one fresh try, as
            # redis-py's client retries. Timeouts are not retried: they would multiply.
            connection.disconnect()
            return Sent(connection, script, command, retried=True, failed=True)
        except BaseException:
            connection.disconnect()
            raise
        return Sent(connection, script, command, retried=False, failed=False)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.send(script, keys, args).result()


class Sent:
    """One script call sent and not yet read."""

    def __init__(
        self,
        connection: Any,
        script: Script,
        command: Any,
        *,
        retried: bool,
        failed: bool,
    ) -> None:
        self._connection = connection
        self._script = script
        self._command = command
        self._retried = retried
        self._failed = failed
        self._done = False
        self._reply: Any = None

    def result(self) -> Any:
        """The script's reply (read once; later calls return the same)."""
        if not self._done:
            self._reply = self._read()
            self._done = True
        return self._reply

    def _read(self) -> Any:
        from redis.exceptions import ConnectionError, NoScriptError

        connection = self._connection
        for _ in range(3):  # worst case: a stale connection, then a Redis without the script
            try:
                if self._failed:
                    self._failed = False
                    connect(connection)
                    connection.send_packed_command(self._command, check_health=False)
                return connection.read_response()
            except NoScriptError:
                # Redis restarted or flushed its scripts: load it, then run it.
                connection.send_command("SCRIPT", "LOAD", self._script.text)
                connection.read_response()
                self._failed = True
            except ConnectionError as exc:
                raise_if_timed_out(connection, exc)
                connection.disconnect()
                if self._retried:
                    raise
                self._retried = True
                self._failed = True
            except BaseException:
                # A half-read reply would answer the next call: start that one afresh.
                connection.disconnect()
                raise
        raise NoScriptError("the script could not be loaded")


def connect(connection: Any) -> None:
    """Connect (redis-py's handshake runs with Python's timeouts), then move the connection's
    `socket_timeout` into the kernel for a TCP or unix socket; a TLS socket keeps Python's (its
    reads are not one system call)."""
    if _socket_of(connection) is not None:
        return
    connection.connect()
    sock = _socket_of(connection)
    timeout = connection.socket_timeout
    if (
        not timeout
        or timeout <= 0
        or isinstance(sock, ssl.SSLSocket)
        or sock.family not in _KERNEL_TIMEOUT_FAMILIES
    ):
        return
    seconds = int(timeout)
    # A zeroed timeval means "never" to the kernel: at least a microsecond.
    microseconds = max(int((timeout - seconds) * 1_000_000), 0 if seconds else 1)
    timeval = struct.pack("ll", seconds, microseconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)


_KERNEL_TIMEOUT_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _socket_of(connection: Any) -> Any:
    return connection._sock  # redis-py's connected socket (None until connected)


def raise_if_timed_out(connection: Any, exc: BaseException) -> None:
    """A kernel timeout (EAGAIN on a blocking socket) reaches here as redis-py's ConnectionError:
    raise it as its TimeoutError, not retried (the script may have run, and a retry would double
    the wait)."""
    if isinstance(exc.__context__, BlockingIOError):
        from redis.exceptions import TimeoutError

        connection.disconnect()
        raise TimeoutError("Timeout on the Redis socket") from exc


_lock = threading.Lock()
_scripts: RedisScripts | None = None


def _forget_after_fork() -> None:
    """A forked child (a gunicorn worker of a preloading master) starts without its parent's
    sockets; an at-fork hook rather than a pid check per call (a system call per request)."""
    global _scripts, _lock
    _scripts, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def redis_scripts() -> RedisScripts:
    """This process's scripts on THROTTLE_REDIS_URL (made again in a forked child or for a new
    URL)."""
    global _scripts
    url = settings.THROTTLE_REDIS_URL
    scripts = _scripts
    if scripts is not None and scripts.serves(url):
        return scripts
    with _lock:
        if _scripts is None or not _scripts.serves(url):
            _scripts = RedisScripts(url, settings.THROTTLE_REDIS_TIMEOUT_SECONDS)
        return _scripts


@dataclass
class WindowCheck:
    """One request's sliding-window check, not yet run: the key and the script's arguments,
    and the throttle that reads the outcome (`wait()` for Retry-After)."""

    throttle: SimpleRateThrottle
    key: str
    now: float
    duration: int
    limit: int

    def args(self) -> tuple[Any, ...]:
        """ARGV for `window_count` / `window_add`: now, window (s), limit."""
        return (repr(self.now), self.duration, self.limit)

    def settle(self, allowed: Any, count: Any, oldest: Any) -> bool:
        """Record the script's outcome on the throttle, as DRF's allow_request leaves it."""
        if allowed:
            # DRF reads the history only in wait(), which runs for a refused request alone.
            self.throttle.history = []
            return True
        # What DRF's wait() reads: the window's length and its oldest timestamp (DRF keeps
        # the list newest first, so history[-1] is the oldest).
        oldest_at = float(oldest) if oldest not in (b"", "", None) else self.now
        self.throttle.history = [oldest_at] * int(count)
        return False

    def run(self) -> bool:
        """Run the check alone (the sliding-window script) and settle it."""
        allowed, count, oldest = redis_scripts().run(SLIDING_WINDOW, [self.key], self.args())
        return self.settle(allowed, count, oldest)


class SimpleRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's `allow_request` on the Redis list (`wait` is DRF's, fed the
    window's length and oldest timestamp). Base for throttles with their own get_cache_key."""

    def window_check(self, request: Request, view: Any) -> WindowCheck | None:
        """This request's check on Redis, or None when no rate applies to it."""
        if self.rate is None:
            return None
        key = self.get_cache_key(request, view)
        if key is None:
            return None
        self.now = self.timer()
        return WindowCheck(
            throttle=self,
            # Its own namespace: the sorted sets of earlier releases stay untouched (and expire).
            key=f"{settings.THROTTLE_KEY_PREFIX}window:{key}",
            now=self.now,
            # DRF sets both from the rate in __init__ / ScopedRateThrottle.allow_request.
            duration=self.duration,  # type: ignore[attr-defined]
            limit=self.num_requests,  # type: ignore[attr-defined]
        )

    def allow_request(self, request: Request, view: Any) -> bool:
        if not settings.THROTTLE_REDIS_URL:
            return super().allow_request(request, view)
        check = self.window_check(request, view)
        return True if check is None else check.run()


class ScopedRateThrottle(throttling.ScopedRateThrottle, SimpleRateThrottle):
    """DRF's ScopedRateThrottle (the rate from view.throttle_scope), state in Redis."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if not settings.THROTTLE_REDIS_URL:
            return super().allow_request(request, view)  # DRF's, on the cache
        return SimpleRateThrottle.allow_request(self, request, view)

    def window_check(self, request: Request, view: Any) -> WindowCheck | None:
        # What DRF's ScopedRateThrottle.allow_request does before its parent's check (a view
        # without a scope is not throttled).
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return None
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().window_check(request, view)


class DeferredThrottle:
    """A view's one Redis throttle check, taken out of DRF's `initial()`: run by the script
    that admits the request's work (the same round trip), or alone before any other answer,
    so that a request over its rate is still answered 429 first, as DRF answers it."""

    def __init__(self, check: WindowCheck | None) -> None:
        self.check = check
        self.settled = check is None

    def settle(self, allowed: Any, count: Any, oldest: Any) -> None:
        """The outcome of the window check another script ran; raises Throttled (429)."""
        self.settled = True
        assert self.check is not None
        if not self.check.settle(allowed, count, oldest):
            raise exceptions.Throttled(self.check.throttle.wait())

    def run_alone(self) -> None:
        """Run the check now if nothing ran it yet; raises Throttled (429)."""
        if self.settled:
            return
        self.settled = True
        check = self.check
        assert check is not None
        if not check.run():
            raise exceptions.Throttled(check.throttle.wait())


def defer(throttles: Sequence[Any], request: Request, view: Any) -> DeferredThrottle | None:
    """The view's throttles as one deferred check, or None when they cannot be deferred (not
    exactly one, not on Redis): the caller then runs DRF's check_throttles."""
    if not settings.THROTTLE_REDIS_URL or len(throttles) != 1:
        return None
    throttle = throttles[0]
    if not isinstance(throttle, SimpleRateThrottle):
        return None
    return DeferredThrottle(throttle.window_check(request, view))
