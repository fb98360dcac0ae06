"""`CloudStorageFactory`: the only place that chooses a storage provider.

Which providers exist, how each one's settings are loaded and checked and how its service is
built come from `backend.storage.registry`.

- `active()`: the provider new uploads go to (AppConfig.provider), with a safe fallback to the
  other provider when the chosen one is not configured, and `StorageUnavailable` (503) when none is.
- `for_upload(row)` / `for_provider(name)`: the provider recorded on a row, whatever is active now.

Service instances are cached per process, keyed by the settings they were built from, so the warm
path is a cache read of the AppConfig snapshot (no query) and a dict lookup (no new boto3 client).
Each provider's settings are loaded and checked once per process too (settings are read at start;
a test's override_settings clears them through Django's `setting_changed` signal).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from backend.core.config import get_app_config
from backend.core.errors import StorageUnavailable
from backend.storage import registry, s3
from backend.storage.base import CloudStorageService

logger = logging.getLogger(__name__)

# A misconfigured provider is logged once a minute per process, not once per request.
_FALLBACK_WARNING_INTERVAL = 60.0


class CloudStorageFactory:
    _lock = threading.Lock()
    _services: dict[tuple[str, Hashable], CloudStorageService] = {}
    _installed: dict[str, CloudStorageService] = {}
    _warned_at: dict[tuple[str, str], float] = {}
    # name -> (loaded settings, their check): settings do not change while a process runs.
    _loaded: dict[str, tuple[Hashable, registry.SettingsCheck]] = {}

    @classmethod
    def _settings_of(cls, name: str) -> tuple[Hashable, registry.SettingsCheck] | None:
        loaded = cls._loaded.get(name)
        if loaded is None:
            provider = registry.get(name)
            if provider is None:
                return None
            loaded = (provider.load_settings(), provider.check_settings())
            cls._loaded[name] = loaded
        return loaded

    @classmethod
    def active(cls) -> CloudStorageService:
        chosen = get_app_config().provider
        if cls._is_usable(chosen):
            return cls.for_provider(chosen)
        problems = registry.check_settings(chosen).problems
        for other in registry.names():
            if other != chosen and cls._is_usable(other):
                cls._warn_fallback(chosen, other, problems)
                return cls.for_provider(other)
        missing = {name: registry.check_settings(name).missing for name in registry.names()}
        summary = "; ".join(
            f"{name}: {', '.join(names) or 'invalid settings'}" for name, names in missing.items()
        )
        raise StorageUnavailable(
            f"No storage provider is configured ({summary}). "
            "An administrator must set the provider's environment variables.",
            details={
                "active_provider": chosen,
                "missing": missing,
            },
        )

    @classmethod
    def for_provider(cls, name: str) -> CloudStorageService:
        installed = cls._installed.get(name)
        if installed is not None:
            return installed
        provider = registry.get(name)
        if provider is None:
            raise StorageUnavailable(
                f"Unknown storage provider {name!r}.", details={"provider": name}
            )
        loaded = cls._settings_of(name)
        assert loaded is not None
        cfg, check = loaded
        service = cls._services.get((name, cfg))
        if service is not None:
            return service
        if check.problems:
            raise StorageUnavailable(
                f"Storage provider {name!r} is not configured: {'; '.join(check.problems)}",
                details={"provider": name, "missing": check.missing},
            )
        with cls._lock:
            service = cls._services.get((name, cfg))
            if service is None:
                service = provider.build(cfg)
                cls._services[(name, cfg)] = service
            return service

    @classmethod
    def for_upload(cls, row: Any) -> CloudStorageService:
        """The service recorded on a `MediaUpload` row (not necessarily the active one)."""
        return cls.for_provider(str(row.provider))

    @classmethod
    def configured(cls) -> list[str]:
        return [name for name in registry.names() if cls._is_usable(name)]

    @classmethod
    def reset(cls) -> None:
        """Drop cached services and clients (call after override_settings in tests)."""
        with cls._lock:
            cls._services.clear()
            cls._installed.clear()
            cls._warned_at.clear()
            cls._loaded.clear()
        s3.drop_clients()

    @classmethod
    def install(cls, service: CloudStorageService) -> None:
        """Serve `service` for its provider name until `reset()` (tests: the in-memory fake)."""
        with cls._lock:
            cls._installed[service.name] = service

    # --- internals -------------------------------------------------------------------------
    @classmethod
    def _is_usable(cls, name: str) -> bool:
        if name in cls._installed:
            return True
        loaded = cls._settings_of(name)
        return loaded is not None and not loaded[1].problems

    @classmethod
    def _warn_fallback(cls, chosen: str, other: str, problems: list[str]) -> None:
        now = time.monotonic()
        last = cls._warned_at.get((chosen, other))
        if last is not None and now - last < _FALLBACK_WARNING_INTERVAL:
            return
        cls._warned_at[(chosen, other)] = now
        logger.warning(
            "Storage provider %r is selected but not configured (%s); falling back to %r.",
            chosen,
            "; ".join(problems),
            other,
        )


@receiver(setting_changed, dispatch_uid="storage-factory-settings")
def _forget_loaded_settings(**kwargs: Any) -> None:
    CloudStorageFactory._loaded.clear()
