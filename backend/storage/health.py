"""The providers' part of `/readyz`: each configured provider's circuit breaker state."""

from __future__ import annotations

from typing import Any

from backend.storage import resilience
from backend.storage.factory import CloudStorageFactory


def provider_breakers() -> tuple[bool, dict[str, Any]]:
    """(every breaker closed, {provider: state, failures, retry_after, calls in flight})."""
    states = {
        name: resilience.guard_for(name).status() for name in CloudStorageFactory.configured()
    }
    return all(s.get("state") == "closed" for s in states.values()), states
