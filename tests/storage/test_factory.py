"""CloudStorageFactory: selection, fallback, none configured, per-row provider, warm path cost."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from backend.core.errors import StorageUnavailable
from backend.storage.cloudinary import CloudinaryService
from backend.storage.factory import CloudStorageFactory
from backend.storage.s3 import S3Service
from backend.uploads.models import MediaUpload
from tests.fixtures.memory import InMemoryStorageService
from tests.fixtures.providers import S3_SETTINGS, cloudinary_settings

CLOUDINARY = cloudinary_settings("http://127.0.0.1:9")
NO_CLOUDINARY = {k: "" for k in CLOUDINARY if k != "CLOUDINARY_SIGNATURE_ALGORITHM"}
NO_S3 = {k: "" for k in S3_SETTINGS}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_factory():
    CloudStorageFactory.reset()
    yield
    CloudStorageFactory.reset()


@pytest.mark.parametrize(
    ("provider", "cls"), [("s3", S3Service), ("cloudinary", CloudinaryService)]
)
def test_active_follows_appconfig(use_provider, provider, cls) -> None:
    use_provider(provider)
    with override_settings(**S3_SETTINGS, **CLOUDINARY):
        service = CloudStorageFactory.active()
        assert CloudStorageFactory.configured() == ["cloudinary", "s3"]
    assert isinstance(service, cls)
    assert service.name == provider


def test_fallback_to_the_configured_provider_with_a_warning(use_provider, caplog) -> None:
    use_provider("cloudinary")
    with override_settings(**S3_SETTINGS, **NO_CLOUDINARY), caplog.at_level(logging.WARNING):
        service = CloudStorageFactory.active()
        CloudStorageFactory.active()  # the warning is rate-limited, not repeated per call

    assert isinstance(service, S3Service)
    warnings = [r for r in caplog.records if r.name == "backend.storage.factory"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'cloudinary' is selected but not configured" in message
    for variable in ("CLOUDINARY_CLOUD_NAME", "CLOUDINARY_API_KEY", "CLOUDINARY_API_SECRET"):
        assert variable in message
    assert "falling back to 's3'" in message


def test_none_configured_is_storage_unavailable(use_provider) -> None:
    use_provider("s3")
    with override_settings(**NO_S3, **NO_CLOUDINARY):
        with pytest.raises(StorageUnavailable) as caught:
            CloudStorageFactory.active()
        assert CloudStorageFactory.configured() == []

    error = caught.value
    assert error.status_code == 503 and error.code == "storage_unavailable"
    assert error.message.startswith("No storage provider is configured")
    assert "AWS_STORAGE_BUCKET_NAME" in error.message and "CLOUDINARY_API_KEY" in error.message
    assert error.details["missing"]["s3"] == ["AWS_STORAGE_BUCKET_NAME", "AWS_S3_REGION_NAME"]


def test_for_provider_names_what_is_missing() -> None:
    with override_settings(**NO_S3), pytest.raises(StorageUnavailable, match="AWS_S3_REGION_NAME"):
        CloudStorageFactory.for_provider("s3")
    with pytest.raises(StorageUnavailable, match="Unknown storage provider"):
        CloudStorageFactory.for_provider("ftp")


def test_rows_keep_their_provider_after_a_switch(use_provider, django_user_model) -> None:
    from django.utils import timezone

    owner = django_user_model.objects.create_user("owner")
    row = MediaUpload.objects.create(
        owner=owner,
        provider="cloudinary",
        key="uploads/1/abc/cat",
        original_filename="cat.png",
        content_type="image/png",
        declared_size=10,
        expires_at=timezone.now(),
    )
    with override_settings(**S3_SETTINGS, **CLOUDINARY):
        use_provider("cloudinary")
        before = CloudStorageFactory.active()
        use_provider("s3")
        after = CloudStorageFactory.active()
        for_row = CloudStorageFactory.for_upload(row)

    assert (before.name, after.name) == ("cloudinary", "s3")
    assert isinstance(for_row, CloudinaryService)


def test_warm_path_costs_no_query_and_no_new_client(
    use_provider, django_assert_num_queries, boto3_clients
) -> None:
    use_provider("s3")
    with override_settings(**S3_SETTINGS):
        first = CloudStorageFactory.active()
        client = first.client
        built = len(boto3_clients)
        with django_assert_num_queries(0):
            for _ in range(50):
                again = CloudStorageFactory.active()
                assert again.client is client
    assert again is first
    assert len(boto3_clients) == built


def test_settings_change_builds_a_new_service(use_provider) -> None:
    use_provider("s3")
    with override_settings(**S3_SETTINGS):
        first = CloudStorageFactory.active()
    with override_settings(**{**S3_SETTINGS, "AWS_STORAGE_BUCKET_NAME": "another-bucket"}):
        second = CloudStorageFactory.active()
    assert first is not second
    assert second.bucket == "another-bucket"


def test_install_serves_a_fake_until_reset(use_provider) -> None:
    use_provider("s3")
    fake = InMemoryStorageService(name="s3")
    CloudStorageFactory.install(fake)
    with override_settings(**NO_S3, **NO_CLOUDINARY):
        assert CloudStorageFactory.active() is fake
        CloudStorageFactory.reset()
        with pytest.raises(StorageUnavailable):
            CloudStorageFactory.active()
