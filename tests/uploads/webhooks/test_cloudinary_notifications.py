"""Cloudinary notifications: signature over the raw body (SDK algorithm), window, effects.

Uploads go through the local Cloudinary stand-in with the instructions our service issues; the
notification is the one the stand-in signed for that upload (as Cloudinary would send it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cloudinary.utils import compute_hex_hash
from django.test import Client

from backend.storage.factory import CloudStorageFactory
from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import (
    CLOUDINARY_TEST_SECRET,
    running_cloudinary_standin,
    use_provider,
)
from tests.uploads.webhooks.conftest import CLOUDINARY_WEBHOOK

CONTENT = b"plain text, uploaded straight to Cloudinary\n"
TOLERANCE = 600


@pytest.fixture(params=["sha1", "sha256"])
def cloudinary(request: pytest.FixtureRequest, db: None, settings: Any) -> Iterator[Any]:
    """The stand-in signing with the account's algorithm, and our settings to match."""

    # Nothing listens on port 9: the stand-in's own delivery attempt fails fast, and each test
    # delivers the signed notification itself, at the moment it chooses.
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"
    settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = TOLERANCE
    with running_cloudinary_standin(request.param) as handle:
        use_provider("cloudinary")
        yield handle


def _sign(body: bytes, timestamp: str, algorithm: str) -> str:
    return compute_hex_hash(body.decode() + timestamp + CLOUDINARY_TEST_SECRET, algorithm)


def _upload(cloudinary: Any, user: Any, content: bytes = CONTENT) -> tuple[MediaUpload, Any]:
    """Create the row, upload with its instructions; return the row and the stand-in's note."""
    row, instructions = services.create_upload(
        owner=user, filename="notes.txt", content_type="text/plain", size=len(content)
    )
    assert instructions.fields["notification_url"] == "http://127.0.0.1:9" + CLOUDINARY_WEBHOOK
    answer = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("notes.txt", content, "text/plain")},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    note = cloudinary.standin.notifications[-1]
    assert json.loads(note.body)["public_id"] == row.key
    return row, note


def _deliver(client: Client, body: bytes, timestamp: str | None, signature: str | None) -> Any:
    headers = {}
    if timestamp is not None:
        headers["HTTP_X_CLD_TIMESTAMP"] = timestamp
    if signature is not None:
        headers["HTTP_X_CLD_SIGNATURE"] = signature
    return client.post(CLOUDINARY_WEBHOOK, data=body, content_type="application/json", **headers)


def test_upload_notification_finalises(cloudinary: Any, user: Any, webhook_client: Client) -> None:
    row, note = _upload(cloudinary, user)

    response = _deliver(webhook_client, note.body, note.timestamp, note.signature)

    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["result"] == "finalised"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED
    assert row.stored_size == len(CONTENT)
    assert row.metadata["verified_by"] == "cloudinary_webhook"
    assert str(row.metadata["version"]) == str(json.loads(note.body)["version"])


def test_signature_made_in_the_test_with_the_sdk_is_accepted(
    cloudinary: Any, user: Any, webhook_client: Client, request: pytest.FixtureRequest
) -> None:
    algorithm = request.node.callspec.params["cloudinary"]
    row, note = _upload(cloudinary, user)
    timestamp = str(int(time.time()) - 30)
    body = note.body
    response = _deliver(webhook_client, body, timestamp, _sign(body, timestamp, algorithm))
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED


def test_the_other_algorithm_is_refused(
    cloudinary: Any, user: Any, webhook_client: Client, request: pytest.FixtureRequest
) -> None:
    algorithm = request.node.callspec.params["cloudinary"]
    other = "sha256" if algorithm == "sha1" else "sha1"
    row, note = _upload(cloudinary, user)
    response = _deliver(
        webhook_client, note.body, note.timestamp, _sign(note.body, note.timestamp, other)
    )
    assert response.status_code == 401
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING


def test_reserialised_json_fails(cloudinary: Any, user: Any, webhook_client: Client) -> None:
    row, note = _upload(cloudinary, user)
    parsed = json.loads(note.body)
    variants = [
        json.dumps(parsed, separators=(",", ":")).encode(),
        json.dumps(parsed, sort_keys=True).encode(),
        json.dumps(parsed, indent=1).encode(),
        note.body + b"\n",
        b" " + note.body,
    ]
    for body in variants:
        assert body != note.body
        response = _deliver(webhook_client, body, note.timestamp, note.signature)
        assert response.status_code == 401, body
        assert response.json()["error"]["code"] == "invalid_signature"
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING


def test_every_byte_of_the_body_is_covered(
    cloudinary: Any, user: Any, webhook_client: Client
) -> None:
    row, note = _upload(cloudinary, user)
    for i in range(0, len(note.body), 7):
        tampered = bytearray(note.body)
        tampered[i] ^= 0x01
        response = _deliver(webhook_client, bytes(tampered), note.timestamp, note.signature)
        assert response.status_code == 401
    bad_sig = note.signature[:-1] + ("0" if note.signature[-1] != "0" else "1")
    assert _deliver(webhook_client, note.body, note.timestamp, bad_sig).status_code == 401
    # Cloudinary sends lowercase hex; the compare is exact.
    upper = note.signature.upper()
    assert _deliver(webhook_client, note.body, note.timestamp, upper).status_code == 401
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING


@pytest.mark.parametrize("offset", [-(TOLERANCE + 5), -(10 * TOLERANCE), TOLERANCE + 5, 86400])
def test_stale_and_future_timestamps_fail_even_when_correctly_signed(
    cloudinary: Any,
    user: Any,
    webhook_client: Client,
    request: pytest.FixtureRequest,
    offset: int,
) -> None:
    algorithm = request.node.callspec.params["cloudinary"]
    row, note = _upload(cloudinary, user)
    timestamp = str(int(time.time()) + offset)
    response = _deliver(
        webhook_client, note.body, timestamp, _sign(note.body, timestamp, algorithm)
    )
    assert response.status_code == 401
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING


@pytest.mark.parametrize(
    ("timestamp", "signature"), [(None, "abc"), ("123", None), (None, None), ("soon", "abc")]
)
def test_missing_or_malformed_headers_fail(
    cloudinary: Any, webhook_client: Client, timestamp: str | None, signature: str | None
) -> None:
    response = _deliver(webhook_client, b'{"notification_type":"upload"}', timestamp, signature)
    assert response.status_code == 401


def test_replays_inside_the_window_are_no_ops(
    cloudinary: Any, user: Any, webhook_client: Client
) -> None:
    row, note = _upload(cloudinary, user)
    assert _deliver(webhook_client, note.body, note.timestamp, note.signature).status_code == 200
    row.refresh_from_db()
    after_first = (row.status, row.updated_at, row.metadata)
    # The owner deletes it; a replayed upload notification must not bring it back.
    services.request_delete(owner=user, upload_id=row.id)
    for _ in range(3):
        replay = _deliver(webhook_client, note.body, note.timestamp, note.signature)
        assert replay.status_code == 200
        assert replay.json()["status"] == "duplicate"
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETING
    assert row.metadata == after_first[2]


def test_delete_notification_marks_deleted(
    cloudinary: Any, user: Any, webhook_client: Client, request: pytest.FixtureRequest
) -> None:
    algorithm = request.node.callspec.params["cloudinary"]
    row, note = _upload(cloudinary, user)
    assert _deliver(webhook_client, note.body, note.timestamp, note.signature).status_code == 200
    body = json.dumps(
        {
            "notification_type": "delete",
            "resources": [
                {"resource_type": "raw", "type": "upload", "public_id": row.key, "version": 1},
                {"resource_type": "raw", "type": "upload", "public_id": "uploads/0/none/x.txt"},
            ],
        }
    ).encode()
    timestamp = str(int(time.time()))

    response = _deliver(webhook_client, body, timestamp, _sign(body, timestamp, algorithm))

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["result"] for r in results] == ["deleted", "ignored"]
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED


def test_unknown_public_id_and_other_types_change_nothing(
    cloudinary: Any, user: Any, webhook_client: Client, request: pytest.FixtureRequest
) -> None:
    algorithm = request.node.callspec.params["cloudinary"]
    row, _note = _upload(cloudinary, user)
    before = MediaUpload.objects.get(pk=row.pk).updated_at
    for payload in (
        {"notification_type": "upload", "public_id": "uploads/1/ffff/unknown.txt", "version": 1},
        {"notification_type": "upload", "public_id": "elsewhere/x", "version": 1},
        {"notification_type": "eager", "public_id": row.key},
        {"notification_type": "upload"},
    ):
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        response = _deliver(webhook_client, body, timestamp, _sign(body, timestamp, algorithm))
        assert response.status_code == 200, payload
        assert all(r["result"] == "ignored" for r in response.json()["results"])
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
    assert row.updated_at == before


def test_provider_outage_answers_503_so_cloudinary_retries(
    cloudinary: Any, user: Any, webhook_client: Client
) -> None:
    row, note = _upload(cloudinary, user)
    cloudinary.standin.fail_with = 500
    response = _deliver(webhook_client, note.body, note.timestamp, note.signature)
    assert response.status_code == 503
    assert response.has_header("Retry-After")
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
    cloudinary.standin.fail_with = None
    retry = _deliver(webhook_client, note.body, note.timestamp, note.signature)
    assert retry.status_code == 200
    assert retry.json()["status"] == "ok"  # a failed attempt is not remembered as processed
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED


def test_unconfigured_cloudinary_is_a_server_side_503(
    webhook_client: Client, db: None, caplog: pytest.LogCaptureFixture
) -> None:
    CloudStorageFactory.reset()
    body = b'{"notification_type":"upload"}'
    response = _deliver(webhook_client, body, str(int(time.time())), "0" * 40)
    CloudStorageFactory.reset()
    assert response.status_code == 503
    assert response.has_header("Retry-After")
    # A generic body: an anonymous caller learns nothing about what is (not) configured.
    assert response.json() == {
        "error": {
            "code": "temporarily_unavailable",
            "message": "Temporarily unavailable; retry later.",
            "details": {},
        }
    }
    assert "CLOUDINARY" not in response.content.decode().upper()
    assert "CLOUDINARY_API_SECRET" in caplog.text  # the details are in the server log


def test_no_notification_url_without_public_base_url(
    cloudinary: Any, user: Any, settings: Any
) -> None:
    settings.PUBLIC_BASE_URL = ""
    assert services.notification_url_for(cloudinary.service) is None
    _row, instructions = services.create_upload(
        owner=user, filename="a.txt", content_type="text/plain", size=3
    )
    assert "notification_url" not in instructions.fields
    settings.PUBLIC_BASE_URL = "https://uploads.example.com"
    assert (
        services.notification_url_for(cloudinary.service)
        == "https://uploads.example.com/api/v1/webhooks/cloudinary/"
    )


def test_only_the_webhook_sources_skip_the_client_signature_check(
    cloudinary: Any, user: Any
) -> None:
    """`source` names who authenticated the payload; an unknown name is a client's claim."""
    row, note = _upload(cloudinary, user)
    unsigned = {"public_id": row.key, "version": json.loads(note.body)["version"]}
    assert {"cloudinary_webhook", "s3_event"} == services.TRUSTED_SOURCES
    with pytest.raises(services.VerificationFailed):
        services.finalise_upload(row.id, payload=unsigned, source="webhook")
    row.refresh_from_db()
    assert row.status == UploadStatus.PENDING
