"""Per-user quotas in O(1) (backend/uploads/quotas.py): exact under concurrency, released on
every exit from `pending` exactly once, re-derived from the rows by the cleanup job."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.core.config import get_app_config
from backend.core.models import AppConfig
from backend.uploads import cleanup, quotas, services
from backend.uploads.models import MediaUpload, UploadQuota, UploadStatus
from tests.uploads.test_api_support import HTML, png_bytes, store

UPLOADS = "/api/v1/uploads/"


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("quota-owner", password="x")


def set_limits(**values: int) -> None:
    row = AppConfig.load()
    for name, value in values.items():
        setattr(row, name, value)
    row.save()


def parallel(count: int, call: Any) -> list[Any]:
    """`count` threads (own database connections) released together by a barrier."""
    barrier = threading.Barrier(count, timeout=20)
    results: list[Any] = [None] * count

    def runner(index: int) -> None:
        try:
            barrier.wait()
            results[index] = call(index)
        except Exception as exc:  # the result of that thread
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return results


def assert_counters_match_rows(owner: Any) -> None:
    assert quotas.counters_of(owner.pk) == quotas.counted_from_rows(owner.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_thirty_parallel_presigns_against_a_cap_of_twenty(memory_storage, owner, monkeypatch):
    """Must show: exactly 20 created and 10 x 429 too_many_pending_uploads; then confirms,
    failures, expiries, deletes (some racing each other) leave counters equal to a recount."""
    set_limits(max_pending_uploads_per_user=20, max_bytes_per_user_per_day=10**12)
    token = Token.objects.create(user=owner).key

    def presign(index: int) -> Any:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        payload = {"filename": f"f{index}.png", "content_type": "image/png", "size": 100}
        return api.post(UPLOADS, payload, format="json")

    responses = parallel(30, presign)
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 20 + [429] * 10, codes
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert {e["code"] for e in refused} == {"too_many_pending_uploads"}
    assert MediaUpload.objects.filter(owner=owner, status=UploadStatus.PENDING).count() == 20
    assert quotas.counters_of(owner.pk)[0] == 20
    assert_counters_match_rows(owner)

    rows = list(MediaUpload.objects.filter(owner=owner).order_by("created_at"))
    to_confirm, to_fail, to_delete, to_race, to_expire = (
        rows[0:4],
        rows[4:7],
        rows[7:10],
        rows[10:15],
        rows[15:20],
    )
    for row in to_confirm + to_race:
        store(memory_storage, row, png_bytes(row.declared_size or 300))
    for row in to_fail:
        store(memory_storage, row, HTML, "image/png")

    def finish(index: int) -> Any:
        jobs = [
            *[
                lambda r=r: services.confirm_upload(owner=owner, upload_id=r.id, payload={})
                for r in to_confirm
            ],
            *[
                lambda r=r: services.confirm_upload(owner=owner, upload_id=r.id, payload={})
                for r in to_fail
            ],
            *[lambda r=r: services.request_delete(owner=owner, upload_id=r.id) for r in to_delete],
            # confirm and delete racing on the same rows, twice each
            *[
                lambda r=r: services.confirm_upload(owner=owner, upload_id=r.id, payload={})
                for r in to_race
            ],
            *[
                lambda r=r: services.confirm_upload(owner=owner, upload_id=r.id, payload={})
                for r in to_race
            ],
            *[lambda r=r: services.request_delete(owner=owner, upload_id=r.id) for r in to_race],
            *[lambda r=r: services.request_delete(owner=owner, upload_id=r.id) for r in to_race],
        ]
        return jobs[index]()

    parallel(4 + 3 + 3 + 5 * 4, finish)
    # The cleanup expires the rest; its recount is switched off here so that what is checked
    # is the releases themselves, not the healing.
    MediaUpload.objects.filter(pk__in=[r.pk for r in to_expire]).update(
        expires_at=timezone.now() - timedelta(days=1)
    )
    monkeypatch.setattr(cleanup.quotas, "recount", lambda: 0)
    parallel(2, lambda _i: cleanup.expire_orphans())

    statuses = {r.pk: r.status for r in MediaUpload.objects.filter(owner=owner)}
    assert {statuses[r.pk] for r in to_confirm} == {UploadStatus.UPLOADED}
    assert {statuses[r.pk] for r in to_fail} == {UploadStatus.FAILED}
    assert {statuses[r.pk] for r in to_delete} <= {UploadStatus.DELETING, UploadStatus.DELETED}
    assert {statuses[r.pk] for r in to_expire} == {UploadStatus.EXPIRED}
    assert MediaUpload.objects.filter(owner=owner, status=UploadStatus.PENDING).count() == 0
    pending, today = quotas.counters_of(owner.pk)
    assert pending == 0
    assert (pending, today) == quotas.counted_from_rows(owner.pk)
    # And 20 slots are free again.
    assert {r.status_code for r in parallel(20, presign)} == {201}
    assert quotas.counters_of(owner.pk)[0] == 20
    assert_counters_match_rows(owner)


@pytest.mark.django_db
def test_a_drifted_counter_heals_on_the_cleanup_run(memory_storage, owner) -> None:
    for size in (100, 200, None):
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=size)
    assert_counters_match_rows(owner)
    expected = quotas.counted_from_rows(owner.pk)
    assert expected == (3, 300 + get_app_config().max_upload_size)
    UploadQuota.objects.filter(owner=owner).update(pending_count=17, day_bytes=5)
    assert quotas.counters_of(owner.pk) == (17, 5)

    report = cleanup.expire_orphans()

    assert report.quotas_recounted >= 1
    assert quotas.counters_of(owner.pk) == expected
    # A counter row lost altogether is rebuilt too.
    UploadQuota.objects.filter(owner=owner).delete()
    cleanup.expire_orphans()
    assert quotas.counters_of(owner.pk) == expected


@pytest.mark.django_db
def test_sizeless_upload_reserves_the_maximum_and_is_trued_up(memory_storage, owner) -> None:
    set_limits(max_upload_size=1000, max_bytes_per_user_per_day=2500)
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=None
    )
    assert quotas.counters_of(owner.pk) == (1, 1000)
    store(memory_storage, row, png_bytes(300))
    services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert quotas.counters_of(owner.pk) == (0, 300)
    assert_counters_match_rows(owner)
    # The freed bytes are usable at once: 300 + 1000 + 1000 + 200 = 2500.
    services.create_upload(owner=owner, filename="b.png", content_type="image/png", size=None)
    services.create_upload(owner=owner, filename="c.png", content_type="image/png", size=None)
    services.create_upload(owner=owner, filename="d.png", content_type="image/png", size=200)
    assert_counters_match_rows(owner)


@pytest.mark.django_db
def test_a_failed_presign_gives_the_reservation_back(memory_storage, owner) -> None:
    from backend.core.errors import ProviderUnavailable

    memory_storage.available = False
    with pytest.raises(ProviderUnavailable):
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=100)
    assert quotas.counters_of(owner.pk) == (0, 0)


@pytest.mark.django_db
def test_a_first_reservation_racing_another_is_decided_on_the_row_it_inserted(
    owner, monkeypatch
) -> None:
    """Two first uploads of a user at once (the widget sends several files together): ours
    UPDATEs before the other request INSERTs the counter row, then sees the row. It must decide
    on that row (one slot of many is free), not refuse with 429. Seen in Chromium on SQLite."""
    from django.db.models import QuerySet

    limits = quotas.Limits(max_pending=20, max_bytes_per_day=10**9)
    original_update = QuerySet.update
    calls = {"n": 0}

    def update_then_the_other_request_inserts(self: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        matched = original_update(self, **kwargs)
        if calls["n"] == 1 and self.model is UploadQuota:
            assert matched == 0  # no row yet when our UPDATE ran
            UploadQuota.objects.create(
                owner_id=owner.pk, pending_count=1, day=quotas.utc_today(), day_bytes=100
            )
        return matched

    monkeypatch.setattr(QuerySet, "update", update_then_the_other_request_inserts)

    # The ORM path (SQLite, and any database but PostgreSQL, whose single upsert has no gap).
    assert quotas._reserve_orm(owner.pk, quotas.utc_today(), 100, limits)

    monkeypatch.undo()
    assert quotas.counters_of(owner.pk) == (2, 200)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_cached_insert_sends_what_djangos_compiled_insert_sends(owner) -> None:
    """The one-statement INSERT's text is built once per process; its parameters are prepared
    per row the way SQLInsertCompiler prepares them. Both compared with Django's own INSERT."""
    from django.db import connections

    conn = connections["default"]
    rows = [
        MediaUpload(
            owner=owner,
            provider="s3",
            key=f"uploads/{n}/k.png",
            original_filename="ä photo.png",
            content_type="image/png",
            declared_size=size,
            quota_bytes=size or 1000,
            status=UploadStatus.PENDING,
            expires_at=timezone.now() + timedelta(minutes=15),
            metadata={"n": n},
        )
        for n, size in enumerate([1000, None])
    ]
    for row in rows:
        statement, fields = quotas._insert_reserved_text(conn, row)
        ours = quotas._insert_params(conn, row, fields)
        compiled_sql, compiled_params = quotas._compiled_insert(conn, row)
        head, _sep, values = compiled_sql.partition(" VALUES (")
        assert statement.endswith(f"{head} SELECT {values[:-1]} FROM reserved")
        # auto_now(_add) columns take a fresh "now" on each preparation: compared by type.
        clock = [getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) for f in fields]
        assert len(ours) == len(compiled_params) == len(fields)
        for is_clock, mine, django_s in zip(clock, ours, compiled_params, strict=True):
            assert type(mine) is type(django_s)
            if not is_clock:
                assert repr(mine) == repr(django_s)
    quotas.insert_reserved(rows[0], 1000, quotas.Limits(max_pending=5, max_bytes_per_day=10**9))
    stored = MediaUpload.objects.get(pk=rows[0].pk)
    assert (stored.key, stored.declared_size, stored.metadata) == (
        "uploads/0/k.png",
        1000,
        {"n": 0},
    )
    assert stored.created_at == rows[0].created_at
