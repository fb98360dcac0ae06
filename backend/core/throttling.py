"""DRF's rate throttles with their state in Redis, one round trip per check.

DRF's `SimpleRateThrottle` keeps a pickled list of request timestamps per key in the cache and
reads and rewrites the whole list on every request (two round trips, and work that grows with the
rate). Here the same sliding window lives in a Redis sorted set, moved by one Lua script:
drop the timestamps older than the window, count, refuse or add. The behaviour is DRF's, to the
request: the same rates and scopes, the same cache keys, the same `wait()` (hence the same
Retry-After). Without THROTTLE_REDIS_URL (development, the test settings) DRF's own cache-based
implementation runs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import threading
from typing import Any

from django.conf import settings
from rest_framework import throttling
from rest_framework.request import Request

# KEYS[1] the throttle key; ARGV: now, window (s), limit, a unique member.
# Returns {allowed (0/1), entries in the window (after adding when allowed), oldest timestamp}.
_SLIDING_WINDOW = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - duration)
local count = redis.call('ZCARD', key)
if count >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, count, oldest[2] or ''}
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, math.ceil(duration * 1000))
return {1, count + 1, ''}
"""


class _SlidingWindow:
    """The script on one Redis connection per thread of this process.

    A check is the hot path of every throttled endpoint: the script's EVALSHA is packed and sent
    on the thread's own connection and its reply read (hiredis), without redis-py's client layer
    (connection pool checkout, retry wrapper, command dispatch), which cost two thirds of the
    client's user CPU per check (27 -> 10 us measured; docs/performance.md). The connections
    come from a redis-py pool built from THROTTLE_REDIS_URL, so every URL form (TLS, unix
    socket, password, db) works as elsewhere."""

    def __init__(self, url: str, timeout: float) -> None:
        import redis

        self.url = url
        self.pid = os.getpid()
        self._pool = redis.ConnectionPool.from_url(url, socket_timeout=timeout)
        self._local = threading.local()
        self._sha = hashlib.sha1(_SLIDING_WINDOW.encode(), usedforsecurity=False).hexdigest()
        # Members only need to be unique within one key: this process's prefix and a counter.
        self._prefix = f"{self.pid:x}.{secrets.token_hex(4)}."
        self._counter = itertools.count()

    def serves(self, url: str) -> bool:
        """Whether this window is the current process's, on `url` (not inherited by a fork)."""
        return self.url == url and self.pid == os.getpid()

    def member(self, now: float) -> str:
        return f"{now!r}:{self._prefix}{next(self._counter)}"

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # Built from the pool's settings, not checked out of it: a thread's connection closes
            # with the thread (servers that start a thread per request, like runserver), and the
            # pool's cap on connections it made would count the dead ones forever.
            connection = self._pool.connection_class(**self._pool.connection_kwargs)
            self._local.connection = connection
        return connection

    def __call__(self, key: str, *args: Any) -> Any:
        from redis.exceptions import ConnectionError, NoScriptError

        connection = self._connection()
        command = connection.pack_command("EVALSHA", self._sha, 1, key, *args)
        reconnected = False
        for _ in range(3):  # worst case: a stale connection, then a Redis without the script
            try:
                connection.send_packed_command(command, check_health=False)
                return connection.read_response()
            except NoScriptError:
                # Redis restarted or flushed its scripts: load it, then run it.
                connection.send_command("SCRIPT", "LOAD", _SLIDING_WINDOW)
                connection.read_response()
            except ConnectionError:
                # A connection gone stale (Redis restarted, an idle timeout): one fresh try,
                # as redis-py's client retries. Timeouts are not retried: they would multiply.
                connection.disconnect()
                if reconnected:
                    raise
                reconnected = True
            except BaseException:
                # A half-read reply would answer the next check: start that one afresh.
                connection.disconnect()
                raise
        raise NoScriptError("the throttle script could not be loaded")


_lock = threading.Lock()
_window: _SlidingWindow | None = None


def _sliding_window() -> _SlidingWindow:
    """This process's window on THROTTLE_REDIS_URL (made again after a fork or a new URL)."""
    global _window
    url = settings.THROTTLE_REDIS_URL
    window = _window
    if window is not None and window.serves(url):
        return window
    with _lock:
        if _window is None or not _window.serves(url):
            _window = _SlidingWindow(url, settings.THROTTLE_REDIS_TIMEOUT_SECONDS)
        return _window


class SimpleRateThrottle(throttling.SimpleRateThrottle):
    """SimpleRateThrottle's `allow_request` on the Redis sorted set (`wait` is DRF's, fed the
    window's length and oldest timestamp). Base for throttles with their own get_cache_key."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if not settings.THROTTLE_REDIS_URL:
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window = _sliding_window()
        allowed, count, oldest = window(
            settings.THROTTLE_KEY_PREFIX + key,
            repr(self.now),
            # DRF sets both from the rate in __init__ / ScopedRateThrottle.allow_request.
            self.duration,  # type: ignore[attr-defined]
            self.num_requests,  # type: ignore[attr-defined]
            window.member(self.now),
        )
        if allowed:
            # DRF reads the history only in wait(), which runs for a refused request alone.
            self.history = []
            return True
        # What DRF's wait() reads: the window's length and its oldest timestamp (DRF keeps
        # the list newest first, so history[-1] is the oldest).
        oldest_at = float(oldest) if oldest not in (b"", "", None) else self.now
        self.history = [oldest_at] * int(count)
        return False


class ScopedRateThrottle(throttling.ScopedRateThrottle, SimpleRateThrottle):
    """DRF's ScopedRateThrottle (view.throttle_scope; it sets the rate, then calls the
    Redis `allow_request` above), state in Redis."""
