"""The upload service against the real provider services: S3 on moto (in-process) and
Cloudinary on the local stand-in. What the fake cannot show: the SDKs' answers mapped into
metadata, deletes reaching the provider, provider errors becoming 503."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from backend.core.errors import ProviderUnavailable
from backend.uploads import selectors, services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import S3_TEST_BUCKET, use_provider
from tests.uploads.test_api_support import HTML, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("prov-owner", password="x")


def s3_put(s3: Any, row: MediaUpload, data: bytes, content_type: str | None = None) -> None:
    """What the client's POST form does: write the staging key (confirm promotes it)."""
    s3.client.put_object(
        Bucket=S3_TEST_BUCKET,
        Key=s3.staged_key(row.key),
        Body=data,
        ContentType=content_type or row.content_type,
    )


def s3_has(s3: Any, key: str) -> bool:
    try:
        s3.client.head_object(Bucket=S3_TEST_BUCKET, Key=key)
    except ClientError:
        return False
    return True


def test_s3_confirm_records_head_object_facts(s3_storage, owner) -> None:
    use_provider("s3")
    row, instructions = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=300
    )
    # The form writes the staging key; confirm promotes it to the row's key.
    assert instructions.fields["key"] == s3_storage.staged_key(row.key) != row.key
    s3_put(s3_storage, row, png_bytes(300))

    row = services.confirm_upload(owner=owner, upload_id=row.id, payload={})

    assert row.status == UploadStatus.UPLOADED
    meta = row.metadata
    assert meta["provider"] == "s3"
    assert meta["bytes"] == 300
    assert meta["content_type"] == "image/png"
    assert meta["etag"].strip('"')
    assert row.key in meta["url"]
    url = selectors.download_url_for(row)
    assert url is not None
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url


def test_s3_mismatch_deletes_the_object(s3_storage, owner) -> None:
    use_provider("s3")
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=len(HTML)
    )
    s3_put(s3_storage, row, HTML)
    with pytest.raises(services.VerificationFailed):
        services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    assert not s3_has(s3_storage, row.key)
    assert not s3_has(s3_storage, s3_storage.staged_key(row.key))
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.FAILED


def test_s3_delete_at_provider(s3_storage, owner) -> None:
    use_provider("s3")
    row, _ = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=100
    )
    s3_put(s3_storage, row, png_bytes(100))
    services.confirm_upload(owner=owner, upload_id=row.id, payload={})
    services.request_delete(owner=owner, upload_id=row.id)
    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED
    assert not s3_has(s3_storage, row.key)


def _cloudinary_upload(handle: Any, owner: Any, data: bytes) -> tuple[MediaUpload, dict]:
    use_provider("cloudinary")
    row, instructions = services.create_upload(
        owner=owner, filename="pic.png", content_type="image/png", size=len(data)
    )
    response = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("pic.png", data, "image/png")},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return row, response.json()


def test_cloudinary_webhook_finalise_needs_no_client_signature(cloudinary_standin, owner) -> None:
    row, provider_response = _cloudinary_upload(cloudinary_standin, owner, png_bytes(256))
    notification = {
        "notification_type": "upload",
        "public_id": row.key,
        "version": provider_response["version"],
    }
    result = services.finalise_upload(row.id, payload=notification, source="cloudinary_webhook")
    assert result.status == UploadStatus.UPLOADED
    assert result.metadata["version"] == str(provider_response["version"])
    assert result.metadata["bytes"] == 256
    # ... while a client must bring the signed response.
    other, _ = _cloudinary_upload(cloudinary_standin, owner, png_bytes(256))
    with pytest.raises(services.VerificationFailed):
        services.confirm_upload(owner=owner, upload_id=other.id, payload=notification)


def test_cloudinary_outage_during_confirm_keeps_row_pending(cloudinary_standin, owner) -> None:
    row, provider_response = _cloudinary_upload(cloudinary_standin, owner, png_bytes(256))
    cloudinary_standin.standin.fail_with = 500
    with pytest.raises(ProviderUnavailable):
        services.confirm_upload(owner=owner, upload_id=row.id, payload=provider_response)
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.PENDING
    cloudinary_standin.standin.fail_with = None
    confirmed = services.confirm_upload(owner=owner, upload_id=row.id, payload=provider_response)
    assert confirmed.status == UploadStatus.UPLOADED


def test_cloudinary_delete_at_provider(cloudinary_standin, owner) -> None:
    row, provider_response = _cloudinary_upload(cloudinary_standin, owner, png_bytes(256))
    services.confirm_upload(owner=owner, upload_id=row.id, payload=provider_response)
    assert ("image", row.key) in cloudinary_standin.objects
    services.request_delete(owner=owner, upload_id=row.id)
    assert services.delete_at_provider(row.id).status == UploadStatus.DELETED
    assert ("image", row.key) not in cloudinary_standin.objects


def test_s3_policy_pins_key_type_and_declared_size(s3_storage, owner) -> None:
    """moto enforces no policy, so the policy we hand out is checked by decoding it."""
    import base64
    import json

    use_provider("s3")
    row, instructions = services.create_upload(
        owner=owner, filename="a.png", content_type="image/png", size=1234
    )
    policy = json.loads(base64.b64decode(instructions.fields["policy"]))
    conditions = policy["conditions"]
    assert {"key": s3_storage.staged_key(row.key)} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 1234] in conditions
    assert not any("acl" in c for c in conditions if isinstance(c, dict))
