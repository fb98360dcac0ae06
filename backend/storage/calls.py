"""`provider_call`: the one wrapper every SDK call of every provider goes through.

A provider service wraps each call to its SDK (or to its HTTP endpoints) in

    with provider_call(self.name, "inspect (HeadObject)", self._fault, display_name="S3") as run:
        head = run(client.head_object, Bucket=bucket, Key=key)

and the wrapper turns whatever the SDK raises into `ProviderUnavailable` (HTTP 503 with
Retry-After): the SDK's own text, which can name an account, an ARN or a bucket, goes to the
server log only; API clients get the provider, the operation and the error's code. Each provider
says what its SDK's errors mean with a classifier (`Classify`: exception -> `CallFault`, or None
for an exception that is not the provider's fault, which propagates unchanged).

Network calls are also bounded here (backend/storage/resilience.py): the SDK call is made
through `run`, which enforces the provider deadline, the per-process concurrency limit and the
provider's circuit breaker. Signing is local: `network=False` yields a `run` that just calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from backend.core import metrics
from backend.core.errors import ProviderUnavailable
from backend.storage import resilience

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallFault:
    """What one SDK error means: the code clients see, how soon to retry, the text to log."""

    code: str
    description: str
    retry_after: int = 30
    #: An outage (no answer, a 5xx, throttling) counts toward the provider's circuit breaker;
    #: an answer the provider gave on purpose (access denied, a 4xx) does not.
    outage: bool = True


#: A provider's reading of its SDK's exceptions; None: not a provider fault (re-raised as is).
Classify = Callable[[BaseException], CallFault | None]
#: What a guarded block calls its SDK with: `run(fn, *args, **kwargs)` returns fn's result.
Run = Callable[..., Any]


def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _outages(classify: Classify) -> Callable[[BaseException], bool]:
    def is_outage(exc: BaseException) -> bool:
        if isinstance(exc, ProviderUnavailable):
            return True  # raised inside the call on purpose (a delivery URL answered 5xx)
        fault = classify(exc)
        return fault is not None and fault.outage

    return is_outage


def provider_call(
    provider: str,
    operation: str,
    classify: Classify,
    *,
    display_name: str,
    network: bool = True,
) -> AbstractContextManager[Run]:
    """Run one provider call; its SDK errors leave as ProviderUnavailable (see the module doc).

    Network calls are timed (`upload_broker_provider_call_seconds`) and every failure that
    leaves as ProviderUnavailable is counted (`upload_broker_provider_call_errors`)."""
    if not network:
        return _LocalCall(provider, operation, classify, display_name)
    return _network_call(provider, operation, classify, display_name)


def _failure(
    exc: Exception, provider: str, operation: str, classify: Classify, display_name: str
) -> ProviderUnavailable | None:
    """What an exception leaving a provider call becomes; None: it leaves unchanged."""
    if isinstance(exc, ProviderUnavailable):
        # Raised inside the call on purpose (e.g. a delivery URL answered 5xx): a failed call.
        metrics.PROVIDER_CALL_ERRORS.labels(provider, operation, exc.code).inc()
        return None
    fault = classify(exc)
    if fault is None:
        return None  # a value the caller handles (MultipartRejected, a bug ...), not an outage
    metrics.PROVIDER_CALL_ERRORS.labels(provider, operation, fault.code).inc()
    logger.warning("%s %s failed: %s", display_name, operation, fault.description)
    return ProviderUnavailable(
        f"{display_name} {operation} is unavailable; retry later.",
        details={"provider": provider, "operation": operation, "code": fault.code},
        retry_after=fault.retry_after,
    )


class _LocalCall:
    """A call without a network round trip (signing): nothing to time, bound or guard, only
    the SDK's errors to translate. A class, not a generator: every presign enters one."""

    __slots__ = ("classify", "display_name", "operation", "provider")

    def __init__(self, provider: str, operation: str, classify: Classify, display_name: str):
        self.provider, self.operation = provider, operation
        self.classify, self.display_name = classify, display_name

    def __enter__(self) -> Run:
        return _direct

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> Literal[False]:
        if isinstance(exc, Exception):
            failure = _failure(exc, self.provider, self.operation, self.classify, self.display_name)
            if failure is not None:
                raise failure from exc
        return False


@contextmanager
def _network_call(
    provider: str, operation: str, classify: Classify, display_name: str
) -> Iterator[Run]:
    started = time.perf_counter()
    try:
        guard = resilience.guard_for(provider, _outages(classify))
        with guard.calling(operation) as run:
            yield run
    except resilience.Refused as exc:
        metrics.PROVIDER_CALL_ERRORS.labels(provider, operation, exc.code).inc()
        # Every call is refused while a breaker is open: that is not news each time.
        level = logging.INFO if isinstance(exc, resilience.CircuitOpen) else logging.WARNING
        logger.log(level, "%s %s refused: %s", display_name, operation, exc)
        raise ProviderUnavailable(
            f"{display_name} {operation} is unavailable; retry later.",
            details={"provider": provider, "operation": operation, "code": exc.code},
            retry_after=exc.retry_after,
        ) from exc
    except Exception as exc:
        failure = _failure(exc, provider, operation, classify, display_name)
        if failure is None:
            raise
        raise failure from exc
    finally:
        metrics.PROVIDER_CALL_SECONDS.labels(provider, operation).observe(
            time.perf_counter() - started
        )
