"""Issue 11 on Cloudinary, against the stand-in over HTTP: what a client holding our signed
parameters can no longer do (mislabel bytes, recreate a deleted asset, keep a download URL, pick
the served type of a raw file).

The stand-in honours what these tests rely on as Cloudinary documents it: `allowed_formats`,
signed parameters valid for an hour, the `authenticated` delivery type and the expiring private
download URL (devtools/cloudinary_standin, tests/devtools/test_cloudinary_standin.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import requests
from django.test import Client
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from backend.core.errors import ValidationFailed
from backend.storage.base import ObjectRef
from backend.uploads import selectors, services, tasks
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import use_provider
from tests.uploads.test_api_support import HTML, png_bytes

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">'
    b"<script>alert(document.domain)</script></svg>"
)


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("cld-owner", password="x")


@pytest.fixture
def worker(broker: StubBroker) -> Iterator[dramatiq.Worker]:
    # One thread: SQLite's shared in-memory test database takes one writer at a time.
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


def _create(owner: Any, filename: str, content_type: str, size: int) -> tuple[MediaUpload, Any]:
    use_provider("cloudinary")
    return services.create_upload(
        owner=owner, filename=filename, content_type=content_type, size=size
    )


def _post(instructions: Any, data: bytes, filename: str, content_type: str) -> requests.Response:
    return requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": (filename, data, content_type)},
        timeout=10,
    )


def _uploaded(handle: Any, owner: Any, data: bytes) -> tuple[MediaUpload, Any]:
    row, instructions = _create(owner, "pic.png", "image/png", len(data))
    answer = _post(instructions, data, "pic.png", "image/png")
    assert answer.status_code == 200, answer.text
    row = services.confirm_upload(owner=owner, upload_id=row.id, payload=answer.json())
    assert row.status == UploadStatus.UPLOADED
    return row, instructions


@pytest.mark.django_db
def test_svg_bytes_for_image_png_are_refused_at_upload(cloudinary_standin, owner) -> None:
    _row, instructions = _create(owner, "pic.png", "image/png", len(SVG))
    assert instructions.fields["allowed_formats"] == "png"

    answer = _post(instructions, SVG, "pic.png", "image/png")

    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Image file format svg not allowed"
    assert cloudinary_standin.objects == {}  # nothing stored, nothing served
    # The restriction is signed: a client cannot drop it.
    loose = {k: v for k, v in instructions.fields.items() if k != "allowed_formats"}
    dropped = requests.post(
        instructions.url, data=loose, files={"file": ("pic.png", SVG, "image/png")}, timeout=10
    )
    assert dropped.status_code == 400
    assert dropped.json()["error"]["message"].startswith("Invalid Signature")
    assert cloudinary_standin.objects == {}
    # A PNG with the same instructions goes through.
    assert _post(instructions, png_bytes(len(SVG)), "pic.png", "image/png").status_code == 200


@pytest.mark.django_db
def test_a_declared_checksum_cloudinary_cannot_verify_is_refused_at_create(
    cloudinary_standin, owner
) -> None:
    """Cloudinary computes no SHA-256 over what it stores: a declared digest would be recorded
    and never checked, so create refuses it (S3 enforces it: tests/uploads/test_immutable_s3.py)."""
    use_provider("cloudinary")
    with pytest.raises(ValidationFailed) as refused:
        services.create_upload(
            owner=owner,
            filename="pic.png",
            content_type="image/png",
            size=300,
            checksum_sha256="a" * 64,
        )
    assert refused.value.code == "checksum_not_supported"
    assert not MediaUpload.objects.exists()
    # Over the API: a 400 that says what to do, and the capability clients can read first.
    client = Client()
    client.force_login(owner)
    answer = client.post(
        "/api/v1/uploads/",
        {
            "filename": "pic.png",
            "content_type": "image/png",
            "size": 300,
            "checksum_sha256": "a" * 64,
        },
        content_type="application/json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["code"] == "checksum_not_supported"
    config = client.get("/api/v1/config/").json()
    assert config["capabilities"]["verifies_checksum"] is False


@pytest.mark.django_db
def test_expires_at_is_when_cloudinary_stops_honouring_the_signature(
    cloudinary_standin, owner
) -> None:
    """Cloudinary honours signed parameters for an hour: the instructions (and the row, which
    the cleanup and the delete follow-up go by) say so, whatever the presign expiry asks."""
    row, instructions = _create(owner, "pic.png", "image/png", 300)
    signed_at = int(instructions.fields["timestamp"])

    assert instructions.expires_at == datetime.fromtimestamp(signed_at + 3600, tz=UTC)
    assert row.expires_at == instructions.expires_at
    # One second before the hour the stand-in still takes them; after it, it refuses.
    cloudinary_standin.standin.clock = lambda: signed_at + 3599
    assert _post(instructions, png_bytes(300), "pic.png", "image/png").status_code == 200
    cloudinary_standin.standin.clock = lambda: signed_at + 3601
    stale = _post(instructions, png_bytes(300), "pic.png", "image/png")
    assert stale.status_code == 400
    assert stale.json()["error"]["message"].startswith("Stale request")


@pytest.mark.django_db(transaction=True)
def test_delete_then_repost_the_recreated_asset_is_removed_and_the_row_stays_deleted(
    cloudinary_standin, owner, broker: StubBroker, worker: dramatiq.Worker, settings: Any
) -> None:
    # A notification URL is signed into the instructions; the stand-in records each signed
    # notification it sends (nothing listens there: this test delivers it itself, below).
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"
    row, instructions = _uploaded(cloudinary_standin, owner, png_bytes(256))
    assert "notification_url" in instructions.fields
    services.request_delete(owner=owner, upload_id=row.id)
    broker.join(tasks.QUEUE, timeout=10_000)  # the delete job
    worker.join()
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED
    assert cloudinary_standin.objects == {}

    # Within the signature's hour, the same fields recreate the asset at the same public_id.
    replayed = _post(instructions, png_bytes(300), "other.png", "image/png")
    assert replayed.status_code == 200
    assert ("image", row.key) in cloudinary_standin.objects
    # Its signed upload notification, delivered to our webhook, does not bring the row back.
    note = cloudinary_standin.standin.notifications[-1]
    assert json.loads(note.body)["version"] == replayed.json()["version"]
    delivered = Client().post(
        "/api/v1/webhooks/cloudinary/",
        data=note.body,
        content_type="application/json",
        HTTP_X_CLD_TIMESTAMP=note.timestamp,
        HTTP_X_CLD_SIGNATURE=note.signature,
    )
    assert delivered.status_code == 200, delivered.content
    [result] = delivered.json()["results"]
    assert (result["result"], result["upload_id"]) == ("ignored", str(row.id))
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.DELETED

    # Not due while the signature lives: the sweep leaves the row alone.
    assert services.rechecks_due() == []
    # The hour (and the margin) passes: the row's expiry, which is the signature's, moves back.
    MediaUpload.objects.filter(pk=row.pk).update(
        expires_at=timezone.now() - timedelta(seconds=3600)
    )
    assert services.rechecks_due() == [str(row.id)]

    tasks.recheck_deleted_uploads.send()  # what the cron entry sends
    broker.join(tasks.QUEUE, timeout=10_000)  # the sweep, then the recheck job it sent
    worker.join()

    assert cloudinary_standin.objects == {}
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED
    assert "recreated_removed_at" in row.metadata and "rechecked_at" in row.metadata
    assert services.rechecks_due() == []  # checked once, not again
    assert selectors.download_url_for(row) is None


@pytest.mark.django_db
def test_recheck_of_a_deleted_row_with_nothing_recreated_changes_nothing_but_the_mark(
    cloudinary_standin, owner
) -> None:
    row, _ = _uploaded(cloudinary_standin, owner, png_bytes(256))
    services.request_delete(owner=owner, upload_id=row.id)
    services.delete_at_provider(row.id)
    admin_calls = len(cloudinary_standin.standin.admin_calls)
    MediaUpload.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(hours=1))

    checked = services.recheck_deleted(row.id)

    assert checked.status == UploadStatus.DELETED
    assert "rechecked_at" in checked.metadata and "recreated_removed_at" not in checked.metadata
    # A delivery HEAD, no Admin API call (Cloudinary rate-limits those).
    assert len(cloudinary_standin.standin.admin_calls) == admin_calls


@pytest.mark.django_db
def test_download_urls_expire(cloudinary_standin, owner) -> None:
    data = png_bytes(256)
    row, _ = _uploaded(cloudinary_standin, owner, data)

    url = selectors.download_url_for(row)
    assert url is not None
    assert "expires_at=" in url and "/download?" in url
    fresh = requests.get(url, timeout=10)
    assert (fresh.status_code, fresh.content) == (200, data)
    assert fresh.headers["Content-Type"] == "image/png"

    cloudinary_standin.standin.clock = lambda: time.time() + 301  # past expires_at (300 s)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    # The URL recorded in the row's metadata is the unsigned location: refused as well.
    assert requests.get(row.metadata["url"], timeout=10).status_code == 401


@pytest.mark.django_db
def test_raw_upload_gets_the_declared_types_extension_not_the_clients(
    cloudinary_standin, owner
) -> None:
    text = b"just some words, honestly\n"
    row, instructions = _create(owner, "page.html", "text/plain", len(text))
    assert row.key.endswith("/page.txt")
    assert instructions.fields["public_id"] == row.key
    answer = _post(instructions, text, "page.html", "text/html")
    assert answer.status_code == 200, answer.text

    confirmed = services.confirm_upload(owner=owner, upload_id=row.id, payload=answer.json())

    assert confirmed.status == UploadStatus.UPLOADED
    url = selectors.download_url_for(confirmed)
    assert url is not None
    served = requests.get(url, timeout=10)
    assert served.headers["Content-Type"].startswith("text/plain")
    assert served.content == text


@pytest.mark.django_db
def test_active_content_is_never_served_inline(cloudinary_standin) -> None:
    """A type a browser would run (HTML) gets no extension that names it, and its download URL
    asks for an attachment."""
    service = cloudinary_standin.service
    from backend.storage.cloudinary import key_extension

    assert key_extension("text/html") == ""
    ref = ObjectRef("uploads/1/abc/page", "text/html")
    instructions = service.presign_upload(ref, size=len(HTML), max_size=len(HTML), expires_in=60)
    posted = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("page.html", HTML, "text/html")},
        timeout=10,
    )
    assert posted.status_code == 200, posted.text

    served = requests.get(service.download_url(ref), timeout=10)

    assert served.status_code == 200
    assert served.headers["Content-Disposition"].startswith("attachment")
    assert not served.headers["Content-Type"].startswith("text/html")
