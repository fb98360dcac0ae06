"""Races on one row, on PostgreSQL (real row locks and concurrent transactions).

Both parties verify at the provider first (a barrier inside the fake's `inspect` makes sure
they overlap), then race their conditional UPDATEs: exactly one transition may happen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.uploads.test_api_support import HTML, png_bytes, store

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_concurrently(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def runner(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return results


def overlap_inspects(service: Any, parties: int) -> None:
    barrier = threading.Barrier(parties, timeout=10)
    real_inspect = service.inspect

    def inspect(ref: Any) -> Any:
        stored = real_inspect(ref)
        barrier.wait()
        return stored

    service.inspect = inspect


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("race-owner", password="x")


def test_two_confirms_one_transition(memory_storage, owner, caplog) -> None:
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=100
    )
    store(memory_storage, row, png_bytes(100))
    overlap_inspects(memory_storage, 2)

    def confirm() -> MediaUpload:
        return services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    with caplog.at_level(logging.INFO, logger="backend.uploads.services"):
        results = run_concurrently(confirm, confirm)

    assert all(isinstance(r, MediaUpload) for r in results), results
    assert {r.status for r in results} == {UploadStatus.UPLOADED}
    finalised = [r for r in caplog.records if "finalised" in r.getMessage()]
    assert len(finalised) == 1
    stored = MediaUpload.objects.get(pk=row.pk)
    assert stored.status == UploadStatus.UPLOADED
    assert {r.confirmed_at for r in results} == {stored.confirmed_at}


def test_confirm_and_webhook_race_one_transition(memory_storage, owner, caplog) -> None:
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=100
    )
    store(memory_storage, row, png_bytes(100))
    overlap_inspects(memory_storage, 2)

    with caplog.at_level(logging.INFO, logger="backend.uploads.services"):
        results = run_concurrently(
            lambda: services.confirm_upload(owner=owner, upload_id=row.id, payload={}),
            lambda: services.finalise_upload(row.id, source="s3_event", sequencer="0F"),
        )

    assert all(isinstance(r, MediaUpload) for r in results), results
    assert len([r for r in caplog.records if "finalised" in r.getMessage()]) == 1
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.UPLOADED


def test_two_confirms_of_a_bad_object_fail_once(memory_storage, owner, caplog) -> None:
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=len(HTML)
    )
    store(memory_storage, row, HTML)
    overlap_inspects(memory_storage, 2)

    def confirm() -> MediaUpload:
        return services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    with caplog.at_level(logging.WARNING, logger="backend.uploads.services"):
        results = run_concurrently(confirm, confirm)

    assert all(isinstance(r, services.VerificationFailed) for r in results), results
    assert len({r.message for r in results}) == 1
    assert len([r for r in caplog.records if "failed verification" in r.getMessage()]) == 1
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.FAILED
    assert memory_storage.keys() == []


def test_confirm_racing_cleanup_claim(memory_storage, owner) -> None:
    """The cleanup's claim (pending -> expiring) and a confirm's UPDATE race: whoever wins, the
    row never ends `uploaded` once claimed, and never `expiring` once uploaded."""
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=100
    )
    store(memory_storage, row, png_bytes(100))
    ready = threading.Barrier(2, timeout=10)
    real_inspect = memory_storage.inspect

    def inspect(ref: Any) -> Any:
        stored = real_inspect(ref)
        ready.wait()
        return stored

    memory_storage.inspect = inspect

    def claim() -> int:
        ready.wait()
        return MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
            status=UploadStatus.EXPIRING
        )

    confirm_result, claimed = run_concurrently(
        lambda: services.confirm_upload(owner=owner, upload_id=row.id, payload={}), claim
    )
    final = MediaUpload.objects.get(pk=row.pk).status
    if claimed:
        assert final == UploadStatus.EXPIRING
        assert getattr(confirm_result, "code", None) == "expired"
    else:
        assert final == UploadStatus.UPLOADED
        assert isinstance(confirm_result, MediaUpload)
