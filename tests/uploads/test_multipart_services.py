"""The multipart part of the media upload service, on the in-memory fake posing as S3."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from backend.core.errors import (
    Conflict,
    Gone,
    NotSupported,
    ProviderUnavailable,
    QuotaExceeded,
    ValidationFailed,
)
from backend.storage.base import CompletedPart
from backend.storage.s3 import S3Service
from backend.uploads import cleanup, services
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.services import VerificationFailed, multipart
from tests.uploads.test_api_support import HTML, png_bytes

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("mp-owner", password="pw-mp-owner-1")


def start(owner: Any, size: int, content_type: str = "image/png") -> MediaUpload:
    return multipart.create_multipart_upload(
        owner=owner, filename="big.png", content_type=content_type, size=size
    )


def upload_parts(fake: Any, row: MediaUpload, data: bytes) -> list[CompletedPart]:
    size = int(row.multipart_part_size or 0)
    numbers = list(range(1, multipart.part_count(row) + 1))
    signed = multipart.sign_parts(row, numbers)
    return [
        CompletedPart(p.part_number, fake.accept_part(p, data[(n - 1) * size : n * size]))
        for n, p in zip(numbers, signed, strict=True)
    ]


@pytest.mark.parametrize(
    ("size", "part_size"),
    [
        (1, 5 * MiB),
        (12 * MiB, 5 * MiB),
        (50_000 * MiB, 5 * MiB),
        (50_001 * MiB, 6 * MiB),  # 10 000 parts of 5 MiB are not enough any more
        (5 * 1024 * 1024 * MiB, 525 * MiB),
    ],
)
def test_part_size_is_at_least_5_mib_and_fits_10000_parts(size: int, part_size: int) -> None:
    chosen = multipart.choose_part_size(size, S3Service.capabilities)
    assert chosen == part_size
    assert chosen >= 5 * MiB and -(-size // chosen) <= 10_000


def test_part_size_beyond_5_gib_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        multipart.choose_part_size(10_000 * 5 * 1024 * MiB + 1, S3Service.capabilities)


def test_whole_flow_verifies_like_confirm(memory_storage, owner) -> None:
    data = png_bytes(12 * MiB)
    row = start(owner, len(data))
    assert row.status == UploadStatus.PENDING and row.provider == "s3"
    assert row.multipart_upload_id in memory_storage.multipart_upload_ids()
    assert (row.multipart_part_size, multipart.part_count(row)) == (5 * MiB, 3)
    assert row.key.startswith(f"uploads/{owner.pk}/") and row.key.endswith("/big.png")

    parts = upload_parts(memory_storage, row, data)
    assert [p.part_number for p in multipart.list_parts(row)] == [1, 2, 3]

    done = multipart.complete_multipart_upload(row, list(reversed(parts)))  # any order

    assert done.status == UploadStatus.UPLOADED
    assert done.metadata["bytes"] == len(data)
    assert done.metadata["content_type"] == "image/png"
    assert memory_storage.read_head(done.object_ref(), 8) == data[:8]
    assert memory_storage.multipart_upload_ids() == []
    # Completing again is harmless (the same row).
    assert multipart.complete_multipart_upload(done, parts).status == UploadStatus.UPLOADED


def test_validation_and_quota_are_those_of_create_upload(memory_storage, owner) -> None:
    with pytest.raises(ValidationFailed) as caught:
        start(owner, 12 * MiB, content_type="text/html")
    assert caught.value.code == "content_type_not_allowed"
    with pytest.raises(ValidationFailed) as caught:
        start(owner, 10**12)
    assert caught.value.code == "file_too_large"
    from backend.core.models import AppConfig

    config = AppConfig.load()
    config.max_pending_uploads_per_user = 1
    config.save()
    start(owner, 6 * MiB)
    with pytest.raises(QuotaExceeded):
        start(owner, 6 * MiB)


def test_sign_refuses_part_numbers_out_of_range(memory_storage, owner) -> None:
    row = start(owner, 12 * MiB)
    for numbers in ([0], [4], [1, 1], []):
        with pytest.raises(ValidationFailed) as caught:
            multipart.sign_parts(row, numbers)
        assert caught.value.code == "invalid_part_number"
        assert caught.value.details["part_count"] == 3


def test_complete_needs_every_part(memory_storage, owner) -> None:
    data = png_bytes(12 * MiB)
    row = start(owner, len(data))
    parts = upload_parts(memory_storage, row, data)
    with pytest.raises(ValidationFailed) as caught:
        multipart.complete_multipart_upload(row, parts[:2])
    assert caught.value.code == "missing_parts" and caught.value.details["missing"] == [3]


def test_wrong_etag_is_a_400_and_the_row_stays_pending(memory_storage, owner) -> None:
    data = png_bytes(6 * MiB)
    row = start(owner, len(data))
    parts = upload_parts(memory_storage, row, data)
    wrong = [parts[0], CompletedPart(2, '"' + "f" * 32 + '"')]
    with pytest.raises(ValidationFailed) as caught:
        multipart.complete_multipart_upload(row, wrong)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_part"
    assert caught.value.details["provider_code"] == "InvalidPart"
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
    assert multipart.complete_multipart_upload(row, parts).status == UploadStatus.UPLOADED


def test_html_declared_as_png_fails_and_is_deleted(memory_storage, owner) -> None:
    data = HTML + b" " * (6 * MiB - len(HTML))
    row = start(owner, len(data))
    parts = upload_parts(memory_storage, row, data)
    with pytest.raises(VerificationFailed) as caught:
        multipart.complete_multipart_upload(row, parts)
    assert "first bytes are not PNG" in caught.value.message
    row.refresh_from_db()
    assert row.status == UploadStatus.FAILED
    assert not memory_storage.inspect(row.object_ref()).exists


def test_abort_frees_parts_and_marks_the_row_deleted(memory_storage, owner) -> None:
    data = png_bytes(6 * MiB)
    row = start(owner, len(data))
    upload_parts(memory_storage, row, data)
    aborted = multipart.abort_multipart_upload(row)
    assert aborted.status == UploadStatus.DELETED
    assert aborted.metadata["deleted_reason"] == "aborted by client"
    assert memory_storage.multipart_upload_ids() == []
    assert multipart.abort_multipart_upload(aborted).status == UploadStatus.DELETED  # idempotent
    with pytest.raises(Gone):
        multipart.sign_parts(aborted, [1])


def test_abort_of_a_completed_upload_is_409(memory_storage, owner) -> None:
    data = png_bytes(100)
    row = start(owner, len(data))
    done = multipart.complete_multipart_upload(row, upload_parts(memory_storage, row, data))
    with pytest.raises(Conflict) as caught:
        multipart.abort_multipart_upload(done)
    assert caught.value.code == "multipart_completed"


def test_provider_outage_leaves_the_row_unchanged(memory_storage, owner) -> None:
    data = png_bytes(6 * MiB)
    row = start(owner, len(data))
    parts = upload_parts(memory_storage, row, data)
    before = MediaUpload.objects.values().get(pk=row.pk)
    memory_storage.available = False
    for call in (
        lambda: multipart.list_parts(row),
        lambda: multipart.complete_multipart_upload(row, parts),
        lambda: multipart.abort_multipart_upload(row),
    ):
        with pytest.raises(ProviderUnavailable):
            call()
    # Signing is local (S3 presigning makes no request), so it keeps working during an outage.
    assert [p.part_number for p in multipart.sign_parts(row, [1, 2])] == [1, 2]
    assert MediaUpload.objects.values().get(pk=row.pk) == before
    with pytest.raises(ProviderUnavailable):
        start(owner, 6 * MiB)
    assert MediaUpload.objects.count() == 1


def test_single_request_uploads_are_not_multipart(memory_storage, owner) -> None:
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=100
    )
    with pytest.raises(Conflict) as caught:
        multipart.sign_parts(row, [1])
    assert caught.value.code == "not_multipart"


def test_expired_session_is_gone(memory_storage, owner) -> None:
    row = start(owner, 6 * MiB)
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(days=2))
    row.refresh_from_db()
    with pytest.raises(Gone):
        multipart.sign_parts(row, [1])


def test_expire_orphans_aborts_the_multipart_upload(memory_storage, owner) -> None:
    data = png_bytes(6 * MiB)
    row = start(owner, len(data))
    upload_parts(memory_storage, row, data)
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(days=2))

    report = cleanup.expire_orphans()

    assert report.multipart_aborted == 1 and report.deleted == 1
    assert memory_storage.multipart_upload_ids() == []
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.EXPIRED


def test_expire_orphans_outage_during_abort_leaves_the_claim(memory_storage, owner) -> None:
    row = start(owner, 6 * MiB)
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(days=2))
    memory_storage.available = False
    report = cleanup.expire_orphans()
    assert report.failed == 1
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.EXPIRING


def test_delete_of_a_pending_multipart_upload_aborts_it(memory_storage, owner) -> None:
    row = start(owner, 6 * MiB)
    services.request_delete(owner=owner, upload_id=row.pk)
    services.delete_at_provider(row.pk)
    assert memory_storage.multipart_upload_ids() == []
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.DELETED


def test_cloudinary_active_is_refused(cloudinary_standin, use_provider, owner) -> None:
    use_provider("cloudinary")
    with pytest.raises(NotSupported) as caught:
        start(owner, 12 * MiB)
    assert caught.value.status_code == 400
    assert caught.value.code == "multipart_not_supported"
    assert "cloudinary" in caught.value.message
    assert MediaUpload.objects.count() == 0


def test_s3_outage_leaves_the_row_unchanged_and_signing_needs_no_request(
    s3_storage, use_provider, owner, monkeypatch
) -> None:
    """The same against S3Service: every S3 request fails, the row stays as it was."""
    from botocore.exceptions import EndpointConnectionError

    use_provider("s3")
    row = start(owner, 12 * MiB)
    before = MediaUpload.objects.values().get(pk=row.pk)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    for name in (
        "list_parts",
        "complete_multipart_upload",
        "abort_multipart_upload",
        "head_object",
        "get_object",
        "create_multipart_upload",
    ):
        monkeypatch.setattr(s3_storage.client, name, down)
    parts = [CompletedPart(n, '"etag"') for n in (1, 2, 3)]
    for call in (
        lambda: multipart.list_parts(row),
        lambda: multipart.complete_multipart_upload(row, parts),
        lambda: multipart.abort_multipart_upload(row),
        lambda: start(owner, 6 * MiB),
    ):
        with pytest.raises(ProviderUnavailable):
            call()
    assert len(multipart.sign_parts(row, [1, 2, 3])) == 3
    assert MediaUpload.objects.values().get(pk=row.pk) == before
    assert MediaUpload.objects.count() == 1


def test_part_urls_are_bound_to_each_part_length(memory_storage, owner) -> None:
    from tests.fixtures.memory import UploadRefused

    data = png_bytes(12 * MiB)
    row = start(owner, len(data))
    assert [multipart.part_length(row, n) for n in (1, 2, 3)] == [5 * MiB, 5 * MiB, 2 * MiB]
    first, last = multipart.sign_parts(row, [1, 3])
    with pytest.raises(UploadRefused):
        memory_storage.accept_part(last, data[: 5 * MiB])  # more than the last part holds
    with pytest.raises(UploadRefused):
        memory_storage.accept_part(first, data[: 6 * MiB])
    assert memory_storage.accept_part(last, data[10 * MiB :])


def test_reconcile_keeps_multipart_uploads_a_live_row_owns(memory_storage, owner) -> None:
    from django.test import override_settings

    from backend.storage.base import ObjectRef

    live = start(owner, 6 * MiB)
    claimed = start(owner, 6 * MiB)
    MediaUpload.objects.filter(pk=claimed.pk).update(
        status=UploadStatus.EXPIRING, claimed_at=timezone.now()
    )
    stray = memory_storage.create_multipart_upload(ObjectRef(f"uploads/{owner.pk}/x/stray.bin"))
    # Reconcile an hour after the start: older than its grace, well within the rows' lifetime.
    later = timezone.now() + timedelta(hours=1)
    with override_settings(UPLOAD_RECONCILE_GRACE_SECONDS=600):
        report = cleanup.reconcile("s3", now=later)

    assert report.multipart_aborted == 1
    remaining = memory_storage.multipart_upload_ids()
    assert stray.upload_id not in remaining
    assert {live.multipart_upload_id, claimed.multipart_upload_id} <= set(remaining)
    # The live upload still completes.
    data = png_bytes(6 * MiB)
    done = multipart.complete_multipart_upload(live, upload_parts(memory_storage, live, data))
    assert done.status == UploadStatus.UPLOADED
