"""The Dramatiq actors on the StubBroker with a real worker thread.

Actors run in worker threads with their own database connections, so these tests use
`transactional_db` (committed data), not `db`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from backend.core.errors import ProviderUnavailable, ValidationFailed
from backend.storage.base import DeleteResult, ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import services, tasks
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.memory import InMemoryStorageService
from tests.fixtures.providers import S3_TEST_BUCKET, use_provider

QUEUE = tasks.QUEUE
# Per-message backoff overrides so retries happen in milliseconds, not minutes.
FAST_RETRY = {"min_backoff": 1, "max_backoff": 5}


@pytest.fixture
def worker(broker: StubBroker) -> Iterator[dramatiq.Worker]:
    # One thread: the SQLite test database is an in-memory shared-cache database, where two
    # writers get "table is locked" at once instead of waiting. Concurrency is tested on
    # PostgreSQL (test_cleanup_race.py) and with the real worker (test_worker_redis.py).
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def owner(transactional_db: None, django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("tasks-owner", password="x")


def queued(broker: StubBroker) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(m) for m in list(broker.queues[QUEUE].queue)]


def make_row(owner: Any, provider: str = "s3", **kwargs: Any) -> MediaUpload:
    uid = uuid.uuid4()
    defaults: dict[str, Any] = {
        "id": uid,
        "owner": owner,
        "provider": provider,
        "key": f"uploads/{owner.pk}/{uid.hex}/f.png",
        "original_filename": "f.png",
        "content_type": "image/png",
        "declared_size": 3,
        "expires_at": timezone.now() + timedelta(minutes=10),
    }
    return MediaUpload.objects.create(**{**defaults, **kwargs})


class CountingMemoryService(InMemoryStorageService):
    """The in-memory fake, down for the first `down_for` delete calls (a provider outage)."""

    def __init__(self, name: str, down_for: int = 0) -> None:
        super().__init__(name, delete_batch_size=100)
        self.down_for = down_for
        self.delete_attempts = 0

    def delete_many(self, refs: Any) -> DeleteResult:
        self.delete_attempts += 1
        self.available = self.delete_attempts > self.down_for
        return super().delete_many(refs)


@pytest.fixture
def memory_s3(transactional_db: None) -> Iterator[CountingMemoryService]:
    fake = CountingMemoryService("s3")
    CloudStorageFactory.reset()
    CloudStorageFactory.install(fake)
    yield fake
    CloudStorageFactory.reset()


# --- delete on request ---------------------------------------------------------------------


def test_api_delete_path_runs_the_job_after_commit_and_deletes_at_s3(
    s3_storage: Any, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    use_provider("s3")
    row = make_row(owner)
    s3_storage.client.put_object(Bucket=S3_TEST_BUCKET, Key=row.key, Body=b"abc")

    with transaction.atomic():
        services.request_delete(owner=owner, upload_id=row.id)
        # Not before commit: the worker must never see a row state that could still roll back.
        assert queued(broker) == []
    messages = queued(broker)
    assert [(m.actor_name, m.args) for m in messages] == [("delete_upload", (str(row.id),))]

    broker.join(QUEUE, timeout=10_000)
    worker.join()

    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED
    assert not s3_storage.inspect(ObjectRef(row.key)).exists


def test_job_enqueued_in_a_transaction_that_rolls_back_never_runs(
    memory_s3: CountingMemoryService, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    row = make_row(owner)
    memory_s3.put(ObjectRef(row.key), b"abc")

    with pytest.raises(RuntimeError), transaction.atomic():
        services.request_delete(owner=owner, upload_id=row.id)
        raise RuntimeError("something later in the request failed")

    broker.join(QUEUE, timeout=5_000)
    worker.join()
    assert queued(broker) == []
    assert memory_s3.delete_attempts == 0
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING  # the `deleting` mark rolled back too
    assert memory_s3.keys() == [row.key]


def test_delete_job_retries_provider_outage_then_succeeds(
    memory_s3: CountingMemoryService, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    memory_s3.down_for = 3
    row = make_row(owner, status=UploadStatus.DELETING)
    memory_s3.put(ObjectRef(row.key), b"abc")

    tasks.delete_upload.send_with_options(args=(str(row.id),), **FAST_RETRY)
    broker.join(QUEUE, timeout=10_000)
    worker.join()

    assert memory_s3.delete_attempts == 4
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED and memory_s3.keys() == []


def test_delete_job_gives_up_after_its_retries_and_row_stays_deleting(
    memory_s3: CountingMemoryService, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    memory_s3.down_for = 1000
    row = make_row(owner, status=UploadStatus.DELETING)

    tasks.delete_upload.send_with_options(args=(str(row.id),), **FAST_RETRY)
    with pytest.raises(ProviderUnavailable):
        broker.join(QUEUE, timeout=10_000)  # the stub broker re-raises the dead letter's error
    worker.join()

    assert memory_s3.delete_attempts == tasks.DELETE_MAX_RETRIES + 1
    row.refresh_from_db()
    # Still `deleting`: a repeated DELETE re-enqueues the job once the provider is back.
    assert row.status == UploadStatus.DELETING


def test_delete_job_for_a_missing_row_is_done(
    memory_s3: CountingMemoryService, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    tasks.delete_upload.send(str(uuid.uuid4()))
    tasks.delete_upload.send("not-a-uuid")
    broker.join(QUEUE, timeout=5_000)  # fail_fast: any error would be raised here
    worker.join()
    assert memory_s3.delete_attempts == 0


def test_delete_job_twice_is_harmless(
    memory_s3: CountingMemoryService, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    row = make_row(owner, status=UploadStatus.DELETING)
    tasks.delete_upload.send(str(row.id))
    tasks.delete_upload.send(str(row.id))
    broker.join(QUEUE, timeout=5_000)
    worker.join()
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED


def test_only_transient_errors_are_retried() -> None:
    retry_when = tasks._retry_transient(3)
    assert retry_when(0, ProviderUnavailable("down"))
    assert retry_when(2, ProviderUnavailable("down"))
    assert not retry_when(3, ProviderUnavailable("down"))
    assert not retry_when(0, ValidationFailed("bad"))
    assert not retry_when(0, KeyError("bug"))


def test_actors_declare_explicit_limits() -> None:
    for actor in (tasks.delete_upload, tasks.expire_orphans, tasks.reconcile_provider):
        assert actor.options["max_retries"] >= 1
        assert actor.options["time_limit"] > 0
        assert "retry_when" in actor.options and "min_backoff" in actor.options


# --- cleanup jobs ----------------------------------------------------------------------------


def test_expire_orphans_job_expires_and_deletes(
    memory_s3: CountingMemoryService, owner: Any, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    with override_settings(UPLOAD_ORPHAN_GRACE_SECONDS=0):
        orphan = make_row(owner, expires_at=timezone.now() - timedelta(seconds=5))
        fresh = make_row(owner)
        memory_s3.put(ObjectRef(orphan.key), b"abc")
        memory_s3.put(ObjectRef(fresh.key), b"abc")
        tasks.expire_orphans.send()
        broker.join(QUEUE, timeout=10_000)
        worker.join()
    assert MediaUpload.objects.get(pk=orphan.pk).status == UploadStatus.EXPIRED
    assert MediaUpload.objects.get(pk=fresh.pk).status == UploadStatus.PENDING
    assert memory_s3.keys() == [fresh.key]


def test_reconcile_fans_out_one_job_per_configured_provider(
    transactional_db: None, broker: StubBroker, worker: dramatiq.Worker
) -> None:
    fakes = [CountingMemoryService("s3"), CountingMemoryService("cloudinary")]
    CloudStorageFactory.reset()
    for fake in fakes:
        CloudStorageFactory.install(fake)
        fake.put(ObjectRef(f"uploads/1/{uuid.uuid4().hex}/stray"), b"x")
    try:
        with override_settings(UPLOAD_RECONCILE_GRACE_SECONDS=0):
            tasks.reconcile_providers.send()
            broker.join(QUEUE, timeout=10_000)
            worker.join()
    finally:
        CloudStorageFactory.reset()
    assert [f.keys() for f in fakes] == [[], []]
    assert [f.delete_attempts for f in fakes] == [1, 1]
