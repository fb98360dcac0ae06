"""Switching the active provider: validated, recorded on AppConfig, logged with who did it.

The admin form and the `setup_cloud_storage` command both end here, so the rule (never switch
to a provider whose configuration is incomplete) and the audit line live in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from backend.core.errors import StorageUnavailable
from backend.core.models import AppConfig
from backend.storage.config_service import CloudStorageConfigService

logger = logging.getLogger("backend.storage.switching")


def log_provider_change(previous: str | None, new: str, actor: str) -> None:
    logger.info("storage provider changed from %s to %s by %s", previous or "(none)", new, actor)


@transaction.atomic
def activate_provider(provider: str, *, actor: str, user: Any = None) -> tuple[str, str]:
    """Make `provider` the active one; returns (previous, new). Refuses an incomplete provider."""
    problems = CloudStorageConfigService.problems(provider)
    if problems:
        raise StorageUnavailable(
            f"Cannot switch to {provider}: {'; '.join(problems)}",
            details={"provider": provider, "missing": CloudStorageConfigService.missing(provider)},
        )
    AppConfig.load()
    row = AppConfig.objects.select_for_update().get(pk=AppConfig.SINGLETON_PK)
    previous = row.provider
    if previous != provider or user is not None:
        row.provider = provider
        if user is not None:
            row.updated_by = user
        row.save()  # clears the shared AppConfig cache
    if previous != provider:
        log_provider_change(previous, provider, actor)
    return previous, provider
