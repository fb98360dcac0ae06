"""System checks (run by `manage.py check` and at start-up) for provider-related settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

from backend.storage.cloudinary import SIGNED_PARAMS_LIFETIME, CloudinaryService
from backend.storage.config_service import CloudStorageConfigService


@register()
def orphan_grace_covers_cloudinary_signatures(**kwargs: Any) -> list[CheckMessage]:
    grace = settings.UPLOAD_ORPHAN_GRACE_SECONDS
    if grace >= SIGNED_PARAMS_LIFETIME or not CloudStorageConfigService.is_configured(
        CloudinaryService.name
    ):
        return []
    return [
        Warning(
            f"UPLOAD_ORPHAN_GRACE_SECONDS is {grace}, below Cloudinary's one-hour signature "
            "lifetime: the cleanup can expire a Cloudinary upload while its signed parameters "
            "are still accepted, leaving an orphan until the next reconciliation.",
            hint="Set UPLOAD_ORPHAN_GRACE_SECONDS to 3600 or more.",
            id="storage.W001",
        )
    ]
