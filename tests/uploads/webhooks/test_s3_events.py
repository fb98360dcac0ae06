"""S3 events through SNS, end to end: signed message -> view -> services -> moto S3 -> row."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings

from backend.storage.factory import CloudStorageFactory
from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.webhooks.s3 import parse_s3_message
from tests.fixtures.providers import S3_TEST_BUCKET, use_provider
from tests.uploads.webhooks.conftest import S3_WEBHOOK
from tests.uploads.webhooks.sns_signing import SnsSigner, s3_event

CONTENT = b"hello from a direct upload\n"
GENERIC_503 = {
    "error": {
        "code": "temporarily_unavailable",
        "message": "Temporarily unavailable; retry later.",
        "details": {},
    }
}


@pytest.fixture
def s3(s3_storage: Any, db: None) -> Any:
    use_provider("s3")
    return s3_storage


def _pending(user: Any, content: bytes = CONTENT, filename: str = "notes.txt") -> MediaUpload:
    row, _ = services.create_upload(
        owner=user, filename=filename, content_type="text/plain", size=len(content)
    )
    return row


def _put(s3: Any, row: MediaUpload, content: bytes = CONTENT) -> None:
    s3.client.put_object(
        Bucket=S3_TEST_BUCKET, Key=row.key, Body=content, ContentType=row.content_type
    )


def _post(client: Client, message: dict[str, Any]) -> Any:
    return client.post(
        S3_WEBHOOK,
        data=json.dumps(message),
        content_type="text/plain; charset=UTF-8",  # what SNS sends
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=message.get("Type", ""),
    )


def _event(signer: SnsSigner, key: str, **kwargs: Any) -> dict[str, Any]:
    version = kwargs.pop("version", "1")
    message_id = kwargs.pop("message_id", None)
    return signer.notification(
        s3_event(key, bucket=S3_TEST_BUCKET, **kwargs), version=version, message_id=message_id
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_object_created_finalises_exactly_like_confirm(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client, version: str
) -> None:
    by_event, by_confirm = _pending(user), _pending(user, filename="other.txt")
    _put(s3, by_event)
    _put(s3, by_confirm)

    response = _post(webhook_client, _event(signer, by_event.key, version=version))

    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["result"] == "finalised"
    services.confirm_upload(owner=user, upload_id=by_confirm.id, payload={})
    by_event.refresh_from_db()
    by_confirm.refresh_from_db()
    assert by_event.status == UploadStatus.UPLOADED
    assert by_event.stored_size == len(CONTENT)
    assert by_event.confirmed_at is not None
    assert by_event.event_sequencer == "0055AED6DCD90281E5"
    assert by_event.metadata["verified_by"] == "s3_event"
    assert set(by_event.metadata) == set(by_confirm.metadata)
    for name in ("provider", "bytes", "content_type", "etag"):
        assert by_event.metadata[name] == by_confirm.metadata[name]


def test_object_not_there_yet_is_retried_and_then_succeeds(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    message = _event(signer, row.key)

    first = _post(webhook_client, message)
    assert first.status_code == 503
    assert first.has_header("Retry-After")
    assert first.json()["error"]["code"]
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING

    _put(s3, row)
    retry = _post(webhook_client, message)  # SNS redelivers the same message
    assert retry.status_code == 200
    assert retry.json()["status"] == "ok"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED


def test_object_that_does_not_match_fails_the_row_and_is_deleted(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    _put(s3, row, b"<html><script>alert(1)</script></html>\n")  # wrong size and markup

    response = _post(webhook_client, _event(signer, row.key))

    assert response.status_code == 200  # the verdict is final: no point in SNS retrying
    assert response.json()["results"][0]["result"] == "ignored"
    row.refresh_from_db()
    assert row.status == UploadStatus.FAILED
    assert "failure_reason" in row.metadata
    assert s3.inspect(row.object_ref()).exists is False


def test_object_removed_marks_deleted(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    _put(s3, row)
    assert _post(webhook_client, _event(signer, row.key, sequencer="0A")).status_code == 200
    s3.client.delete_object(Bucket=S3_TEST_BUCKET, Key=row.key)

    removed = _event(signer, row.key, event_name="ObjectRemoved:Delete", sequencer="0B")
    response = _post(webhook_client, removed)

    assert response.status_code == 200
    assert response.json()["results"][0]["result"] == "deleted"
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED
    assert row.event_sequencer == "0B"
    assert row.metadata["deleted_by"] == "provider"


def test_duplicate_message_id_has_one_effect(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    _put(s3, row)
    message = _event(signer, row.key, sequencer="0A")
    assert _post(webhook_client, message).json()["status"] == "ok"
    row.refresh_from_db()
    first_update = (row.status, row.updated_at, row.metadata)

    for _ in range(3):
        again = _post(webhook_client, message)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "results": []}
    row.refresh_from_db()
    assert (row.status, row.updated_at, row.metadata) == first_update


def test_same_event_under_a_new_message_id_is_still_one_effect(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    """SNS may also re-publish: a new MessageId, the same S3 event (same sequencer)."""
    row = _pending(user)
    _put(s3, row)
    assert _post(webhook_client, _event(signer, row.key, sequencer="0A")).status_code == 200
    row.refresh_from_db()
    snapshot = (row.status, row.updated_at)
    again = _post(webhook_client, _event(signer, row.key, sequencer="0A")).json()
    assert again["results"][0]["result"] == "ignored"
    row.refresh_from_db()
    assert (row.status, row.updated_at) == snapshot


def test_older_sequencer_is_ignored(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    """Reordered delivery: the object was removed (seq FF) and uploaded again (seq 0100, which
    is later once padded to equal length); the late removal must not delete the row."""
    row = _pending(user)
    _put(s3, row)
    assert _post(webhook_client, _event(signer, row.key, sequencer="0100")).status_code == 200
    late = _event(signer, row.key, event_name="ObjectRemoved:Delete", sequencer="FF")

    response = _post(webhook_client, late)

    assert response.status_code == 200
    assert response.json()["results"][0]["result"] == "ignored"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED
    assert row.event_sequencer == "0100"


@pytest.mark.parametrize(
    ("key", "bucket"),
    [
        ("elsewhere/1/abc/notes.txt", S3_TEST_BUCKET),  # outside UPLOAD_KEY_PREFIX
        ("uploadsX/1/abc/notes.txt", S3_TEST_BUCKET),  # prefix look-alike
        ("uploads/1/00000000000000000000000000000000/notes.txt", S3_TEST_BUCKET),  # unknown
        (None, "someone-elses-bucket"),  # our key, another bucket
    ],
)
def test_foreign_or_unknown_keys_change_nothing(
    s3: Any,
    user: Any,
    signer: SnsSigner,
    webhook_client: Client,
    key: str | None,
    bucket: str,
) -> None:
    row = _pending(user)
    _put(s3, row)
    before = MediaUpload.objects.get(pk=row.pk).updated_at
    message = signer.notification(s3_event(key or row.key, bucket=bucket))

    response = _post(webhook_client, message)

    assert response.status_code == 200
    assert response.json()["results"][0]["result"] == "ignored"
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
    assert row.updated_at == before


def test_s3_test_event_is_acknowledged(signer: SnsSigner, webhook_client: Client, db: None) -> None:
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-01-01T00:00:00.000Z",
        "Bucket": S3_TEST_BUCKET,
    }
    response = _post(webhook_client, signer.notification(test_event))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "results": []}


def test_tampered_message_is_refused_and_changes_nothing(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    _put(s3, row)
    other = _pending(user, filename="other.txt")
    message = _event(signer, row.key)
    tampered = {**message, "Message": message["Message"].replace(row.key, other.key)}

    response = _post(webhook_client, tampered)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert set(MediaUpload.objects.values_list("status", flat=True)) == {UploadStatus.PENDING}


def test_hostile_certificate_url_is_refused_without_fetching(
    s3: Any, user: Any, webhook_client: Client, signer: SnsSigner
) -> None:
    row = _pending(user)
    hostile = SnsSigner(cert_url="https://sns.us-east-1.amazonaws.com.evil.example/cert.pem")
    response = _post(webhook_client, hostile.notification(s3_event(row.key)))
    assert response.status_code == 403
    assert signer.fetched == [] and hostile.fetched == []


def test_non_json_and_wrong_method(webhook_client: Client, db: None) -> None:
    assert (
        webhook_client.post(S3_WEBHOOK, data=b"\xff\x00", content_type="text/plain").status_code
        == 400
    )
    assert webhook_client.get(S3_WEBHOOK).status_code == 405


def test_message_type_header_must_match(
    signer: SnsSigner, webhook_client: Client, db: None
) -> None:
    message = signer.notification("{}")
    response = webhook_client.post(
        S3_WEBHOOK,
        data=json.dumps(message),
        content_type="text/plain",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE="SubscriptionConfirmation",
    )
    assert response.status_code == 400


def test_database_failure_answers_5xx_so_sns_retries(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    _put(s3, row)
    message = _event(signer, row.key)
    table = MediaUpload._meta.db_table
    # A real database error: the table is briefly not there (DDL is transactional here and
    # on PostgreSQL, so the test's own rollback undoes it).
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        response = _post(webhook_client, message)
    finally:
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    assert response.status_code == 503
    assert response.has_header("Retry-After")
    assert response.json() == GENERIC_503


def test_provider_outage_answers_503_and_keeps_the_row_pending(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _pending(user)
    message = _event(signer, row.key)
    # Nothing listens on port 9: every S3 call fails to connect.
    with override_settings(AWS_S3_ENDPOINT_URL="http://127.0.0.1:9"):
        CloudStorageFactory.reset()
        started = time.monotonic()
        response = _post(webhook_client, message)
        elapsed = time.monotonic() - started
    CloudStorageFactory.reset()
    assert response.status_code == 503, response.content
    assert response.has_header("Retry-After")
    assert response.json() == GENERIC_503  # nothing about S3, its endpoint or the failure
    assert elapsed < 30
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
    # and once S3 is back, the redelivery goes through
    _put(s3, row)
    assert _post(webhook_client, message).json()["status"] == "ok"


def test_keys_are_url_decoded() -> None:
    message = json.dumps(s3_event("uploads/7/abc/my file+(1) é.txt"))
    assert "+" in message and "%" in message
    [event] = parse_s3_message(message) or []
    assert event.key == "uploads/7/abc/my file+(1) é.txt"


def test_unrelated_records_and_garbage_are_ignored() -> None:
    assert parse_s3_message("not json") is None
    assert parse_s3_message("[]") is None
    assert parse_s3_message(json.dumps({"Records": "x"})) is None
    restore = s3_event("uploads/1/a/b.txt", event_name="ObjectRestore:Completed")
    assert parse_s3_message(json.dumps(restore)) == []
    created = s3_event("uploads/1/a/b.txt", sequencer="not-hex")
    [event] = parse_s3_message(json.dumps(created)) or []
    assert event.sequencer == ""


class _CertificateHostAnswer:
    """What `requests.get(..., stream=True)` returns, for a certificate host answering 404."""

    status_code = 404

    def __enter__(self) -> _CertificateHostAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_certificate_host_4xx_is_a_403_and_is_not_fetched_again(
    webhook_client: Client, db: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged message naming an allow-listed topic and a well-formed certificate URL that the
    SNS host does not know: refused (not 503, which would invite retries), fetched once."""
    from backend.uploads.webhooks import sns

    settings.SNS_TOPIC_ARNS = [SnsSigner().topic_arn]
    fetched: list[str] = []

    def fake_get(url: str, **kwargs: Any) -> _CertificateHostAnswer:
        fetched.append(url)
        return _CertificateHostAnswer()

    monkeypatch.setattr(sns.requests, "get", fake_get)
    monkeypatch.setattr(sns, "certificate_fetcher", sns.fetch_certificate)
    forged = SnsSigner()  # our topic, a key SNS never had

    answers = [_post(webhook_client, forged.notification("{}")) for _ in range(4)]

    assert [a.status_code for a in answers] == [403] * 4
    assert fetched == [forged.cert_url]


def test_refused_sns_messages_do_not_describe_the_configuration(
    webhook_client: Client, signer: SnsSigner, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SNS_TOPIC_ARNS = []  # nothing accepted
    response = _post(webhook_client, signer.notification("{}"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert "SNS_TOPIC_ARNS" not in response.content.decode()
    assert "SNS_TOPIC_ARNS" in caplog.text  # the operator still learns it from the log
    settings.SNS_TOPIC_ARNS = ["arn:aws:sns:us-east-1:123456789012:another-topic"]
    refused_topic = _post(webhook_client, signer.notification("{}"))
    settings.SNS_TOPIC_ARNS = [signer.topic_arn]
    bad_signature = _post(webhook_client, {**signer.notification("{}"), "Signature": "AAAA"})
    assert refused_topic.status_code == bad_signature.status_code == 403
    assert refused_topic.json() == bad_signature.json()  # no oracle for our topic ARNs
