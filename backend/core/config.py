"""Cached reads of the `AppConfig` singleton.

A warm read costs zero queries. The cache is Django's default cache: in production that is Redis,
shared by every process, so a save in one process (which clears the key) is seen by all others on
their next read. The timeout is a safety net for changes made behind the model's back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from backend.core.models import AppConfig

CACHE_KEY = "core:appconfig:v1"
CACHE_TIMEOUT = 300


@dataclass(frozen=True)
class AppConfigSnapshot:
    provider: str
    max_upload_size: int
    allowed_content_types: tuple[str, ...]
    presign_expiry_seconds: int
    max_pending_uploads_per_user: int
    max_bytes_per_user_per_day: int


def _snapshot_from_db() -> AppConfigSnapshot:
    row = AppConfig.load()
    return AppConfigSnapshot(
        provider=row.provider,
        max_upload_size=int(row.max_upload_size),
        allowed_content_types=tuple(str(t).lower() for t in row.allowed_content_types or ()),
        presign_expiry_seconds=int(row.presign_expiry_seconds),
        max_pending_uploads_per_user=int(row.max_pending_uploads_per_user),
        max_bytes_per_user_per_day=int(row.max_bytes_per_user_per_day),
    )


def get_app_config() -> AppConfigSnapshot:
    cached = cache.get(CACHE_KEY)
    if isinstance(cached, dict):
        try:
            return AppConfigSnapshot(
                **{**cached, "allowed_content_types": tuple(cached["allowed_content_types"])}
            )
        except (TypeError, KeyError):
            pass  # an older shape in the cache: reload
    snapshot = _snapshot_from_db()
    cache.set(CACHE_KEY, asdict(snapshot), CACHE_TIMEOUT)
    return snapshot


def clear_app_config_cache() -> None:
    cache.delete(CACHE_KEY)


@receiver(post_save, sender=AppConfig, dispatch_uid="core-appconfig-cache")
def _clear_on_save(**kwargs: Any) -> None:
    clear_app_config_cache()
    # Another process may read the old row between the clear above and our commit, and cache
    # it again; clearing once more after the commit makes the change visible to every process
    # on its next read.
    transaction.on_commit(clear_app_config_cache)
