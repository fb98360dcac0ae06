"""Switching the active provider: validated, recorded on AppConfig, logged with who did it.

The AppConfig admin, the `setup_cloud_storage` command and the demo's `demo_setup` all end here,
so the rule (never switch to a provider whose configuration is incomplete) and the audit line
live in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from backend.core.errors import StorageUnavailable
from backend.core.models import AppConfig
from backend.storage import registry

logger = logging.getLogger("backend.storage.switching")


def log_provider_change(previous: str | None, new: str, actor: str) -> None:
    logger.info("storage provider changed from %s to %s by %s", previous or "(none)", new, actor)


@transaction.atomic
def activate_provider(
    provider: str,
    *,
    actor: str,
    user: Any = None,
    changes: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Make `provider` the active one; returns (previous, new).

    Refuses (StorageUnavailable) to switch to a provider whose configuration is incomplete;
    keeping the current one is always allowed, so the limits stay editable while it is broken.
    `changes` are other AppConfig fields (the admin form's limits), saved in the same save;
    `user` is recorded as `updated_by`. Saving clears the shared AppConfig cache."""
    AppConfig.load()
    row = AppConfig.objects.select_for_update().get(pk=AppConfig.SINGLETON_PK)
    previous = row.provider
    if previous != provider:
        check = registry.check_settings(provider)
        if check.problems:
            raise StorageUnavailable(
                f"Cannot switch to {provider}: {'; '.join(check.problems)}",
                details={"provider": provider, "missing": check.missing},
            )
    if previous != provider or user is not None or changes:
        for name, value in (changes or {}).items():
            setattr(row, name, value)
        row.provider = provider
        if user is not None:
            row.updated_by = user
        row.save()  # clears the shared AppConfig cache
    if previous != provider:
        log_provider_change(previous, provider, actor)
    return previous, provider
