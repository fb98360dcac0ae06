"""The media upload service over the in-memory provider fake (installed through the factory).

Provider-specific verification (moto S3, Cloudinary stand-in) is in test_services_providers.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from backend.core.config import get_app_config
from backend.core.errors import (
    Conflict,
    Gone,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    StorageUnavailable,
    ValidationFailed,
)
from backend.core.models import AppConfig
from backend.storage.factory import CloudStorageFactory
from backend.uploads import selectors, services
from backend.uploads.cleanup import expire_orphans
from backend.uploads.models import MediaUpload, UploadQuota, UploadStatus
from tests.fixtures.memory import InMemoryStorageService
from tests.fixtures.providers import use_provider
from tests.uploads.test_api_support import HTML, png_bytes, store

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("svc-owner", password="x")


@pytest.fixture
def other(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("svc-other", password="x")


def create(owner: Any, **overrides: Any) -> tuple[MediaUpload, Any]:
    args = {"filename": "pic.png", "content_type": "image/png", "size": 100}
    args.update(overrides)
    return services.create_upload(owner=owner, **args)


def fresh(row: MediaUpload) -> MediaUpload:
    return MediaUpload.objects.get(pk=row.pk)


# --- create -----------------------------------------------------------------------------------


def test_create_records_row_and_returns_instructions(memory_storage, owner) -> None:
    before = timezone.now()
    row, instructions = create(owner, filename="../My Pic.png", checksum_sha256="A" * 64)

    row = fresh(row)
    assert row.status == UploadStatus.PENDING
    assert row.provider == "s3"
    assert row.owner_id == owner.pk
    assert row.key == f"uploads/{owner.pk}/{row.id.hex}/My-Pic.png"
    assert row.original_filename == "My Pic.png"
    assert row.content_type == "image/png"
    assert row.declared_size == 100
    assert row.checksum_sha256 == "a" * 64
    expiry = get_app_config().presign_expiry_seconds
    assert before + timedelta(seconds=expiry - 5) < row.expires_at
    assert row.expires_at <= timezone.now() + timedelta(seconds=expiry)
    assert instructions.fields["key"] == row.key
    assert instructions.fields["Content-Type"] == "image/png"
    assert instructions.expires_at == row.expires_at


def test_create_content_type_is_case_insensitive_and_params_stripped(memory_storage, owner) -> None:
    row, _ = create(owner, content_type="Image/PNG; charset=binary")
    assert row.content_type == "image/png"


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"content_type": "text/html"}, "content_type_not_allowed", "text/html is not allowed"),
        ({"content_type": ""}, "invalid_content_type", "must be a MIME type"),
        ({"content_type": "png"}, "invalid_content_type", "must be a MIME type"),
        ({"size": 0}, "invalid_size", "at least 1"),
        ({"size": -5}, "invalid_size", "at least 1"),
        ({"size": True}, "invalid_size", "whole number"),
        ({"size": "12"}, "invalid_size", "whole number"),
        ({"size": 25 * 1024 * 1024 + 1}, "file_too_large", "largest accepted upload"),
        ({"checksum_sha256": "xyz"}, "invalid_checksum", "64 hexadecimal"),
        ({"checksum_sha256": "a" * 63}, "invalid_checksum", "64 hexadecimal"),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(
    memory_storage, owner, overrides, code, message
) -> None:
    with pytest.raises(ValidationFailed) as err:
        create(owner, **overrides)
    assert err.value.code == code
    assert message in err.value.message
    assert MediaUpload.objects.count() == 0
    assert memory_storage.keys() == []


def test_create_too_large_names_the_limit(memory_storage, owner) -> None:
    with pytest.raises(ValidationFailed) as err:
        create(owner, size=10**9)
    assert err.value.details == {"size": 10**9, "max_upload_size": 25 * 1024 * 1024}


def test_create_respects_admin_allow_list(memory_storage, owner) -> None:
    config = AppConfig.load()
    config.allowed_content_types = ["application/pdf"]
    config.save()
    with pytest.raises(ValidationFailed) as err:
        create(owner)
    assert err.value.details["allowed_content_types"] == ["application/pdf"]


def test_pending_quota(memory_storage, owner, other) -> None:
    config = AppConfig.load()
    config.max_pending_uploads_per_user = 2
    config.save()
    create(owner)
    create(owner)
    create(other)  # another user's uploads do not count
    with pytest.raises(QuotaExceeded) as err:
        create(owner)
    assert err.value.status_code == 429
    assert err.value.code == "too_many_pending_uploads"
    assert err.value.details == {"pending": 2, "max_pending_uploads": 2}
    assert MediaUpload.objects.filter(owner=owner).count() == 2
    # A pending row holds its slot until it leaves `pending`: deleting one frees it at once.
    first = MediaUpload.objects.filter(owner=owner).first()
    assert first is not None
    services.request_delete(owner=owner, upload_id=first.id)
    create(owner)
    with pytest.raises(QuotaExceeded):
        create(owner)
    # Past expiry + grace the cleanup expires them, which frees their slots.
    MediaUpload.objects.filter(owner=owner, status=UploadStatus.PENDING).update(
        expires_at=timezone.now() - timedelta(days=1)
    )
    expire_orphans()
    create(owner)
    create(owner)


def test_daily_bytes_quota(memory_storage, owner) -> None:
    config = AppConfig.load()
    config.max_bytes_per_user_per_day = 1000
    config.save()
    create(owner, size=600)
    with pytest.raises(QuotaExceeded) as err:
        create(owner, size=401)
    assert err.value.code == "daily_quota_exceeded"
    assert err.value.details == {
        "used_bytes_today": 600,
        "requested_bytes": 401,
        "max_bytes_per_day": 1000,
    }
    create(owner, size=400)  # exactly at the limit is fine
    # Bytes count per UTC day: the first reservation of a new day starts again from 0.
    yesterday = timezone.now() - timedelta(days=1)
    MediaUpload.objects.update(created_at=yesterday)
    UploadQuota.objects.update(day=yesterday.date())
    create(owner, size=1000)
    with pytest.raises(QuotaExceeded):
        create(owner, size=1)


def test_provider_failure_at_presign_leaves_nothing(memory_storage, owner) -> None:
    memory_storage.available = False
    with pytest.raises(ProviderUnavailable):
        create(owner)
    assert MediaUpload.objects.count() == 0


def test_no_provider_configured_is_503_and_leaves_nothing(owner, db) -> None:
    CloudStorageFactory.reset()
    with pytest.raises(StorageUnavailable) as err:
        create(owner)
    assert err.value.status_code == 503
    assert MediaUpload.objects.count() == 0


def test_create_query_budget(memory_storage, owner, django_assert_max_num_queries) -> None:
    """The quota reservation (one statement) and the INSERT; the API adds the token's."""
    get_app_config()  # warm cache
    create(owner)  # on SQLite a user's first reservation also inserts the counter row
    with django_assert_max_num_queries(2):
        create(owner)


# --- confirm / finalise -----------------------------------------------------------------------


def test_confirm_marks_uploaded_with_provider_metadata(memory_storage, owner) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))

    confirmed = services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    row = fresh(row)
    assert confirmed.status == row.status == UploadStatus.UPLOADED
    assert row.confirmed_at is not None
    assert row.stored_size == 100
    assert row.metadata["provider"] == "s3"
    assert row.metadata["key"] == row.key
    assert row.metadata["bytes"] == 100
    assert row.metadata["content_type"] == "image/png"
    assert row.metadata["etag"]
    assert row.metadata["url"] == f"memory://s3/{row.key}"
    assert row.metadata["verified_by"] == "client"


def test_confirm_is_idempotent(memory_storage, owner) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    first = services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    first_confirmed_at = fresh(row).confirmed_at
    second = services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert second.status == first.status == UploadStatus.UPLOADED
    assert fresh(row).confirmed_at == first_confirmed_at
    assert second.metadata == first.metadata


def test_confirm_query_budget(memory_storage, owner, django_assert_max_num_queries) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    get_app_config()
    with django_assert_max_num_queries(3):
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})


def test_confirm_someone_elses_upload_is_not_found(memory_storage, owner, other) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    for upload_id in (row.id, "not-a-uuid", uuid.uuid4()):
        with pytest.raises(NotFound):
            services.confirm_upload(owner=other, upload_id=upload_id, payload={})
    assert fresh(row).status == UploadStatus.PENDING


def test_confirm_before_upload_is_conflict_and_row_stays_pending(memory_storage, owner) -> None:
    row, _ = create(owner)
    with pytest.raises(Conflict) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert err.value.code == "not_uploaded_yet"
    assert err.value.status_code == 409
    assert fresh(row).status == UploadStatus.PENDING


@pytest.mark.parametrize(
    ("data", "content_type", "fragment"),
    [
        (HTML + b" " * (100 - len(HTML)), "image/png", "first bytes are not PNG"),
        (png_bytes(99), "image/png", "stored size 99 bytes != declared 100 bytes"),
        (png_bytes(101), "image/png", "stored size 101 bytes != declared 100 bytes"),
        (png_bytes(100), "text/html", "stored content type text/html != declared image/png"),
    ],
)
def test_mismatch_deletes_object_and_fails_row(
    memory_storage, owner, data, content_type, fragment
) -> None:
    row, _ = create(owner)
    store(memory_storage, row, data, content_type)

    with pytest.raises(services.VerificationFailed) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    assert err.value.status_code == 422
    assert err.value.code == "verification_failed"
    assert fragment in err.value.message
    row = fresh(row)
    assert row.status == UploadStatus.FAILED
    assert fragment in row.metadata["failure_reason"]
    assert row.metadata["object_deleted"] is True
    assert memory_storage.keys() == []
    # Repeating the confirm gives the same verdict, and the row stays failed.
    with pytest.raises(services.VerificationFailed) as again:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert again.value.message == err.value.message
    assert fresh(row).status == UploadStatus.FAILED


def test_confirm_over_current_size_limit_fails(memory_storage, owner) -> None:
    row, _ = create(owner, size=200)
    store(memory_storage, row, png_bytes(200))
    config = AppConfig.load()
    config.max_upload_size = 150
    config.save()
    with pytest.raises(services.VerificationFailed) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert "exceeds the limit of 150 bytes" in err.value.message


def test_confirm_after_expiry_within_grace_succeeds(memory_storage, owner, settings) -> None:
    """An upload that started in time may finish after expires_at: the grace period covers it."""
    settings.UPLOAD_ORPHAN_GRACE_SECONDS = 3600
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=60))
    assert services.confirm_upload(owner=owner, upload_id=row.id, payload={}).status == "uploaded"


def test_confirm_after_expiry_and_grace_is_gone(memory_storage, owner, settings) -> None:
    settings.UPLOAD_ORPHAN_GRACE_SECONDS = 3600
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    MediaUpload.objects.filter(pk=row.pk).update(
        expires_at=timezone.now() - timedelta(seconds=3601)
    )
    with pytest.raises(Gone) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert err.value.code == "expired"
    assert fresh(row).status == UploadStatus.PENDING  # the cleanup job removes it


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (UploadStatus.EXPIRING, "expired"),
        (UploadStatus.EXPIRED, "expired"),
        (UploadStatus.DELETING, "deleted"),
        (UploadStatus.DELETED, "deleted"),
    ],
)
def test_confirm_in_terminal_states_is_gone(memory_storage, owner, status, code) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    MediaUpload.objects.filter(pk=row.pk).update(status=status)
    with pytest.raises(Gone) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert err.value.code == code
    assert fresh(row).status == status
    assert memory_storage.keys() == [row.key]


def test_provider_down_during_confirm_keeps_row_pending(memory_storage, owner) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    memory_storage.available = False
    with pytest.raises(ProviderUnavailable) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert err.value.status_code == 503
    assert fresh(row).status == UploadStatus.PENDING
    memory_storage.available = True
    assert services.confirm_upload(owner=owner, upload_id=row.id, payload={}).status == "uploaded"


def test_cleanup_claim_during_verification_wins(memory_storage, owner) -> None:
    """The cleanup claims the row while confirm is talking to the provider: confirm must lose
    (410) so the row never ends up uploaded with its object deleted by the cleanup."""
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    real_inspect = memory_storage.inspect

    def inspect_while_cleanup_claims(ref: Any) -> Any:
        MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
            status=UploadStatus.EXPIRING, claimed_at=timezone.now()
        )
        return real_inspect(ref)

    memory_storage.inspect = inspect_while_cleanup_claims
    with pytest.raises(Gone) as err:
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert err.value.code == "expired"
    assert fresh(row).status == UploadStatus.EXPIRING


def test_concurrent_finalise_during_verification_returns_its_result(memory_storage, owner) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    real_inspect = memory_storage.inspect
    calls = []

    def inspect_while_webhook_finalises(ref: Any) -> Any:
        calls.append(ref)
        if len(calls) == 1:
            services.finalise_upload(row.id, payload={}, source="s3_event", sequencer="0A")
        return real_inspect(ref)

    memory_storage.inspect = inspect_while_webhook_finalises
    result = services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert result.status == UploadStatus.UPLOADED
    row = fresh(row)
    assert row.metadata["verified_by"] == "s3_event"
    assert row.event_sequencer == "0A"


def test_webhook_finalise_after_expiry_is_accepted_and_stores_sequencer(
    memory_storage, owner
) -> None:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=5))
    result = services.finalise_upload(
        row.id, payload={"version": 7}, source="cloudinary_webhook", sequencer="00FF"
    )
    assert result.status == UploadStatus.UPLOADED
    row = fresh(row)
    assert row.event_sequencer == "00FF"
    assert row.metadata["verified_by"] == "cloudinary_webhook"


def test_finalise_unknown_id_is_not_found(memory_storage) -> None:
    with pytest.raises(NotFound):
        services.finalise_upload(uuid.uuid4())
    with pytest.raises(NotFound):
        services.finalise_upload("garbage")


def test_provider_switch_between_presign_and_confirm(memory_storage, owner) -> None:
    cloudinary_fake = InMemoryStorageService(name="cloudinary")
    CloudStorageFactory.install(cloudinary_fake)
    row, _ = create(owner)
    assert row.provider == "s3"
    use_provider("cloudinary")
    store(memory_storage, row, png_bytes(100))

    confirmed = services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    assert confirmed.status == UploadStatus.UPLOADED
    assert confirmed.metadata["provider"] == "s3"
    assert cloudinary_fake.keys() == []
    new_row, _ = create(owner)
    assert new_row.provider == "cloudinary"


def test_failed_delete_after_mismatch_is_handed_to_the_job(
    memory_storage, owner, django_capture_on_commit_callbacks
) -> None:
    row, _ = create(owner)
    store(memory_storage, row, HTML + b" " * (100 - len(HTML)))
    real_delete_many = memory_storage.delete_many

    def delete_many_down(refs: Any) -> Any:
        raise ProviderUnavailable("simulated outage on delete")

    memory_storage.delete_many = delete_many_down
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(services.VerificationFailed),
    ):
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert fresh(row).status == UploadStatus.FAILED
    assert memory_storage.keys() == [row.key]
    assert len(callbacks) == 1  # the delete job was enqueued

    memory_storage.delete_many = real_delete_many
    services.delete_at_provider(row.id)  # what the job runs
    row = fresh(row)
    assert row.status == UploadStatus.FAILED
    assert row.metadata["object_deleted"] is True
    assert memory_storage.keys() == []


# --- delete -----------------------------------------------------------------------------------


def _uploaded(memory_storage: Any, owner: Any) -> MediaUpload:
    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    return services.confirm_upload(owner=owner, upload_id=row.id, payload={})


def test_request_delete_marks_deleting_and_enqueues_job(
    memory_storage, owner, django_capture_on_commit_callbacks
) -> None:
    import dramatiq

    from backend.uploads import tasks

    row = _uploaded(memory_storage, owner)
    stub = tasks.delete_upload.broker
    stub.flush_all()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.request_delete(owner=owner, upload_id=row.id)
    assert result.status == UploadStatus.DELETING
    assert fresh(row).status == UploadStatus.DELETING
    assert len(callbacks) == 1
    messages = list(stub.queues["default"].queue)
    assert len(messages) == 1
    message = dramatiq.Message.decode(messages[0])
    assert message.actor_name == "delete_upload"
    assert message.args == (str(row.id),)
    assert memory_storage.keys() == [row.key]  # nothing deleted synchronously
    stub.flush_all()


def test_request_delete_other_owner_is_not_found(memory_storage, owner, other) -> None:
    row = _uploaded(memory_storage, owner)
    with pytest.raises(NotFound):
        services.request_delete(owner=other, upload_id=row.id)
    assert fresh(row).status == UploadStatus.UPLOADED


def test_delete_at_provider_deletes_and_is_idempotent(memory_storage, owner) -> None:
    row = _uploaded(memory_storage, owner)
    services.request_delete(owner=owner, upload_id=row.id)

    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED
    assert memory_storage.keys() == []
    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED
    # A repeated DELETE request is harmless too.
    assert services.request_delete(owner=owner, upload_id=row.id).status == UploadStatus.DELETED


def test_delete_at_provider_outage_keeps_deleting(memory_storage, owner) -> None:
    row = _uploaded(memory_storage, owner)
    services.request_delete(owner=owner, upload_id=row.id)
    memory_storage.available = False
    with pytest.raises(ProviderUnavailable):
        services.delete_at_provider(row.id)
    assert fresh(row).status == UploadStatus.DELETING
    memory_storage.available = True
    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED


def test_delete_at_provider_missing_object_is_success(memory_storage, owner) -> None:
    row, _ = create(owner)  # pending, never uploaded: the user cancels
    services.request_delete(owner=owner, upload_id=row.id)
    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED


def test_delete_at_provider_leaves_other_states_alone(memory_storage, owner) -> None:
    row = _uploaded(memory_storage, owner)
    assert services.delete_at_provider(row.id).status == UploadStatus.UPLOADED
    assert memory_storage.keys() == [row.key]
    with pytest.raises(NotFound):
        services.delete_at_provider(uuid.uuid4())


def test_mark_deleted_by_provider(memory_storage, owner) -> None:
    row = _uploaded(memory_storage, owner)
    assert services.mark_deleted_by_provider(uuid.uuid4()) is None
    MediaUpload.objects.filter(pk=row.pk).update(event_sequencer="00B0")

    stale = services.mark_deleted_by_provider(row.id, sequencer="00A0")
    assert stale is not None and fresh(row).status == UploadStatus.UPLOADED

    marked = services.mark_deleted_by_provider(row.id, sequencer="00C0")
    assert marked is not None and marked.status == UploadStatus.DELETED
    row = fresh(row)
    assert row.status == UploadStatus.DELETED
    assert row.event_sequencer == "00C0"
    assert row.metadata["deleted_by"] == "provider"


def test_mark_deleted_by_provider_leaves_pending_rows(memory_storage, owner) -> None:
    row, _ = create(owner)
    assert services.mark_deleted_by_provider(row.id).status == UploadStatus.PENDING


def test_download_url_only_for_uploaded(memory_storage, owner) -> None:
    row, _ = create(owner)
    assert selectors.download_url_for(row) is None
    row = _uploaded(memory_storage, owner)
    assert selectors.download_url_for(row) == f"memory://s3/{row.key}?expires_in=300"
    memory_storage.available = False
    assert selectors.download_url_for(row) is None


def test_create_needs_a_saved_owner(memory_storage) -> None:
    from django.contrib.auth.models import AnonymousUser

    for owner in (None, AnonymousUser()):
        with pytest.raises(services.NotAuthenticated):
            create(owner)
    assert MediaUpload.objects.count() == 0


def test_provider_answer_without_size_is_a_provider_fault(memory_storage, owner) -> None:
    from dataclasses import replace

    row, _ = create(owner)
    store(memory_storage, row, png_bytes(100))
    real_inspect = memory_storage.inspect
    memory_storage.inspect = lambda ref: replace(real_inspect(ref), size=None)
    with pytest.raises(ProviderUnavailable):
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert fresh(row).status == UploadStatus.PENDING
    assert memory_storage.keys() == [row.key]  # a valid upload is never destroyed over it
