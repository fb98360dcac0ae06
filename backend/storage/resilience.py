"""Bounds on every network call to a storage provider: a deadline, a concurrency limit and a
circuit breaker shared by all processes.

A provider service runs each SDK call through its `ProviderGuard`:

    with guard.calling("inspect (HeadObject)") as run:
        head = run(client.head_object, Bucket=bucket, Key=key)

- **Deadline.** `run` executes the call on a small per-provider thread pool and waits at most
  `PROVIDER_DEADLINE_SECONDS` (D) for it, whatever the peer does: hang, answer late, or trickle
  bytes so that every single socket read succeeds and no per-read timeout ever fires. The caller
  then gets `ProviderTimeout`. The SDKs are configured from the same D (`budget()`) so that their
  own worst case (every attempt, connect + reads, backoff) fits D for a peer that stops sending;
  only a trickling peer outlives D, in a pool thread whose slot stays taken (next point) until
  the SDK gives up.
- **Concurrency.** At most `PROVIDER_MAX_CONCURRENCY` calls per provider and per process are in
  flight; a slot is held until the SDK call really returns, also after its caller gave up.
  Beyond that a call raises `ProviderBusy` at once instead of queueing, so a hung provider ties
  up a bounded share of a process's threads and `/healthz`, list and detail keep answering.
- **Breaker** (pybreaker, its state in Redis, so every process shares it). After
  `PROVIDER_BREAKER_FAILURES` consecutive failures (timeouts, connection errors, 5xx,
  throttling: what the provider's `is_failure` says), the breaker opens: for
  `PROVIDER_BREAKER_COOLDOWN_SECONDS` every call raises `CircuitOpen` without touching the
  network, with the time left as Retry-After. Then exactly one call across all processes goes
  through as the trial (a Redis `SET NX` lock; pybreaker alone would let every caller in while
  half-open): success closes the breaker, failure opens it again. Client-caused answers (a 404
  on a HEAD, a multipart rejection) count as the provider answering, never as failures.

pybreaker's `CircuitBreaker.call` holds a per-breaker lock for the whole call, which would
serialise every call of a process; `calling()` (used here) does not.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker
import redis
import urllib3
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# --- the deadline arithmetic ------------------------------------------------------------------

#: Connect timeout per attempt, at most (a provider's TCP handshake takes milliseconds).
CONNECT_TIMEOUT_CAP = 2.0
#: botocore's "standard" retry mode sleeps rand(0, 1) * min(base * 2**(attempt - 1), 20) s
#: between attempts, base 1 s after a throttling answer (50 ms otherwise): 1 s covers one retry.
S3_BACKOFF_ALLOWANCE = 1.0
#: Below this deadline a retry does not fit next to a useful read timeout: one attempt.
S3_RETRY_FROM_DEADLINE = 5.0
#: The Cloudinary SDK's urllib3 pool retries connect and read errors 3 times (urllib3's default
#: `Retry(3)`, which the SDK does not let a caller change; no backoff): 4 attempts.
CLOUDINARY_API_ATTEMPTS = 4


@dataclass(frozen=True)
class Budget:
    """The SDK timeouts that fit one deadline. See `budget()` and docs/operations.md."""

    deadline: float
    connect: float
    s3_attempts: int
    s3_read: float
    #: urllib3 `Timeout(total=...)` of one Cloudinary Admin API attempt.
    cloudinary_api_attempt: float
    #: Delivery-URL reads (our requests session, no retries): one connect + reads.
    delivery_read: float

    def s3_worst_case(self) -> float:
        backoff = (self.s3_attempts - 1) * S3_BACKOFF_ALLOWANCE
        return self.s3_attempts * (self.connect + self.s3_read) + backoff

    def cloudinary_api_worst_case(self) -> float:
        return CLOUDINARY_API_ATTEMPTS * self.cloudinary_api_attempt

    def delivery_worst_case(self) -> float:
        return self.connect + self.delivery_read


def budget(deadline: float | None = None) -> Budget:
    """The SDK settings whose worst case (a peer that stops sending) fits `deadline`."""
    return _budget(float(settings.PROVIDER_DEADLINE_SECONDS if deadline is None else deadline))


@functools.lru_cache(maxsize=64)
def _budget(d: float) -> Budget:
    # Cached: S3 looks its client up by the budget on every call, presigns included.
    connect = min(CONNECT_TIMEOUT_CAP, d / 5)
    attempts = 2 if d >= S3_RETRY_FROM_DEADLINE else 1
    s3_read = (d - (attempts - 1) * S3_BACKOFF_ALLOWANCE) / attempts - connect
    return Budget(
        deadline=d,
        connect=round(connect, 3),
        s3_attempts=attempts,
        s3_read=round(s3_read, 3),
        cloudinary_api_attempt=round(d / CLOUDINARY_API_ATTEMPTS, 3),
        delivery_read=round(d - connect, 3),
    )


def botocore_timeouts(budget: Budget) -> dict[str, Any]:
    """The botocore `Config` arguments of a budget (S3, and SNS for the webhook)."""
    return {
        "connect_timeout": budget.connect,
        "read_timeout": budget.s3_read,
        "retries": {"total_max_attempts": budget.s3_attempts, "mode": "standard"},
    }


def urllib3_timeout(budget: Budget) -> urllib3.Timeout:
    """The Cloudinary SDK's `timeout`: one Admin API attempt, connect and reads together."""
    attempt = budget.cloudinary_api_attempt
    return urllib3.Timeout(connect=min(budget.connect, attempt / 2), read=attempt, total=attempt)


# --- what a guarded call can answer instead of the provider ------------------------------------


class Refused(Exception):
    """The guard answered instead of the provider. `code` goes into the API error details."""

    code = "provider_refused"

    def __init__(self, provider: str, operation: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.provider = provider
        self.operation = operation
        self.retry_after = max(1, int(retry_after))


class CircuitOpen(Refused):
    code = "circuit_open"


class ProviderBusy(Refused):
    code = "provider_busy"


class ProviderTimeout(Refused):
    code = "provider_timeout"


# --- shared pieces, built lazily per process ----------------------------------------------------

_lock = threading.Lock()
_redis_clients: dict[tuple[int, str], redis.Redis] = {}


class _BreakerLog(pybreaker.CircuitBreakerListener):
    """One log line per state change of a breaker (what to alert on), not one per call."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None)
        if old is None or old == new_state.name:
            return
        level = logging.WARNING if new_state.name == pybreaker.STATE_OPEN else logging.INFO
        logger.log(level, "circuit breaker %s: %s -> %s", cb.name, old, new_state.name)


def _redis(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    client = _redis_clients.get(key)
    if client is None:
        with _lock:
            client = _redis_clients.get(key)
            if client is None:
                # Short socket timeouts: a dead Redis must not become the new hang. pybreaker
                # then falls back to "closed" (provider calls go on, unprotected).
                client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
                _redis_clients[key] = client
    return client


class _RedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, except that Redis being down when a breaker is built is
    survivable (pybreaker handles RedisError on every later access, not in its constructor)."""

    def _initialize_redis_state(self, state: str) -> None:
        try:
            super()._initialize_redis_state(state)
        except redis.RedisError as exc:
            logger.warning("circuit breaker storage: Redis unavailable (%s)", exc)


class _DaemonPool:
    """Up to `size` daemon threads running submitted calls.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a worker process
    shutting down would wait for a call still stuck on a trickling peer."""

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, lambda: fn(*args, **kwargs)))
        with self._lock:
            if self._idle == 0 and self._threads < self._size:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
            else:
                self._idle -= 1  # an idle thread takes it
        return future

    def _work(self) -> None:
        while True:
            future, call = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the caller, like an executor does
                    future.set_exception(exc)
            del future, call
            with self._lock:
                self._idle += 1


class _Slots:
    """This process's in-flight calls to one provider and the pool that runs them."""

    def __init__(self, provider: str, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._lock = threading.Lock()
        self.pool = _DaemonPool(f"provider-{provider}", limit)

    def try_acquire(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        with self._lock:
            self._free = min(self.limit, self._free + 1)

    @property
    def in_flight(self) -> int:
        return self.limit - self._free


@dataclass(frozen=True)
class _Config:
    redis_url: str
    key_prefix: str
    failures: int
    cooldown: int
    deadline: float
    limit: int

    @classmethod
    def from_settings(cls) -> _Config:
        return cls(
            redis_url=settings.PROVIDER_BREAKER_REDIS_URL,
            key_prefix=settings.PROVIDER_BREAKER_KEY_PREFIX,
            failures=settings.PROVIDER_BREAKER_FAILURES,
            cooldown=settings.PROVIDER_BREAKER_COOLDOWN_SECONDS,
            deadline=float(settings.PROVIDER_DEADLINE_SECONDS),
            limit=settings.PROVIDER_MAX_CONCURRENCY,
        )


@dataclass(frozen=True)
class _Parts:
    pid: int
    config: _Config
    breaker: pybreaker.CircuitBreaker
    storage: pybreaker.CircuitBreakerStorage
    slots: _Slots


class _Call:
    """The `run` a guarded block gets: one SDK call, bounded by the deadline."""

    def __init__(self, guard: ProviderGuard, operation: str, deadline_at: float, slots: _Slots):
        self._guard = guard
        self._operation = operation
        self._deadline_at = deadline_at
        self._slots = slots
        self.started = False

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.started:
            raise RuntimeError("one provider call per guarded block")
        self.started = True
        future: Future[T] = self._slots.pool.submit(fn, *args, **kwargs)
        # The slot is freed when the SDK call really ends, not when its caller gives up.
        future.add_done_callback(lambda _f: self._slots.release())
        try:
            return future.result(timeout=max(0.0, self._deadline_at - time.monotonic()))
        except FutureTimeout:
            raise ProviderTimeout(
                self._guard.provider,
                self._operation,
                f"no answer within the {self._guard.config.deadline:g} s deadline",
                retry_after=5,
            ) from None


class ProviderGuard:
    """Deadline, concurrency limit and circuit breaker of one provider (one per process)."""

    def __init__(self, provider: str, is_failure: Callable[[BaseException], bool]) -> None:
        self.provider = provider
        self._is_failure = is_failure
        self._lock = threading.Lock()
        self._built: _Parts | None = None
        # Trial lock when there is no Redis (per process): monotonic expiry time.
        self._local_trial_until = 0.0

    # --- building (per process and per settings) ---------------------------------------------
    @property
    def config(self) -> _Config:
        return self._parts().config

    def _parts(self) -> _Parts:
        config = _Config.from_settings()
        built = self._built
        if built is not None and built.pid == os.getpid() and built.config == config:
            return built
        with self._lock:
            built = self._built
            if built is None or built.pid != os.getpid() or built.config != config:
                storage = self._new_storage(config)
                built = _Parts(
                    pid=os.getpid(),
                    config=config,
                    breaker=self._new_breaker(config, storage),
                    storage=storage,
                    slots=self._new_slots(config),
                )
                self._built = built
            return built

    def _new_storage(self, config: _Config) -> pybreaker.CircuitBreakerStorage:
        storage: pybreaker.CircuitBreakerStorage
        if config.redis_url:
            storage = _RedisStorage(
                pybreaker.STATE_CLOSED,
                _redis(config.redis_url),
                namespace=f"{config.key_prefix}:{self.provider}",
            )
        else:
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        return storage

    def _new_breaker(
        self, config: _Config, storage: pybreaker.CircuitBreakerStorage
    ) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(
            fail_max=config.failures,
            reset_timeout=config.cooldown,
            # Anything that is not an outage (a 404, a 4xx rejection) is the provider answering.
            exclude=[lambda exc: not self.is_failure(exc)],
            state_storage=storage,
            name=self.provider,
            # The call that trips the breaker keeps its own error (timeout, 5xx).
            throw_new_error_on_trip=False,
            listeners=[_BreakerLog()],
        )

    def _new_slots(self, config: _Config) -> _Slots:
        built = self._built
        if built is not None and built.pid == os.getpid() and built.slots.limit == config.limit:
            return built.slots  # only the breaker settings changed: keep in-flight accounting
        return _Slots(self.provider, config.limit)

    def classify_with(self, is_failure: Callable[[BaseException], bool]) -> None:
        self._is_failure = is_failure

    def is_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, ProviderTimeout) or self._is_failure(exc)

    # --- the trial lock (one caller across processes while half-open) -------------------------
    def _trial_key(self, config: _Config) -> str:
        return f"{config.key_prefix}:{self.provider}:trial"

    def _take_trial(self, config: _Config) -> bool:
        ttl = config.deadline + 1
        if config.redis_url:
            try:
                return bool(
                    _redis(config.redis_url).set(
                        self._trial_key(config), os.getpid(), nx=True, px=int(ttl * 1000)
                    )
                )
            except redis.RedisError:
                return True  # like pybreaker: without Redis, fail open
        with self._lock:
            now = time.monotonic()
            if now < self._local_trial_until:
                return False
            self._local_trial_until = now + ttl
            return True

    def _end_trial(self, config: _Config) -> None:
        if config.redis_url:
            with suppress(redis.RedisError):
                _redis(config.redis_url).delete(self._trial_key(config))
        else:
            self._local_trial_until = 0.0

    # --- state --------------------------------------------------------------------------------
    @staticmethod
    def _open_for(parts: _Parts) -> float:
        """Seconds the open breaker stays open (0: cool-down over, a trial is due)."""
        opened_at = parts.storage.opened_at
        if opened_at is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(0.0, parts.config.cooldown - elapsed)

    def status(self) -> dict[str, Any]:
        """For /readyz: breaker state, consecutive failures, this process's calls in flight."""
        parts = self._parts()
        state = parts.breaker.current_state
        body: dict[str, Any] = {
            "state": state,
            "failures": parts.breaker.fail_counter,
            "failure_threshold": parts.config.failures,
            "in_flight": parts.slots.in_flight,
            "max_concurrency": parts.slots.limit,
        }
        if state != pybreaker.STATE_CLOSED:
            remaining = self._open_for(parts)
            body["retry_after"] = math.ceil(remaining) if remaining else 0
            if state == pybreaker.STATE_OPEN and not remaining:
                body["state"] = "half-open"  # the next call is the trial
        return body

    def reset(self) -> None:
        """Close the breaker and forget failures (tests, an operator after a fixed outage)."""
        parts = self._parts()
        parts.breaker.close()
        self._end_trial(parts.config)

    # --- the guarded call ---------------------------------------------------------------------
    def _gate(self, parts: _Parts, operation: str) -> bool:
        """Raise CircuitOpen while open; True when this caller runs the half-open trial."""
        config = parts.config
        state = parts.breaker.current_state
        if state == pybreaker.STATE_CLOSED:
            return False
        remaining = self._open_for(parts)
        if state == pybreaker.STATE_OPEN and remaining > 0:
            raise CircuitOpen(
                self.provider,
                operation,
                f"{self.provider} failed {config.failures} times in a row; calls are refused "
                "for a cool-down",
                retry_after=math.ceil(remaining),
            )
        if not self._take_trial(config):
            raise CircuitOpen(
                self.provider,
                operation,
                f"{self.provider} is being probed after an outage",
                retry_after=math.ceil(config.deadline),
            )
        return True

    @contextmanager
    def calling(self, operation: str) -> Iterator[_Call]:
        parts = self._parts()
        config, slots = parts.config, parts.slots
        deadline_at = time.monotonic() + config.deadline
        trial = self._gate(parts, operation)
        if not slots.try_acquire():
            if trial:
                self._end_trial(config)
            raise ProviderBusy(
                self.provider,
                operation,
                f"{slots.limit} calls to {self.provider} already in flight in this process",
                retry_after=2,
            )
        call = _Call(self, operation, deadline_at, slots)
        try:
            with parts.breaker.calling():
                yield call
        except pybreaker.CircuitBreakerError as exc:  # opened by another caller meanwhile
            raise CircuitOpen(
                self.provider, operation, str(exc), retry_after=config.cooldown
            ) from exc
        finally:
            if not call.started:
                slots.release()
            if trial:
                self._end_trial(config)


_guards: dict[str, ProviderGuard] = {}


def _every_error(exc: BaseException) -> bool:
    return True


def guard_for(
    provider: str, is_failure: Callable[[BaseException], bool] | None = None
) -> ProviderGuard:
    """The process-wide guard of `provider`, created on first use. `is_failure` (what counts
    toward its breaker) comes from the provider's call; a reader of the state (/readyz) passes
    none."""
    guard = _guards.get(provider)
    if guard is None:
        with _lock:
            guard = _guards.get(provider)
            if guard is None:
                guard = _guards[provider] = ProviderGuard(provider, is_failure or _every_error)
    if is_failure is not None:
        guard.classify_with(is_failure)
    return guard


def guards() -> dict[str, ProviderGuard]:
    return dict(_guards)


def reset_all() -> None:
    """Close every breaker (tests: no breaker state leaks from one test into the next)."""
    for guard in guards().values():
        guard.reset()
