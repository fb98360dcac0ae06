from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

from tests.fixtures.providers import cloudinary_settings


def warning_ids() -> list[str]:
    return [m.id for m in run_checks() if m.id and m.id.startswith("storage.")]


def test_short_grace_with_cloudinary_warns() -> None:
    with override_settings(**cloudinary_settings(""), UPLOAD_ORPHAN_GRACE_SECONDS=600):
        assert warning_ids() == ["storage.W001"]


def test_hour_long_grace_is_fine() -> None:
    with override_settings(**cloudinary_settings(""), UPLOAD_ORPHAN_GRACE_SECONDS=3600):
        assert warning_ids() == []


def test_short_grace_without_cloudinary_is_fine() -> None:
    with override_settings(UPLOAD_ORPHAN_GRACE_SECONDS=600):
        assert warning_ids() == []
