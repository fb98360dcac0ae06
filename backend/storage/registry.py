"""The storage providers, in one place: each one's name, settings, checks, service and capabilities.

Adding a provider is a module with its `CloudStorageService` (which declares its `name`,
`display_name` and `capabilities`), a settings loader and check in `provider_settings`, and one
entry in `PROVIDERS` below. The factory, the config service, the admin, the commands and the
model choices all read this list; nothing outside backend/storage names a provider.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from backend.storage.base import CloudStorageService, LargeUploadProtocol, ProviderCapabilities
from backend.storage.cloudinary import CloudinaryService
from backend.storage.provider_settings import (
    CloudinarySettings,
    S3Settings,
    SettingsCheck,
    check_cloudinary_settings,
    check_s3_settings,
)
from backend.storage.s3 import S3Service


@dataclass(frozen=True)
class StorageProvider:
    #: The service class; its `name`, `display_name` and `capabilities` are the provider's.
    service: type[CloudStorageService]
    #: How the admin lists it.
    label: str
    #: Settings from Django settings, hashable: the factory keys its cached services by them.
    load_settings: Callable[[], Hashable]
    check_settings: Callable[[], SettingsCheck]
    #: The account's own file size limit from settings (None: only the protocol's bound).
    account_limit: Callable[[], int | None] = lambda: None

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def capabilities(self) -> ProviderCapabilities:
        return self.service.capabilities

    @property
    def max_upload_size(self) -> int | None:
        """The largest file this provider takes: its protocol's bound and the account limit,
        whichever is lower (None: neither sets one)."""
        bounds = [b for b in (self.capabilities.max_upload_size, self.account_limit()) if b]
        return min(bounds) if bounds else None

    def build(self, cfg: Any) -> CloudStorageService:
        # Every provider's service is built from its own settings dataclass.
        return self.service(cfg)  # type: ignore[call-arg]


PROVIDERS: tuple[StorageProvider, ...] = (
    StorageProvider(
        service=CloudinaryService,
        label="Cloudinary",
        load_settings=CloudinarySettings.from_django,
        check_settings=check_cloudinary_settings,
        account_limit=lambda: int(settings.CLOUDINARY_MAX_FILE_SIZE) or None,
    ),
    StorageProvider(
        service=S3Service,
        label="Amazon S3 (or S3-compatible)",
        load_settings=S3Settings.from_django,
        check_settings=check_s3_settings,
    ),
)
_BY_NAME = {provider.name: provider for provider in PROVIDERS}

#: Where new uploads go until an administrator chooses (the product's default).
DEFAULT_PROVIDER = CloudinaryService.name


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get(name: str) -> StorageProvider | None:
    return _BY_NAME.get(name)


def choices() -> list[tuple[str, str]]:
    """(name, label) pairs for model fields and forms."""
    return [(provider.name, provider.label) for provider in PROVIDERS]


def check_settings(name: str) -> SettingsCheck:
    provider = get(name)
    if provider is None:
        return SettingsCheck(
            [], [f"Unknown storage provider {name!r}; expected one of {names()}"], []
        )
    return provider.check_settings()


def max_upload_size(name: str) -> int | None:
    provider = get(name)
    return provider.max_upload_size if provider else None


def capabilities_for_clients(service: CloudStorageService) -> dict[str, Any]:
    """What a client plans an upload with: the capabilities plus the largest file in all."""
    provider = get(service.name)
    limit = provider.max_upload_size if provider else service.capabilities.max_upload_size
    return {**service.capabilities.for_clients(), "max_file_size": limit}


def names_with_large_uploads(protocol: LargeUploadProtocol) -> list[str]:
    return [p.name for p in PROVIDERS if p.capabilities.large_uploads == protocol]


def notification_sources() -> frozenset[str]:
    """The `verified_by` names of provider notifications (`capabilities.notifications.source`)."""
    return frozenset(
        p.capabilities.notifications.source for p in PROVIDERS if p.capabilities.notifications
    )
