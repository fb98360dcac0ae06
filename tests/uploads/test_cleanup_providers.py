"""The cleanup jobs against the real provider services: S3Service on moto and CloudinaryService
on the local Cloudinary stand-in, both configured at once. Every row goes to the provider
recorded on it, each in its own batch call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from backend.storage.base import ObjectRef
from backend.uploads import cleanup
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import S3_TEST_BUCKET
from tests.uploads.test_cleanup_race import PNG
from tests.uploads.test_cleanup_scale import DeleteCallCounter

pytestmark = pytest.mark.django_db


@pytest.fixture
def both(s3_storage: Any, cloudinary_standin: Any) -> Iterator[tuple[Any, Any]]:
    with override_settings(UPLOAD_ORPHAN_GRACE_SECONDS=60, UPLOAD_RECONCILE_GRACE_SECONDS=0):
        yield s3_storage, cloudinary_standin


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("both-owner", password="x")


def orphan_row(owner: Any, provider: str, content_type: str = "image/png") -> MediaUpload:
    uid = uuid.uuid4()
    return MediaUpload.objects.create(
        id=uid,
        owner=owner,
        provider=provider,
        key=f"uploads/{owner.pk}/{uid.hex}/pic",
        original_filename="pic.png",
        content_type=content_type,
        declared_size=len(PNG),
        expires_at=timezone.now() - timedelta(hours=2),
    )


def upload_to_cloudinary(handle: Any, key: str, content_type: str = "image/png") -> None:
    """Upload through signed instructions, as a browser would."""
    instructions = handle.service.presign_upload(
        ObjectRef(key, content_type), size=len(PNG), max_size=len(PNG), expires_in=600
    )
    response = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("pic.png", PNG, content_type)},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def cloudinary_ids(handle: Any) -> set[str]:
    return {public_id for _, public_id in handle.objects}


def test_rows_of_both_providers_each_go_to_their_own_provider(both, owner) -> None:
    s3, cld = both
    s3_rows = [orphan_row(owner, "s3") for _ in range(3)]
    cld_rows = [orphan_row(owner, "cloudinary") for _ in range(3)]
    for row in s3_rows:
        # Never confirmed: the object is where the POST form wrote it, the staging key.
        s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=s3.staged_key(row.key), Body=PNG)
    for row in cld_rows:
        upload_to_cloudinary(cld, row.key)
    # The same public_id at the other provider: it must not be touched.
    s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=cld_rows[0].key, Body=PNG)
    assert cloudinary_ids(cld) == {r.key for r in cld_rows}

    with DeleteCallCounter(s3.client) as s3_calls:
        report = cleanup.expire_orphans()

    assert s3_calls.calls == [6]  # one call: each row's key and its staging key
    assert report.providers["s3"].deleted == 3 and report.providers["cloudinary"].deleted == 3
    assert cloudinary_ids(cld) == set()
    for row in s3_rows:
        assert not s3.inspect(ObjectRef(row.key)).exists
        assert not s3.inspect(ObjectRef(s3.staged_key(row.key))).exists
    assert s3.inspect(ObjectRef(cld_rows[0].key)).exists
    assert MediaUpload.objects.exclude(status=UploadStatus.EXPIRED).count() == 0


def test_cloudinary_outage_leaves_its_rows_retryable_while_s3_rows_expire(both, owner) -> None:
    s3, cld = both
    s3_row = orphan_row(owner, "s3")
    cld_row = orphan_row(owner, "cloudinary")
    s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=s3_row.key, Body=PNG)
    upload_to_cloudinary(cld, cld_row.key)

    cld.standin.fail_with = 500
    report = cleanup.expire_orphans()
    cld.standin.fail_with = None

    assert MediaUpload.objects.get(pk=s3_row.pk).status == UploadStatus.EXPIRED
    assert MediaUpload.objects.get(pk=cld_row.pk).status == UploadStatus.EXPIRING
    assert cloudinary_ids(cld) == {cld_row.key}
    assert report.providers["cloudinary"].failed == 1

    later = timezone.now() + cleanup.CLAIM_TIMEOUT + timedelta(minutes=1)
    cleanup.expire_orphans(now=later)
    assert MediaUpload.objects.get(pk=cld_row.pk).status == UploadStatus.EXPIRED
    assert cloudinary_ids(cld) == set()


def test_reconcile_at_cloudinary_removes_strays_only(both, owner) -> None:
    _, cld = both
    kept = orphan_row(owner, "cloudinary")
    MediaUpload.objects.filter(pk=kept.pk).update(status=UploadStatus.UPLOADED)
    upload_to_cloudinary(cld, kept.key)
    stray = f"uploads/{owner.pk}/{uuid.uuid4().hex}/stray"
    upload_to_cloudinary(cld, stray)
    raw_stray = f"uploads/{owner.pk}/{uuid.uuid4().hex}/notes.txt"
    upload_to_cloudinary(cld, raw_stray, content_type="text/plain")

    report = cleanup.reconcile("cloudinary", now=timezone.now() + timedelta(seconds=5))

    assert report.deleted == 2
    assert cloudinary_ids(cld) == {kept.key}


def test_reconcile_at_s3_deletes_strays_and_aborts_stale_multipart_uploads(both, owner) -> None:
    s3, _ = both
    kept = orphan_row(owner, "s3")
    MediaUpload.objects.filter(pk=kept.pk).update(status=UploadStatus.UPLOADED)
    stray = f"uploads/{owner.pk}/{uuid.uuid4().hex}/stray.png"
    foreign = "elsewhere/not-ours.png"
    for key in (kept.key, stray, foreign):
        s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=key, Body=PNG)
    started = s3.client.create_multipart_upload(
        Bucket=S3_TEST_BUCKET, Key=f"uploads/{owner.pk}/{uuid.uuid4().hex}/big.mp4"
    )

    report = cleanup.reconcile("s3", now=timezone.now() + timedelta(seconds=5))

    assert report.deleted == 1 and report.multipart_aborted == 1
    assert s3.inspect(ObjectRef(kept.key)).exists and s3.inspect(ObjectRef(foreign)).exists
    assert not s3.inspect(ObjectRef(stray)).exists
    uploads = s3.client.list_multipart_uploads(Bucket=S3_TEST_BUCKET).get("Uploads", [])
    assert started["UploadId"] not in {u["UploadId"] for u in uploads}


def test_reconcile_at_s3_leaves_multipart_uploads_of_live_rows(both, owner, monkeypatch) -> None:
    """A pending multipart row may still complete until expires_at + grace (a day): reconcile
    must not abort its upload, even long after its own grace. One row lookup per listing page."""
    from backend.uploads.services import multipart
    from tests.fixtures.providers import use_provider

    s3, _ = both
    use_provider("s3")
    live = multipart.create_multipart_upload(
        owner=owner, filename="big.png", content_type="image/png", size=6 * 1024 * 1024
    )
    strays = [
        s3.client.create_multipart_upload(
            Bucket=S3_TEST_BUCKET, Key=f"uploads/{owner.pk}/{uuid.uuid4().hex}/big.mp4"
        )["UploadId"]
        for _ in range(2)
    ]
    original = s3.client.list_multipart_uploads
    pages: list[dict[str, Any]] = []
    monkeypatch.setattr(
        s3.client, "list_multipart_uploads", lambda **kw: pages.append(kw) or original(**kw)
    )
    lookups: list[int] = []
    owned = cleanup._owned_uploads
    monkeypatch.setattr(
        cleanup,
        "_owned_uploads",
        lambda p, uploads: lookups.append(len(uploads)) or owned(p, uploads),
    )

    report = cleanup.reconcile("s3", now=timezone.now() + timedelta(hours=2))

    assert report.multipart_aborted == 2
    assert lookups == [3] and len(pages) == 1  # one row lookup for the page
    left = {u["UploadId"] for u in original(Bucket=S3_TEST_BUCKET).get("Uploads", [])}
    assert left == {live.multipart_upload_id}
    assert MediaUpload.objects.get(pk=live.pk).status == UploadStatus.PENDING
    assert not set(strays) & left


def test_reconcile_keeps_staged_objects_only_while_their_row_may_be_confirmed(
    s3_storage: Any, owner: Any
) -> None:
    pending = orphan_row(owner, "s3")
    uploaded = orphan_row(owner, "s3")
    MediaUpload.objects.filter(pk=uploaded.pk).update(status=UploadStatus.UPLOADED)
    no_row = f"uploads/{owner.pk}/{uuid.uuid4().hex}/pic"
    for key in (
        s3_storage.staged_key(pending.key),  # not confirmed yet: may still be
        uploaded.key,  # the confirmed object
        s3_storage.staged_key(uploaded.key),  # a form replayed after confirm
        s3_storage.staged_key(no_row),  # staged for a row that never was
    ):
        s3_storage.client.put_object(Bucket=S3_TEST_BUCKET, Key=key, Body=PNG)

    with override_settings(UPLOAD_RECONCILE_GRACE_SECONDS=0):
        report = cleanup.reconcile("s3", now=timezone.now() + timedelta(minutes=1))

    assert report.providers["s3"].deleted == 2
    left = {obj.ref.key for obj in s3_storage.iter_objects("uploads/")}
    assert left == {s3_storage.staged_key(pending.key), uploaded.key}
