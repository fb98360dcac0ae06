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

import threading
import uuid
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

_lock = threading.Lock()
_script: Any = None
_script_url: str | None = None


def _sliding_window() -> Any:
    """The registered script on a process-wide client (redis-py's pool is fork-safe)."""
    global _script, _script_url
    url = settings.THROTTLE_REDIS_URL
    if _script is not None and _script_url == url:
        return _script
    with _lock:
        if _script is None or _script_url != url:
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=settings.THROTTLE_REDIS_TIMEOUT_SECONDS
            )
            _script = client.register_script(_SLIDING_WINDOW)
            _script_url = url
        return _script


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
        member = f"{self.now!r}:{uuid.uuid4().hex[:12]}"
        allowed, count, oldest = _sliding_window()(
            keys=[settings.THROTTLE_KEY_PREFIX + key],
            # DRF sets both from the rate in __init__ / ScopedRateThrottle.allow_request.
            args=[repr(self.now), self.duration, self.num_requests, member],  # type: ignore[attr-defined]
        )
        # What DRF's wait() reads: the window's length and its oldest timestamp (DRF keeps
        # the list newest first, so history[-1] is the oldest).
        oldest_at = float(oldest) if oldest not in (b"", "", None) else self.now
        self.history = [oldest_at] * int(count)
        return bool(allowed)


class ScopedRateThrottle(throttling.ScopedRateThrottle, SimpleRateThrottle):
    """DRF's ScopedRateThrottle (view.throttle_scope; it sets the rate, then calls the
    Redis `allow_request` above), state in Redis."""
