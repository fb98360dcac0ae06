"""expire_orphans and reconcile over the in-memory provider fake (installed through the factory).

The S3 (moto) and Cloudinary stand-in runs are in test_cleanup_providers.py; the late-confirm race
in test_cleanup_race.py; the 10 000-row scale check in test_cleanup_scale.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from backend.core.errors import ProviderUnavailable
from backend.storage.base import DeleteResult, ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import cleanup
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.memory import InMemoryStorageService

pytestmark = pytest.mark.django_db

GRACE = 3600


def make_upload(
    owner: Any,
    provider: str,
    *,
    status: str = UploadStatus.PENDING,
    expired_for: timedelta = timedelta(hours=2),
    claimed_at: datetime | None = None,
    content_type: str = "image/png",
) -> MediaUpload:
    """A row whose presigned instructions expired `expired_for` ago."""
    uid = uuid.uuid4()
    return MediaUpload.objects.create(
        id=uid,
        owner=owner,
        provider=provider,
        key=f"uploads/{owner.pk}/{uid.hex}/file.png",
        original_filename="file.png",
        content_type=content_type,
        declared_size=10,
        status=status,
        expires_at=timezone.now() - expired_for,
        claimed_at=claimed_at,
    )


def status_of(row: MediaUpload) -> str:
    return MediaUpload.objects.values_list("status", flat=True).get(pk=row.pk)


class FlakyMemoryService(InMemoryStorageService):
    """The in-memory fake with a provider that goes down after `fail_after` delete calls, or that
    refuses some keys (what S3's DeleteObjects reports per key, e.g. AccessDenied)."""

    def __init__(self, name: str, *, delete_batch_size: int, fail_after: int | None = None):
        super().__init__(name, delete_batch_size=delete_batch_size)
        self.fail_after = fail_after
        self.refuse: set[str] = set()
        self.delete_calls: list[list[str]] = []

    def delete_many(self, refs: Any) -> DeleteResult:
        self.delete_calls.append([r.key for r in refs])
        if self.fail_after is not None and len(self.delete_calls) > self.fail_after:
            self.available = False
        refused = [r for r in refs if r.key in self.refuse]
        result = super().delete_many([r for r in refs if r.key not in self.refuse])
        return DeleteResult(deleted=result.deleted, failed={r.key: "AccessDenied" for r in refused})


@pytest.fixture
def providers() -> Iterator[dict[str, FlakyMemoryService]]:
    CloudStorageFactory.reset()
    fakes = {
        "s3": FlakyMemoryService("s3", delete_batch_size=1000),
        "cloudinary": FlakyMemoryService("cloudinary", delete_batch_size=100),
    }
    for fake in fakes.values():
        CloudStorageFactory.install(fake)
    with override_settings(UPLOAD_ORPHAN_GRACE_SECONDS=GRACE, UPLOAD_RECONCILE_GRACE_SECONDS=GRACE):
        yield fakes
    CloudStorageFactory.reset()


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("cleanup-owner", password="x")


def put(fake: InMemoryStorageService, row: MediaUpload) -> None:
    fake.put(ObjectRef(row.key, row.content_type), b"\x89PNG\r\n\x1a\n12")


def test_expires_only_rows_past_expiry_plus_grace(providers, owner) -> None:
    s3 = providers["s3"]
    old = make_upload(owner, "s3", expired_for=timedelta(seconds=GRACE + 60))
    in_grace = make_upload(owner, "s3", expired_for=timedelta(seconds=GRACE - 60))
    not_expired = make_upload(owner, "s3", expired_for=timedelta(hours=-1))
    confirmed = make_upload(owner, "s3", status=UploadStatus.UPLOADED)
    for row in (old, in_grace, not_expired, confirmed):
        put(s3, row)

    report = cleanup.expire_orphans()

    assert status_of(old) == UploadStatus.EXPIRED
    assert status_of(in_grace) == UploadStatus.PENDING
    assert status_of(not_expired) == UploadStatus.PENDING
    assert status_of(confirmed) == UploadStatus.UPLOADED
    assert s3.keys() == sorted([in_grace.key, not_expired.key, confirmed.key])
    assert report.deleted == 1 and report.failed == 0
    # Idempotent: a second run finds nothing and calls nobody.
    calls = len(s3.delete_calls)
    assert cleanup.expire_orphans().candidates == 0
    assert len(s3.delete_calls) == calls


def test_each_row_goes_to_its_own_provider_in_its_batch_size(providers, owner) -> None:
    s3, cld = providers["s3"], providers["cloudinary"]
    s3_rows = [make_upload(owner, "s3") for _ in range(5)]
    cld_rows = [make_upload(owner, "cloudinary") for _ in range(250)]
    for row in s3_rows:
        put(s3, row)
    for row in cld_rows:
        put(cld, row)
    # Same key at the other provider must survive: only the recorded provider is asked.
    put(cld, s3_rows[0])

    report = cleanup.expire_orphans()

    assert report.providers["s3"].deleted == 5
    assert report.providers["cloudinary"].deleted == 250
    assert [len(c) for c in s3.delete_calls] == [5]
    assert [len(c) for c in cld.delete_calls] == [100, 100, 50]
    assert {k for call in s3.delete_calls for k in call} == {r.key for r in s3_rows}
    assert {k for call in cld.delete_calls for k in call} == {r.key for r in cld_rows}
    assert s3.keys() == []
    assert cld.keys() == [s3_rows[0].key]
    assert MediaUpload.objects.filter(status=UploadStatus.EXPIRED).count() == 255


def test_provider_down_mid_run_leaves_failed_batch_retryable(providers, owner) -> None:
    cld = providers["cloudinary"]
    cld.fail_after = 1  # first call succeeds, the second raises ProviderUnavailable
    rows = [make_upload(owner, "cloudinary") for _ in range(250)]
    for row in rows:
        put(cld, row)

    report = cleanup.expire_orphans()

    statuses = dict(MediaUpload.objects.values_list("key", "status"))
    first_batch = set(cld.delete_calls[0])
    failed_batch = set(cld.delete_calls[1])
    assert len(first_batch) == 100 and len(failed_batch) == 100
    assert len(cld.delete_calls) == 2  # stopped instead of hammering a provider that is down
    assert all(statuses[k] == UploadStatus.EXPIRED for k in first_batch)
    # Nothing is marked expired that was not deleted, and the failed batch is still claimed ...
    assert all(statuses[k] == UploadStatus.EXPIRING for k in failed_batch)
    assert set(cld.keys()) == {r.key for r in rows} - first_batch
    # ... the 50 never tried are untouched and still pending.
    assert sum(1 for s in statuses.values() if s == UploadStatus.PENDING) == 50
    assert report.providers["cloudinary"].deleted == 100
    assert report.failed == 100

    # The provider is back. A run before the claim timeout leaves the failed batch alone ...
    cld.available, cld.fail_after = True, None
    cleanup.expire_orphans()
    statuses = dict(MediaUpload.objects.values_list("key", "status"))
    assert all(statuses[k] == UploadStatus.EXPIRING for k in failed_batch)
    assert MediaUpload.objects.filter(status=UploadStatus.PENDING).count() == 0
    # ... a run after it retakes the claims and finishes the job.
    later = timezone.now() + cleanup.CLAIM_TIMEOUT + timedelta(minutes=1)
    cleanup.expire_orphans(now=later)
    assert MediaUpload.objects.exclude(status=UploadStatus.EXPIRED).count() == 0
    assert cld.keys() == []


def test_keys_the_provider_refuses_are_not_marked_expired(providers, owner) -> None:
    s3 = providers["s3"]
    rows = [make_upload(owner, "s3") for _ in range(4)]
    for row in rows:
        put(s3, row)
    s3.refuse = {rows[1].key}

    report = cleanup.expire_orphans()

    assert status_of(rows[1]) == UploadStatus.EXPIRING
    assert [status_of(r) for r in (rows[0], rows[2], rows[3])] == [UploadStatus.EXPIRED] * 3
    assert s3.keys() == [rows[1].key]
    assert report.failures == {f"s3:{rows[1].key}": "AccessDenied"}


def test_fresh_claims_are_left_alone_and_stale_claims_retaken(providers, owner) -> None:
    s3 = providers["s3"]
    fresh = make_upload(owner, "s3", status=UploadStatus.EXPIRING, claimed_at=timezone.now())
    stale = make_upload(
        owner,
        "s3",
        status=UploadStatus.EXPIRING,
        claimed_at=timezone.now() - cleanup.CLAIM_TIMEOUT - timedelta(seconds=5),
    )
    put(s3, fresh)
    put(s3, stale)

    cleanup.expire_orphans()

    assert status_of(fresh) == UploadStatus.EXPIRING
    assert status_of(stale) == UploadStatus.EXPIRED
    assert s3.keys() == [fresh.key]


def test_unconfigured_provider_is_skipped_not_lost(owner) -> None:
    CloudStorageFactory.reset()  # nothing installed, no provider settings in the test suite
    row = make_upload(owner, "cloudinary")
    report = cleanup.expire_orphans()
    assert status_of(row) == UploadStatus.PENDING
    assert "not configured" in report.providers["cloudinary"].skipped_reason


def test_limit_bounds_one_run(providers, owner) -> None:
    rows = [make_upload(owner, "cloudinary") for _ in range(30)]
    report = cleanup.expire_orphans(limit=12)
    assert report.deleted == 12
    assert MediaUpload.objects.filter(status=UploadStatus.EXPIRED).count() == 12
    assert len(rows) - 12 == MediaUpload.objects.filter(status=UploadStatus.PENDING).count()


def test_reconcile_deletes_only_old_objects_no_live_row_accounts_for(providers, owner) -> None:
    s3 = providers["s3"]
    live = [
        make_upload(owner, "s3", status=s, expired_for=timedelta(hours=-1))
        for s in (UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.DELETING)
    ]
    dead = [
        make_upload(owner, "s3", status=s)
        for s in (UploadStatus.EXPIRED, UploadStatus.DELETED, UploadStatus.FAILED)
    ]
    for row in live + dead:
        put(s3, row)
    stray = [ObjectRef(f"uploads/{owner.pk}/{uuid.uuid4().hex}/stray.bin") for _ in range(3)]
    for ref in stray:
        s3.put(ref, b"x")
    outside_prefix = ObjectRef("other-app/keep-me.bin")
    s3.put(outside_prefix, b"x")

    # Everything was just written: inside the grace period nothing is touched.
    assert cleanup.reconcile("s3").candidates == 0
    later = timezone.now() + timedelta(seconds=GRACE + 60)
    dry = cleanup.reconcile("s3", now=later, dry_run=True)
    assert dry.candidates == 6 and s3.delete_calls == []

    report = cleanup.reconcile("s3", now=later, page_size=2)

    assert report.deleted == 6
    assert sorted(s3.keys()) == sorted([r.key for r in live] + [outside_prefix.key])
    # Rows are facts about the past; reconcile does not rewrite them.
    assert [status_of(r) for r in dead] == [r.status for r in dead]


def test_reconcile_batches_at_the_provider_batch_size(providers, owner) -> None:
    cld = providers["cloudinary"]
    for i in range(230):
        cld.put(ObjectRef(f"uploads/1/{i:04d}/x"), b"x")
    later = timezone.now() + timedelta(seconds=GRACE + 60)
    report = cleanup.reconcile("cloudinary", now=later, page_size=70)
    assert [len(c) for c in cld.delete_calls] == [100, 100, 30]
    assert report.deleted == 230 and cld.keys() == []


def test_reconcile_provider_down_raises_for_the_job_to_retry(providers) -> None:
    providers["s3"].available = False
    with pytest.raises(ProviderUnavailable):
        cleanup.reconcile("s3")


def test_run_cleanup_command_is_a_dry_run_unless_apply(providers, owner, capsys) -> None:
    s3 = providers["s3"]
    rows = [make_upload(owner, "s3") for _ in range(3)]
    for row in rows:
        put(s3, row)

    call_command("run_cleanup", "expire")
    out = capsys.readouterr().out
    assert "s3: would delete 3" in out and rows[0].key in out and "Dry run" in out
    assert MediaUpload.objects.filter(status=UploadStatus.PENDING).count() == 3
    assert len(s3.keys()) == 3

    call_command("run_cleanup", "expire", "--apply", "--provider", "s3")
    out = capsys.readouterr().out
    assert "3 deleted" in out and "Dry run" not in out
    assert MediaUpload.objects.filter(status=UploadStatus.EXPIRED).count() == 3
    assert s3.keys() == []


def test_run_cleanup_reconcile_command(providers, capsys) -> None:
    providers["cloudinary"].put(ObjectRef("uploads/9/abc/stray"), b"x")
    with override_settings(UPLOAD_RECONCILE_GRACE_SECONDS=0):
        call_command("run_cleanup", "reconcile", "--provider", "cloudinary")
        assert "would delete 1" in capsys.readouterr().out
        assert providers["cloudinary"].keys() == ["uploads/9/abc/stray"]
        call_command("run_cleanup", "reconcile", "--apply")
    out = capsys.readouterr().out
    assert "cloudinary: 1 candidates, 1 deleted" in out and "s3: 0 candidates" in out
    assert providers["cloudinary"].keys() == []


def test_run_cleanup_reports_failures_with_non_zero_exit(providers, owner) -> None:
    providers["s3"].available = False
    make_upload(owner, "s3")
    with pytest.raises(CommandError, match="failed"):
        call_command("run_cleanup", "expire", "--apply")
