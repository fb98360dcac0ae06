"""The AppConfig admin, driven through the real admin pages with the Django test client."""

from __future__ import annotations

import json
import logging

import pytest
from django.core.cache import cache
from django.test import override_settings

from backend.core.config import CACHE_KEY, get_app_config
from backend.core.models import AppConfig
from backend.storage.factory import CloudStorageFactory
from tests.fixtures.providers import S3_SETTINGS, cloudinary_settings

pytestmark = pytest.mark.django_db

CHANGE_URL = "/admin/core/appconfig/1/change/"
NO_S3 = {k: "" for k in S3_SETTINGS}
CLOUDINARY = cloudinary_settings("")


@pytest.fixture(autouse=True)
def _fresh_factory():
    CloudStorageFactory.reset()
    yield
    CloudStorageFactory.reset()


def form_data(**changes: object) -> dict[str, object]:
    row = AppConfig.load()
    data: dict[str, object] = {
        "provider": row.provider,
        "max_upload_size": row.max_upload_size,
        "allowed_content_types": json.dumps(row.allowed_content_types),
        "presign_expiry_seconds": row.presign_expiry_seconds,
        "max_pending_uploads_per_user": row.max_pending_uploads_per_user,
        "max_bytes_per_user_per_day": row.max_bytes_per_user_per_day,
    }
    data.update(changes)
    return data


def test_changelist_goes_to_the_singleton_and_shows_both_providers(admin_client) -> None:
    with override_settings(**NO_S3, **CLOUDINARY):
        listing = admin_client.get("/admin/core/appconfig/")
        page = admin_client.get(CHANGE_URL)

    assert listing.status_code == 302 and listing["Location"] == CHANGE_URL
    html = page.content.decode()
    assert page.status_code == 200
    assert "Provider status" in html and "Run live check" in html
    assert "<strong>cloudinary</strong>" in html and "<strong>s3</strong>" in html
    assert "AWS_STORAGE_BUCKET_NAME is not set" in html
    assert CLOUDINARY["CLOUDINARY_API_SECRET"] not in html


def test_switch_to_incomplete_provider_is_refused_with_the_missing_list(admin_client) -> None:
    AppConfig.load()
    with override_settings(**NO_S3, **CLOUDINARY):
        response = admin_client.post(CHANGE_URL, form_data(provider="s3"))

    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors["provider"]
    assert errors[0] == "Cannot switch to s3: its configuration is incomplete."
    assert any("AWS_STORAGE_BUCKET_NAME is not set" in e for e in errors)
    assert any("AWS_S3_REGION_NAME is not set" in e for e in errors)
    assert AppConfig.load().provider == "cloudinary"


def test_switch_accepted_clears_cache_and_logs_the_user(admin_client, admin_user, caplog) -> None:
    AppConfig.load()
    assert get_app_config().provider == "cloudinary"
    assert cache.get(CACHE_KEY) is not None  # warm

    with override_settings(**S3_SETTINGS, **CLOUDINARY), caplog.at_level(logging.INFO):
        response = admin_client.post(CHANGE_URL, form_data(provider="s3"))
        assert cache.get(CACHE_KEY) is None
        assert CloudStorageFactory.active().name == "s3"

    assert response.status_code == 302
    row = AppConfig.load()
    assert row.provider == "s3" and row.updated_by == admin_user
    assert f"storage provider changed from cloudinary to s3 by {admin_user.username}" in [
        r.getMessage() for r in caplog.records
    ]


def test_editing_limits_while_current_provider_is_broken_is_allowed(admin_client) -> None:
    AppConfig.load()
    with override_settings(**NO_S3, **{k: "" for k in CLOUDINARY if "ALGORITHM" not in k}):
        response = admin_client.post(CHANGE_URL, form_data(max_upload_size=1000))
    assert response.status_code == 302
    assert AppConfig.load().max_upload_size == 1000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["image/png", "png"]', "Not a type/subtype MIME type: 'png'"),
        ('["image/png", 5]', "Not a type/subtype MIME type: 5"),
        ('"image/png"', "non-empty JSON list"),
        ("[]", "This field is required"),
    ],
)
def test_allowed_content_types_validated(admin_client, value: str, message: str) -> None:
    with override_settings(**CLOUDINARY):
        response = admin_client.post(CHANGE_URL, form_data(allowed_content_types=value))
    errors = response.context["adminform"].form.errors["allowed_content_types"]
    assert any(message in e for e in errors), errors


def test_allowed_content_types_normalised(admin_client) -> None:
    with override_settings(**CLOUDINARY):
        admin_client.post(
            CHANGE_URL, form_data(allowed_content_types='[" Image/PNG ", "image/png", "text/csv"]')
        )
    assert AppConfig.load().allowed_content_types == ["image/png", "text/csv"]


def test_no_add_when_the_row_exists_and_never_delete(admin_client) -> None:
    AppConfig.load()
    assert admin_client.get("/admin/core/appconfig/add/").status_code == 403
    assert admin_client.get("/admin/core/appconfig/1/delete/").status_code == 403


def test_live_check_reports_through_messages(admin_client, s3_storage) -> None:
    AppConfig.load()
    response = admin_client.get("/admin/core/appconfig/live-check/", follow=True)
    texts = [str(m) for m in response.context["messages"]]
    assert any(t.startswith("s3: live check ok") for t in texts), texts
    assert any(t.startswith("cloudinary: not configured") for t in texts), texts


def test_cloudinary_limit_above_one_request_up_to_the_account_limit(admin_client) -> None:
    """Above 100 MB Cloudinary takes chunked uploads, up to the account's file size limit
    (CLOUDINARY_MAX_FILE_SIZE): a maximum above that is refused, naming the limit."""
    with override_settings(**CLOUDINARY, **S3_SETTINGS, CLOUDINARY_MAX_FILE_SIZE=1_000_000_000):
        response = admin_client.post(
            CHANGE_URL, form_data(provider="cloudinary", max_upload_size=1_500_000_000)
        )
        errors = response.context["adminform"].form.errors["max_upload_size"]
        assert any("at most 1000000000 bytes" in e for e in errors), errors
        assert any("chunked uploads up to the account limit" in e for e in errors), errors
        assert any("or use S3 for larger files" in e for e in errors), errors
        assert AppConfig.load().max_upload_size != 1_500_000_000
        # 200 MB (above one request's 100 MB) is fine: chunked.
        response = admin_client.post(
            CHANGE_URL, form_data(provider="cloudinary", max_upload_size=200_000_000)
        )
        assert response.status_code == 302
        assert AppConfig.load().max_upload_size == 200_000_000
        # The larger limit is fine for S3.
        response = admin_client.post(
            CHANGE_URL, form_data(provider="s3", max_upload_size=1_500_000_000)
        )
    assert response.status_code == 302
    assert AppConfig.load().max_upload_size == 1_500_000_000
