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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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


@contextmanager
def provider_call(
    provider: str,
    operation: str,
    classify: Classify,
    *,
    display_name: str,
    network: bool = True,
) -> Iterator[Run]:
    """Run one provider call; its SDK errors leave as ProviderUnavailable (see the module doc).

    Network calls are timed (`upload_broker_provider_call_seconds`) and every failure that
    leaves as ProviderUnavailable is counted (`upload_broker_provider_call_errors`)."""
    started = time.perf_counter()
    try:
        if not network:
            yield _direct
            return
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
    except ProviderUnavailable as exc:
        # Raised inside the call on purpose (e.g. a delivery URL answered 5xx): a failed call.
        metrics.PROVIDER_CALL_ERRORS.labels(provider, operation, exc.code).inc()
        raise
    except Exception as exc:
        fault = classify(exc)
        if fault is None:
            raise  # a value the caller handles (MultipartRejected, a bug ...), not an outage
        metrics.PROVIDER_CALL_ERRORS.labels(provider, operation, fault.code).inc()
        logger.warning("%s %s failed: %s", display_name, operation, fault.description)
        raise ProviderUnavailable(
            f"{display_name} {operation} is unavailable; retry later.",
            details={"provider": provider, "operation": operation, "code": fault.code},
            retry_after=fault.retry_after,
        ) from exc
    finally:
        if network:
            metrics.PROVIDER_CALL_SECONDS.labels(provider, operation).observe(
                time.perf_counter() - started
            )
