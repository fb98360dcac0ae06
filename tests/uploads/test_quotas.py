"""Per-user quotas in O(1) (backend/uploads/quotas.py): exact under concurrency, released on
every exit from `pending` exactly once, re-derived from the rows by the cleanup job. The tests
that say so run on both stores (`quota_store`: database counter rows, Redis hashes)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def redis_store(settings: Any, url: str) -> Iterator[None]:
    """The counters (and the throttles, as production has them) in Redis, under a key prefix
    of their own, removed afterwards."""
    import redis

    prefix = f"test-{uuid.uuid4().hex}:"
    settings.THROTTLE_REDIS_URL = url
    settings.THROTTLE_KEY_PREFIX = prefix
    settings.QUOTA_COUNTERS = "redis"
    try:
        yield
    finally:
        client = redis.Redis.from_url(url)
        stale = list(client.scan_iter(match=prefix + "*"))
        if stale:
            client.delete(*stale)


@pytest.fixture(params=["database", "redis"])
def quota_store(request: Any, settings: Any) -> Iterator[str]:
    """Each store in turn."""
    if request.param == "database":
        yield request.param
        return
    with redis_store(settings, request.getfixturevalue("redis_url")):
        yield request.param


def set_counters(owner: Any, pending: int, used: int) -> None:
    """Make the counters drift (as a killed process would), in the store in use."""
    if quotas.in_redis():
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.THROTTLE_REDIS_URL).hset(
            quotas._redis_key(owner.pk),
            mapping={"p": pending, "d": quotas.utc_today().isoformat(), "b": used, "t": 0},
        )
    else:
        UploadQuota.objects.filter(owner=owner).update(pending_count=pending, day_bytes=used)


def drop_counters(owner: Any) -> None:
    """Lose the counters altogether (a deleted row; a Redis restarted without its data)."""
    if quotas.in_redis():
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.THROTTLE_REDIS_URL).delete(quotas._redis_key(owner.pk))
    else:
        UploadQuota.objects.filter(owner=owner).delete()


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
def test_thirty_parallel_presigns_against_a_cap_of_twenty(
    memory_storage, owner, monkeypatch, quota_store
):
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


@pytest.mark.django_db(transaction=True)
def test_a_drifted_counter_heals_on_the_cleanup_run(memory_storage, owner, quota_store) -> None:
    def create(size: int | None) -> None:
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=size)

    for size in (100, 200, None):
        create(size)
    assert_counters_match_rows(owner)
    expected = quotas.counted_from_rows(owner.pk)
    assert expected == (3, 300 + get_app_config().max_upload_size)
    set_counters(owner, 17, 5)
    assert quotas.counters_of(owner.pk) == (17, 5)

    report = cleanup.expire_orphans()

    assert report.quotas_recounted >= 1
    if quota_store == "redis":
        # The drifted hash was dropped; the next upload seeds it from the rows.
        assert quotas.counters_of(owner.pk) == (0, 0)
        create(50)
        expected = (expected[0] + 1, expected[1] + 50)
    assert quotas.counters_of(owner.pk) == expected
    assert_counters_match_rows(owner)
    # Counters lost altogether are rebuilt too.
    drop_counters(owner)
    cleanup.expire_orphans()
    if quota_store == "redis":
        create(50)
        expected = (expected[0] + 1, expected[1] + 50)
    assert quotas.counters_of(owner.pk) == expected
    assert_counters_match_rows(owner)


@pytest.mark.django_db(transaction=True)
def test_sizeless_upload_reserves_the_maximum_and_is_trued_up(
    memory_storage, owner, quota_store
) -> None:
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


@pytest.mark.django_db(transaction=True)
def test_a_failed_presign_gives_the_reservation_back(memory_storage, owner, quota_store) -> None:
    from backend.core.errors import ProviderUnavailable

    services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=10)
    memory_storage.available = False
    with pytest.raises(ProviderUnavailable):
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=100)
    assert quotas.counters_of(owner.pk) == (1, 10)
    assert_counters_match_rows(owner)


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


def _rows_of_every_shape(owner: Any) -> list[MediaUpload]:
    """Rows whose columns take each of `_insert_params`' paths: None, str (and a str enum),
    UUID, int, aware and naive datetimes, JSON, the foreign key."""
    base = {
        "provider": "s3",
        "original_filename": "ä photo.png",
        "content_type": "image/png",
        "status": UploadStatus.PENDING,
        "expires_at": timezone.now() + timedelta(minutes=15),
    }
    return [
        MediaUpload(
            owner=owner,
            key="uploads/0/k.png",
            declared_size=1000,
            quota_bytes=1000,
            metadata={"n": 0},
            **base,
        ),
        MediaUpload(
            owner=owner,
            key="uploads/1/k.png",
            declared_size=None,
            quota_bytes=2**40,
            checksum_sha256="a" * 64,
            multipart_upload_id="up-1",
            multipart_part_size=8 * 2**20,
            **base,
        ),
        MediaUpload.unsaved(
            owner,
            key="uploads/2/k.png",
            stored_size=0,
            event_sequencer="0A",
            confirmed_at=timezone.now(),
            claimed_at=None,
            **base,
        ),
    ]


@pytest.mark.django_db
def test_the_insert_parameters_are_what_djangos_compiled_insert_sends(owner: Any) -> None:
    """`_insert_params` prepares the common values inline; each parameter must be what
    SQLInsertCompiler sends for the same row, on this run's database (SQLite and PostgreSQL
    prepare UUIDs, datetimes and ints differently)."""
    from django.db import connections

    conn = connections["default"]
    naive = MediaUpload(
        owner=owner,
        provider="s3",
        key="uploads/3/k.png",
        original_filename="n",
        content_type="image/png",
        expires_at=timezone.now().replace(tzinfo=None),
    )
    clock = [
        getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        for f in MediaUpload._meta.concrete_fields
    ]
    for row in [*_rows_of_every_shape(owner), naive]:
        with pytest.warns(RuntimeWarning) if row is naive else contextlib.nullcontext():
            ours = quotas._insert_params(conn, row)
        ours_created = row.created_at
        with pytest.warns(RuntimeWarning) if row is naive else contextlib.nullcontext():
            _sql, compiled_params = quotas._compiled_insert(conn, row)
        # auto_now(_add) columns take a fresh "now" on each preparation: compared by type.
        assert len(ours) == len(compiled_params) == len(clock)
        for is_clock, mine, django_s in zip(clock, ours, compiled_params, strict=True):
            assert type(mine) is type(django_s)
            if not is_clock:
                assert repr(mine) == repr(django_s)
        # Both clock columns take the same "now", set on the row as pre_save sets it.
        assert row.updated_at >= ours_created
        assert len({mine for is_clock, mine in zip(clock, ours, strict=True) if is_clock}) == 1


@pytest.mark.django_db
def test_unsaved_builds_the_row_the_keyword_constructor_builds(owner: Any) -> None:
    """`MediaUpload.unsaved(owner, **columns)` (the positional path) against
    `MediaUpload(owner=owner, **columns)`: every attribute, the cached owner, the defaults."""
    columns = {
        "id": uuid.uuid4(),
        "provider": "cloudinary",
        "key": "uploads/1/x/photo.png",
        "original_filename": "photo.png",
        "content_type": "image/png",
        "declared_size": None,
        "quota_bytes": 5,
        "status": UploadStatus.PENDING,
        "expires_at": timezone.now(),
        "multipart_upload_id": "abc",
    }
    fast = MediaUpload.unsaved(owner, **columns)
    slow = MediaUpload(owner=owner, **columns)
    for field in MediaUpload._meta.concrete_fields:
        assert getattr(fast, field.attname) == getattr(slow, field.attname), field.name
    assert fast.owner is owner
    assert fast._state.adding and fast._state.db is None
    assert fast.metadata == {} and fast.metadata is not MediaUpload.unsaved(owner).metadata
    assert MediaUpload.unsaved(owner).id != MediaUpload.unsaved(owner).id  # default=uuid4
    with pytest.raises(TypeError, match="no column"):
        MediaUpload.unsaved(owner, owner_name="x")


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_cached_insert_sends_what_djangos_compiled_insert_sends(owner: Any) -> None:
    """The one-statement INSERT's text is built once per process from Django's INSERT; the row
    it inserts reads back as written."""
    from django.db import connections

    conn = connections["default"]
    rows = _rows_of_every_shape(owner)
    for row in rows:
        statement = quotas._insert_reserved_text(conn, row)
        compiled_sql, _params = quotas._compiled_insert(conn, row)
        head, _sep, values = compiled_sql.partition(" VALUES (")
        assert statement.endswith(f"{head} SELECT {values[:-1]} FROM reserved")
    quotas.insert_reserved(rows[0], 1000, quotas.Limits(max_pending=5, max_bytes_per_day=10**9))
    stored = MediaUpload.objects.get(pk=rows[0].pk)
    assert (stored.key, stored.declared_size, stored.metadata) == (
        "uploads/0/k.png",
        1000,
        {"n": 0},
    )
    assert stored.created_at == rows[0].created_at == stored.updated_at


# --- the Redis store: one round trip with the throttle, seeded from the rows ---------------------


@pytest.fixture
def redis_quotas(settings: Any, redis_url: str) -> Iterator[None]:
    with redis_store(settings, redis_url):
        yield


def api_for(user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


def create_body(size: Any = 100, content_type: str = "image/png") -> dict[str, Any]:
    return {"filename": "a.png", "content_type": content_type, "size": size}


@pytest.mark.django_db(transaction=True)
def test_a_redis_without_the_counters_is_seeded_from_the_rows(
    memory_storage, owner, redis_quotas
) -> None:
    """Redis restarted empty (or the hash expired): the next reservation counts the user's rows
    first, so the cap still holds exactly."""
    set_limits(max_pending_uploads_per_user=3, max_bytes_per_user_per_day=10**9)
    for _ in range(2):
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=100)
    drop_counters(owner)
    assert quotas.counters_of(owner.pk) == (0, 0)
    services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=100)
    assert quotas.counters_of(owner.pk) == (3, 300)
    with pytest.raises(quotas.QuotaExceeded) as refused:
        services.create_upload(owner=owner, filename="a.png", content_type="image/png", size=1)
    assert refused.value.code == "too_many_pending_uploads"
    assert refused.value.details == {"pending": 3, "max_pending_uploads": 3}
    assert_counters_match_rows(owner)


@pytest.mark.django_db(transaction=True)
def test_a_presign_is_one_redis_round_trip_and_one_insert(
    memory_storage, owner, redis_quotas, request
) -> None:
    """The throttle check and the quota reservation in one EVALSHA; the database sees the token
    and the INSERT only."""
    from django.test.utils import CaptureQueriesContext

    api = api_for(owner)
    assert api.post(UPLOADS, create_body(), format="json").status_code == 201  # loads scripts
    sent = request.getfixturevalue("redis_commands_sent")
    get_app_config()
    with CaptureQueriesContext(connection) as queries:
        response = api.post(UPLOADS, create_body(), format="json")
    assert response.status_code == 201, response.content
    assert len(sent) == 1 and b"EVALSHA" in sent[0]
    assert b"throttle_upload_create_" in sent[0] and b"quota:" in sent[0]
    statements = [q["sql"].split()[0].upper() for q in queries]
    assert statements == ["SELECT", "INSERT"], [q["sql"] for q in queries]


def _throttle_sequence(monkeypatch: Any, user: Any, memory_storage: Any) -> list[Any]:
    """A mix of valid, invalid and over-quota creates around a rate of 4 per minute: what each
    is answered (status, error code, Retry-After)."""
    from rest_framework import throttling as drf

    from backend.core import throttling

    for cls in (drf.ScopedRateThrottle, throttling.ScopedRateThrottle):
        monkeypatch.setattr(cls, "THROTTLE_RATES", {"upload_create": "4/minute"})
    clock = {"now": 1_800_000_000.0}
    monkeypatch.setattr(drf.SimpleRateThrottle, "timer", lambda self: clock["now"])
    set_limits(max_pending_uploads_per_user=2, max_bytes_per_user_per_day=10**9)
    api = api_for(user)
    steps: list[tuple[float, Any]] = [
        (0, create_body()),
        (1, create_body(size=0)),  # 400, and it counts toward the rate
        (2, create_body()),
        (3, create_body()),  # over the pending cap: 429 too_many_pending_uploads
        (4, create_body()),  # over the rate: 429, before the quota would refuse
        (5, create_body(content_type="text/html")),  # over the rate: 429 before the 400
        (63, create_body(content_type="text/html")),  # the window slid: 400
        (64, create_body()),  # 429 quota
        (65, "not json"),  # 400: the body is not JSON
        (66, create_body()),  # 429 quota, the 4th in the window
        (70, "not json"),  # over the rate again: 429 before the parse error
    ]
    answers = []
    for at, body in steps:
        clock["now"] = 1_800_000_000.0 + at
        if isinstance(body, str):
            response = api.post(UPLOADS, body, content_type="application/json")
        else:
            response = api.post(UPLOADS, body, format="json")
        code = response.json().get("error", {}).get("code") if response.status_code >= 400 else ""
        answers.append((at, response.status_code, code, response.get("Retry-After")))
    return answers


@pytest.mark.django_db(transaction=True)
def test_the_deferred_throttle_answers_as_drfs_check_before_the_view(
    memory_storage, django_user_model, settings, redis_url, monkeypatch
) -> None:
    """The same requests, in the same order and at the same instants, answered the same by
    DRF's check before the view (database counters) and by the check run in the reservation's
    script (Redis counters): the rate first, then the body and the quota."""
    expected = _throttle_sequence(
        monkeypatch, django_user_model.objects.create_user("drf", password="x"), memory_storage
    )
    assert [a[1] for a in expected] == [201, 400, 201, 429, 429, 429, 400, 429, 400, 429, 429]
    assert expected[3][2] == "too_many_pending_uploads" and expected[4][3] is not None
    with redis_store(settings, redis_url):
        got = _throttle_sequence(
            monkeypatch,
            django_user_model.objects.create_user("deferred", password="x"),
            memory_storage,
        )
    assert got == expected


@pytest.mark.django_db(transaction=True)
def test_multipart_uploads_reserve_and_release_in_either_store(
    memory_storage, owner, quota_store
) -> None:
    """The multipart create reserves as a single create does, and its exits (abort, complete)
    release; the counters equal the rows after each."""
    from backend.uploads.services import multipart

    set_limits(max_pending_uploads_per_user=2, max_bytes_per_user_per_day=10**12)
    size = 6 * 1024 * 1024

    def start() -> MediaUpload:
        return multipart.create_multipart_upload(
            owner=owner, filename="big.png", content_type="image/png", size=size
        )

    first = start()
    start()
    with pytest.raises(quotas.QuotaExceeded):
        start()
    assert quotas.counters_of(owner.pk) == (2, 2 * size)
    multipart.abort_multipart_upload(first)
    assert quotas.counters_of(owner.pk)[0] == 1
    assert_counters_match_rows(owner)
    start()  # the freed slot
    assert quotas.counters_of(owner.pk)[0] == 2
    assert_counters_match_rows(owner)


@pytest.mark.django_db(transaction=True)
def test_large_byte_counts_stay_exact_in_redis(owner, redis_quotas) -> None:
    """Counters written by the scripts are whole numbers in digits, exact past 10^14 (a plain
    Lua number would be written as 1e+14)."""
    limits = quotas.Limits(max_pending=10, max_bytes_per_day=10**17)
    with quotas.reservation(owner.pk, 10**14 + 7, limits):
        pass
    quotas.reserve(owner.pk, 3 * 10**15 + 1, limits)
    assert quotas.counters_of(owner.pk) == (2, 3 * 10**15 + 10**14 + 8)
    quotas._redis_release(owner.pk, quotas.utc_today(), 1, -(10**14 + 7))
    assert quotas.counters_of(owner.pk) == (1, 3 * 10**15 + 1)


@pytest.mark.django_db(transaction=True)
def test_redis_down_answers_503_and_inserts_nothing(memory_storage, owner, settings) -> None:
    """No Redis to reserve in: a JSON 503 with Retry-After (as for the throttle alone), never an
    upload admitted without its quota, never a row."""
    from devtools.ports import free_port

    settings.THROTTLE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.THROTTLE_REDIS_TIMEOUT_SECONDS = 0.5
    settings.QUOTA_COUNTERS = "redis"
    response = api_for(owner).post(UPLOADS, create_body(), format="json")
    assert response.status_code == 503, response.content
    assert response.get("Retry-After")
    assert response.json()["error"]["code"]
    assert not MediaUpload.objects.filter(owner=owner).exists()
