"""Cached reads of the `AppConfig` singleton, in two tiers.

1. A copy in this process's memory, trusted for `LOCAL_TTL_SECONDS` (0.5 s): most requests make
   no network round trip at all.
2. Django's default cache: in production Redis, shared by every process. A save anywhere clears
   the key (and this process's copy), so every other process sees it once its own copy is older
   than `LOCAL_TTL_SECONDS`: an admin switch reaches every process within one second.

A warm read costs zero queries. The Redis timeout is a safety net for changes made behind the
model's back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from time import monotonic
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from backend.core.models import AppConfig

CACHE_KEY = "core:appconfig:v1"
CACHE_TIMEOUT = 300
#: How long this process trusts its own copy before asking the shared cache again.
LOCAL_TTL_SECONDS = 0.5

# (snapshot, monotonic time it was read from the shared cache or the database). One tuple,
# replaced whole, so threads never see half of an update.
_local: tuple[AppConfigSnapshot, float] | None = None


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


def _from_shared_cache() -> AppConfigSnapshot | None:
    cached = cache.get(CACHE_KEY)
    if isinstance(cached, dict):
        try:
            return AppConfigSnapshot(
                **{**cached, "allowed_content_types": tuple(cached["allowed_content_types"])}
            )
        except (TypeError, KeyError):
            pass  # an older shape in the cache: reload
    return None


def get_app_config() -> AppConfigSnapshot:
    global _local
    local = _local
    now = monotonic()
    if local is not None and now - local[1] < LOCAL_TTL_SECONDS:
        return local[0]
    snapshot = _from_shared_cache()
    if snapshot is None:
        snapshot = _snapshot_from_db()
        cache.set(CACHE_KEY, asdict(snapshot), CACHE_TIMEOUT)
    _local = (snapshot, now)
    return snapshot


def clear_local_copy() -> None:
    """Forget this process's copy (the next read asks the shared cache)."""
    global _local
    _local = None


def clear_app_config_cache() -> None:
    clear_local_copy()
    cache.delete(CACHE_KEY)


@receiver(post_save, sender=AppConfig, dispatch_uid="core-appconfig-cache")
def _clear_on_save(**kwargs: Any) -> None:
    clear_app_config_cache()
    # Another process may read the old row between the clear above and our commit, and cache
    # it again; clearing once more after the commit makes the change visible to every process
    # on its next read.
    transaction.on_commit(clear_app_config_cache)
