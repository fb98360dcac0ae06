"""A verified upload replaced after confirm, with the same still-valid upload instructions.

S3: a presigned POST can be reused until it expires (and moto, like S3 for an in-policy POST,
accepts it), but it names the staging key: confirm copied the object to the final key, which no
issued credential can write, so the replay changes nothing anyone reads. A write to the final key
by other means (our own credentials) carries another ETag in its S3 event: the object is checked
again like a confirm, and the row fails (object deleted) when it no longer matches. Cloudinary:
the signed parameters carry `overwrite=false`, so Cloudinary (here its stand-in) answers a second
upload with the existing asset, unchanged.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from django.test import Client, override_settings

from backend.storage.factory import CloudStorageFactory
from backend.uploads import selectors, services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import MOTO_SERVER_BUCKET, S3_TEST_BUCKET, use_provider
from tests.storage.test_contract import PNG
from tests.uploads.webhooks.conftest import S3_WEBHOOK
from tests.uploads.webhooks.sns_signing import SnsSigner, s3_event

# Same length as PNG (the POST policy pins the size), but markup: what the probe sent.
HTML = b"<html><script>alert(document.cookie)</script></html>".ljust(len(PNG), b" ")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'.ljust(len(PNG), b" ")
TEXT = b"first version of the notes\n"
OTHER_TEXT = b"second version, same length"
assert len(HTML) == len(SVG) == len(PNG) and len(TEXT) == len(OTHER_TEXT)


def _post_event(client: Client, signer: SnsSigner, key: str, bucket: str, **kwargs: Any) -> Any:
    message = signer.notification(s3_event(key, bucket=bucket, **kwargs))
    return client.post(
        S3_WEBHOOK,
        data=json.dumps(message),
        content_type="text/plain; charset=UTF-8",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification",
    )


def _head(service: Any, bucket: str, key: str) -> tuple[str, int]:
    head = service.client.head_object(Bucket=bucket, Key=key)
    return str(head["ETag"]).strip('"'), int(head["ContentLength"])


# --- S3, through a real presigned POST (moto server) ----------------------------------------------


@pytest.fixture
def s3_http(s3_server_storage: Any, db: None) -> Any:
    use_provider("s3")
    return s3_server_storage


def _form_post(instructions: Any, data: bytes, filename: str, content_type: str) -> Any:
    return requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": (filename, data, content_type)},
        timeout=10,
    )


def test_s3_reused_presigned_post_after_confirm_lands_in_staging(
    s3_http: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row, instructions = services.create_upload(
        owner=user, filename="cat.png", content_type="image/png", size=len(PNG)
    )
    assert _form_post(instructions, PNG, "cat.png", "image/png").status_code == 204
    confirmed = services.confirm_upload(owner=user, upload_id=row.id, payload={})
    assert confirmed.status == UploadStatus.UPLOADED

    # The same fields again, with markup of the same length: S3 accepts it (policy satisfied),
    # but the form names the staging key, which nothing reads after confirm.
    assert _form_post(instructions, HTML, "cat.png", "image/png").status_code == 204
    staged = s3_http.staged_key(row.key)
    staged_etag, staged_size = _head(s3_http, MOTO_SERVER_BUCKET, staged)
    url = selectors.download_url_for(confirmed)
    assert url and requests.get(url, timeout=10).content == PNG
    assert _head(s3_http, MOTO_SERVER_BUCKET, row.key)[0] == confirmed.metadata["etag"]

    # S3's event for that write names the staging key: the row's object is checked again and
    # is unchanged, so the row stays as confirmed.
    response = _post_event(
        webhook_client,
        signer,
        staged,
        MOTO_SERVER_BUCKET,
        etag=staged_etag,
        size=staged_size,
        sequencer="0B",
    )

    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["result"] == "finalised"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED
    assert row.metadata["etag"] == confirmed.metadata["etag"]
    assert requests.get(selectors.download_url_for(row) or "", timeout=10).content == PNG


# --- S3 events against in-process moto ------------------------------------------------------------


@pytest.fixture
def s3(s3_storage: Any, db: None) -> Any:
    use_provider("s3")
    return s3_storage


def _confirmed_text_upload(s3: Any, user: Any) -> MediaUpload:
    row, _ = services.create_upload(
        owner=user, filename="notes.txt", content_type="text/plain", size=len(TEXT)
    )
    s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=row.key, Body=TEXT, ContentType="text/plain")
    return services.confirm_upload(owner=user, upload_id=row.id, payload={})


def _replace(s3: Any, row: MediaUpload, body: bytes, content_type: str) -> tuple[str, int]:
    s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=row.key, Body=body, ContentType=content_type)
    return _head(s3, S3_TEST_BUCKET, row.key)


def test_s3_replacement_that_still_matches_updates_the_metadata(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _confirmed_text_upload(s3, user)
    first_etag = row.metadata["etag"]
    etag, size = _replace(s3, row, OTHER_TEXT, "text/plain")

    response = _post_event(
        webhook_client, signer, row.key, S3_TEST_BUCKET, etag=etag, size=size, sequencer="0C"
    )

    assert response.status_code == 200
    assert response.json()["results"][0]["result"] == "finalised"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED
    assert row.metadata["etag"] == etag != first_etag
    assert row.metadata["bytes"] == row.stored_size == len(OTHER_TEXT)
    assert "reverified_at" in row.metadata
    assert row.event_sequencer == "0C"


def test_s3_event_for_the_confirmed_object_changes_nothing(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _confirmed_text_upload(s3, user)
    before = (row.status, row.updated_at, row.metadata, row.event_sequencer)
    etag, size = _head(s3, S3_TEST_BUCKET, row.key)

    response = _post_event(
        webhook_client, signer, row.key, S3_TEST_BUCKET, etag=f'"{etag.upper()}"', size=size
    )

    assert response.json()["results"][0]["result"] == "finalised"
    row.refresh_from_db()
    assert (row.status, row.updated_at, row.metadata, row.event_sequencer) == before


def test_s3_older_write_arriving_late_is_ignored(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    """Two writes after confirm: markup (sequencer 0B), then good text (0C). S3 delivers the
    0C event first; the late 0B event describes an object that is no longer there."""
    row = _confirmed_text_upload(s3, user)
    markup = b"<html>replaced</html>".ljust(len(TEXT), b" ")
    bad_etag, bad_size = _replace(s3, row, markup, "text/plain")
    good_etag, good_size = _replace(s3, row, OTHER_TEXT, "text/plain")

    newer = _post_event(
        webhook_client, signer, row.key, S3_TEST_BUCKET, etag=good_etag, size=good_size,
        sequencer="0C",
    )  # fmt: skip
    late = _post_event(
        webhook_client, signer, row.key, S3_TEST_BUCKET, etag=bad_etag, size=bad_size,
        sequencer="0B",
    )  # fmt: skip

    assert newer.json()["results"][0]["result"] == "finalised"
    assert late.json()["results"][0]["result"] == "ignored"
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED
    assert row.metadata["etag"] == good_etag
    assert row.event_sequencer == "0C"


def test_s3_replacement_checked_while_s3_is_down_is_retried(
    s3: Any, user: Any, signer: SnsSigner, webhook_client: Client
) -> None:
    row = _confirmed_text_upload(s3, user)
    etag, size = _replace(s3, row, b"<html>x</html>", "text/plain")  # another size
    message = signer.notification(
        s3_event(row.key, bucket=S3_TEST_BUCKET, etag=etag, size=size, sequencer="0B")
    )

    def deliver() -> Any:
        return webhook_client.post(S3_WEBHOOK, data=json.dumps(message), content_type="text/plain")

    with override_settings(AWS_S3_ENDPOINT_URL="http://127.0.0.1:9"):  # nothing listens
        CloudStorageFactory.reset()
        down = deliver()
    CloudStorageFactory.reset()
    assert down.status_code == 503 and down.has_header("Retry-After")
    row.refresh_from_db()
    assert row.status == UploadStatus.UPLOADED and row.event_sequencer == ""

    again = deliver()  # SNS redelivers the same message

    assert again.json()["results"][0]["result"] == "failed"
    row.refresh_from_db()
    assert row.status == UploadStatus.FAILED


def test_reverify_leaves_rows_that_are_not_uploaded_alone(s3: Any, user: Any) -> None:
    row, _ = services.create_upload(
        owner=user, filename="notes.txt", content_type="text/plain", size=len(TEXT)
    )
    s3.client.put_object(Bucket=S3_TEST_BUCKET, Key=row.key, Body=b"x", ContentType="text/plain")
    assert services.reverify_uploaded(row.id, sequencer="0A").status == UploadStatus.PENDING
    services.request_delete(owner=user, upload_id=row.id)
    assert services.reverify_uploaded(row.id).status == UploadStatus.DELETING
    row.refresh_from_db()
    assert row.event_sequencer == ""


# --- Cloudinary: overwrite=false ------------------------------------------------------------------


def test_cloudinary_reused_params_after_confirm_do_not_replace_the_asset(
    cloudinary_standin: Any, user: Any, db: None
) -> None:
    use_provider("cloudinary")
    row, instructions = services.create_upload(
        owner=user, filename="cat.png", content_type="image/png", size=len(PNG)
    )
    first = _form_post(instructions, PNG, "cat.png", "image/png")
    assert first.status_code == 200, first.text
    confirmed = services.confirm_upload(owner=user, upload_id=row.id, payload=first.json())
    assert confirmed.status == UploadStatus.UPLOADED

    # The same signed fields, still inside Cloudinary's one-hour window, with an SVG (which
    # Cloudinary accepts as an image) of the same length.
    again = _form_post(instructions, SVG, "cat.svg", "image/svg+xml")

    assert again.status_code == 200, again.text
    assert again.json()["existing"] is True
    assert again.json()["version"] == first.json()["version"]
    [asset] = cloudinary_standin.objects.values()
    assert asset.data == PNG
    url = selectors.download_url_for(confirmed)
    assert url and requests.get(url, timeout=10).content == PNG
    assert time.time() < confirmed.expires_at.timestamp()  # the instructions were still valid
