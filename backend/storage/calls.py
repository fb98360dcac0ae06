"""`provider_call`: the one wrapper every SDK call of every provider goes through.

A provider service wraps each call to its SDK (or to its HTTP endpoints) in

    with provider_call(self.name, "inspect (HeadObject)", self._fault, display_name="S3"):
        ...

and the wrapper turns whatever the SDK raises into `ProviderUnavailable` (HTTP 503 with
Retry-After): the SDK's own text, which can name an account, an ARN or a bucket, goes to the
server log only; API clients get the provider, the operation and the error's code. Each provider
says what its SDK's errors mean with a classifier (`Classify`: exception -> `CallFault`, or None
for an exception that is not the provider's fault, which propagates unchanged).

This is the hook point for anything that must apply to every provider call: a deadline and a
circuit breaker per provider, and call metrics per provider and operation, go here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from backend.core.errors import ProviderUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallFault:
    """What one SDK error means: the code clients see, how soon to retry, the text to log."""

    code: str
    description: str
    retry_after: int = 30


#: A provider's reading of its SDK's exceptions; None: not a provider fault (re-raised as is).
Classify = Callable[[BaseException], CallFault | None]


@contextmanager
def provider_call(
    provider: str, operation: str, classify: Classify, *, display_name: str
) -> Iterator[None]:
    """Run one provider call; its SDK errors leave as ProviderUnavailable (see the module doc)."""
    try:
        yield
    except ProviderUnavailable:
        # Raised inside the call on purpose (e.g. a delivery URL answered 5xx): a failed call.
        raise
    except Exception as exc:
        fault = classify(exc)
        if fault is None:
            raise  # a value the caller handles (MultipartRejected, a bug ...), not an outage
        logger.warning("%s %s failed: %s", display_name, operation, fault.description)
        raise ProviderUnavailable(
            f"{display_name} {operation} is unavailable; retry later.",
            details={"provider": provider, "operation": operation, "code": fault.code},
            retry_after=fault.retry_after,
        ) from exc
