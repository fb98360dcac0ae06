"""The runtime-editable configuration: one `AppConfig` row, edited in Django admin.

Secrets never live here (they come from the environment); this row holds the active provider
and the non-secret upload policy. Reads go through `backend.core.config.get_app_config()`,
which caches a snapshot; saving clears that cache.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from backend.core.provider_choices import default_provider, provider_choices

DEFAULT_ALLOWED_CONTENT_TYPES = [
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "video/mp4",
    "text/plain",
]


def default_allowed_content_types() -> list[str]:
    return list(DEFAULT_ALLOWED_CONTENT_TYPES)


class AppConfig(models.Model):
    """Singleton: always pk=1; it cannot be deleted and a second row cannot be added."""

    SINGLETON_PK = 1

    provider = models.CharField(
        max_length=20,
        # The storage registry's names (see backend.core.provider_choices for why callables).
        choices=provider_choices,
        default=default_provider,
        help_text="Where new uploads go. Existing uploads keep the provider recorded on them.",
    )
    max_upload_size = models.PositiveBigIntegerField(
        default=25 * 1024 * 1024,
        validators=[MinValueValidator(1), MaxValueValidator(5 * 1024**3)],
        help_text="Largest accepted file, in bytes (at most what the active provider takes: see "
        "its status below).",
    )
    allowed_content_types = models.JSONField(
        default=default_allowed_content_types,
        help_text='JSON list of accepted MIME types, e.g. ["image/jpeg", "image/png"].',
    )
    presign_expiry_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(60), MaxValueValidator(settings.UPLOAD_MAX_PRESIGN_EXPIRY)],
        help_text="How long upload instructions stay valid (60-900 seconds).",
    )
    max_pending_uploads_per_user = models.PositiveIntegerField(
        default=20, help_text="Outstanding (pending) uploads one user may hold at once."
    )
    max_bytes_per_user_per_day = models.PositiveBigIntegerField(
        default=1024**3, help_text="Bytes one user may declare in uploads per UTC day."
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "storage configuration"
        verbose_name_plural = "storage configuration"

    def __str__(self) -> str:
        return f"Storage configuration (provider: {self.get_provider_display()})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Saving also clears the cached snapshot (backend.core.config, on post_save).
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ValueError("The storage configuration is a singleton and cannot be deleted.")

    @classmethod
    def load(cls) -> AppConfig:
        obj, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return obj
