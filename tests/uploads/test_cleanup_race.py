"""A late confirm racing the orphan cleanup of the same row, against moto S3.

Invariant: a row ends `uploaded` with its object present, or `expired` with its object gone;
never `uploaded` without its object. A client confirm past expiry + grace is 410 Gone.

The late confirm is a provider notification (`source="s3_event"`): a client confirm is honoured
only until expires_at + UPLOAD_ORPHAN_GRACE_SECONDS, the same instant the cleanup may first claim
the row, so it is refused (410) before it can race anything; a provider event is honoured until
the claim (it proves the upload started in time), so that is the real race. The client-confirm
vs. claim race on the conditional UPDATE itself is in test_services_race.py.
"""

from __future__ import annotations

import random
import struct
import threading
import zlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from backend.core.errors import ApplicationError, Conflict, Gone
from backend.storage.base import ObjectRef
from backend.uploads import cleanup, services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import S3_TEST_BUCKET, use_provider

GRACE = 60
ITERATIONS = 20


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = tiny_png()


def uploaded_orphan(service: Any, owner: Any) -> MediaUpload:
    """A real upload (created through the service, object in the bucket) whose instructions
    expired long enough ago for the cleanup to take it."""
    row, _ = services.create_upload(
        owner=owner, filename="late.png", content_type="image/png", size=len(PNG)
    )
    service.client.put_object(Bucket=S3_TEST_BUCKET, Key=row.key, Body=PNG, ContentType="image/png")
    MediaUpload.objects.filter(pk=row.pk).update(
        expires_at=timezone.now() - timedelta(seconds=GRACE + 5)
    )
    return row


def object_exists(service: Any, row: MediaUpload) -> bool:
    return bool(service.inspect(ObjectRef(row.key, row.content_type)).exists)


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("racer", password="x")


@pytest.fixture
def s3(s3_storage: Any, transactional_db: None) -> Any:
    use_provider("s3")
    with override_settings(UPLOAD_ORPHAN_GRACE_SECONDS=GRACE):
        yield s3_storage


# --- deterministic orders (any database) -------------------------------------------------------


def test_confirm_after_cleanup_is_gone_and_object_is_gone(s3, owner) -> None:
    row = uploaded_orphan(s3, owner)
    report = cleanup.expire_orphans()
    assert report.deleted == 1
    for source in ("client", "s3_event"):
        with pytest.raises(Gone) as exc:
            services.finalise_upload(row.id, source=source)
        assert exc.value.status_code == 410
    with pytest.raises(Gone):
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    row.refresh_from_db()
    assert row.status == UploadStatus.EXPIRED and not object_exists(s3, row)


def test_cleanup_after_late_event_confirm_leaves_the_upload_alone(s3, owner) -> None:
    row = uploaded_orphan(s3, owner)
    services.finalise_upload(row.id, source="s3_event")
    report = cleanup.expire_orphans()
    assert report.candidates == 0
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED and object_exists(s3, row)


def test_confirm_while_claimed_is_gone(s3, owner) -> None:
    row = uploaded_orphan(s3, owner)
    _claimed_at, won = cleanup._claim("s3", timezone.now(), 10)
    assert [r["id"] for r in won] == [row.id]
    with pytest.raises(Gone):
        services.finalise_upload(row.id, source="s3_event")
    row.refresh_from_db()
    assert row.status == UploadStatus.EXPIRING and object_exists(s3, row)


# --- the real race: two threads, PostgreSQL ----------------------------------------------------


def _run(fn: Any, results: dict[str, Any], name: str, barrier: threading.Barrier, delay: float):
    import time

    try:
        barrier.wait(timeout=10)
        if delay:
            time.sleep(delay)
        results[name] = fn()
    except BaseException as exc:  # reported to the main thread
        results[name] = exc
    finally:
        connection.close()


@pytest.mark.postgres
def test_late_confirm_racing_cleanup_never_leaves_uploaded_without_object(s3, owner) -> None:
    rng = random.Random(20240501)
    outcomes: list[str] = []
    for i in range(ITERATIONS):
        row = uploaded_orphan(s3, owner)
        # Mostly simultaneous starts, plus some head starts each way so both orders happen.
        confirm_delay, cleanup_delay = [(0, 0), (0.03, 0), (0, 0.03), (0, rng.random() / 100)][
            i % 4
        ]
        results: dict[str, Any] = {}
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(
                target=_run,
                args=(
                    lambda row=row: services.finalise_upload(row.id, source="s3_event"),
                    results,
                    "confirm",
                    barrier,
                    confirm_delay,
                ),
            ),
            threading.Thread(
                target=_run,
                args=(
                    lambda: cleanup.expire_orphans(providers=["s3"]),
                    results,
                    "cleanup",
                    barrier,
                    cleanup_delay,
                ),
            ),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)

        row.refresh_from_db()
        present = object_exists(s3, row)
        assert not isinstance(results["cleanup"], BaseException), results["cleanup"]
        if row.status == UploadStatus.UPLOADED:
            assert present, f"iteration {i}: uploaded row whose object was deleted"
            assert isinstance(results["confirm"], MediaUpload)
            assert results["cleanup"].candidates == 0
        else:
            assert row.status == UploadStatus.EXPIRED, f"iteration {i}: {row.status}"
            assert not present
            # Lost the race: 410 (claimed first) or 409 (object already gone when it looked).
            assert isinstance(results["confirm"], Gone | Conflict), results["confirm"]
            with pytest.raises(Gone):
                services.finalise_upload(row.id, source="s3_event")
        outcomes.append(row.status)
    assert isinstance(results["confirm"], MediaUpload | ApplicationError)
    # Both orders were exercised.
    assert set(outcomes) == {UploadStatus.UPLOADED, UploadStatus.EXPIRED}, outcomes
