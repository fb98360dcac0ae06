"""Multipart endpoints against S3Service: part URLs bound to each part's length, provider error
text kept out of API answers (in-process moto), and an abort racing a complete (moto server:
in-process moto cannot complete an aborted upload the way S3 refuses it)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError
from rest_framework.test import APIClient

from backend.core.errors import Gone
from backend.storage.base import CompletedPart
from backend.uploads import jobs, services
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.services import multipart
from tests.fixtures.providers import S3_SETTINGS, use_provider
from tests.storage.test_multipart_storage import _sigv4_query_signature
from tests.uploads.test_api_support import png_bytes
from tests.uploads.test_multipart_api import client_for

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
ARN_MESSAGE = (
    "User: arn:aws:iam::123456789012:user/broker is not authorized to perform: "
    "s3:PutObject on resource: arn:aws:s3:::secret-bucket/uploads/x"
)


@pytest.fixture
def client(django_user_model: Any) -> APIClient:
    return client_for(django_user_model.objects.create_user("mp-s3", password="pw-mp-s3-1"))


def test_part_urls_sign_each_parts_exact_length(client, s3_storage) -> None:
    use_provider("s3")
    created = client.post(
        "/api/v1/uploads/multipart/",
        {"filename": "big.png", "content_type": "image/png", "size": 12 * MiB},
        format="json",
    ).json()
    signed = client.post(
        f"/api/v1/uploads/{created['id']}/multipart/parts/",
        {"part_numbers": [1, 2, 3]},
        format="json",
    )
    assert signed.status_code == 200, signed.content
    secret = S3_SETTINGS["AWS_SECRET_ACCESS_KEY"]
    for part, length in zip(signed.json()["parts"], (5 * MiB, 5 * MiB, 2 * MiB), strict=True):
        query = parse_qs(urlsplit(part["url"]).query)
        assert query["X-Amz-SignedHeaders"] == ["content-length;host"]
        assert part["headers"] == {}
        signature = query["X-Amz-Signature"][0]
        assert _sigv4_query_signature(part["url"], {"Content-Length": str(length)}, secret) == (
            signature
        )
        # 5 GiB into a part URL (the most S3 takes per part) does not verify.
        huge = str(5 * 1024 * MiB)
        assert _sigv4_query_signature(part["url"], {"Content-Length": huge}, secret) != signature


def test_s3_error_text_stays_in_the_server_log(client, s3_storage, monkeypatch, caplog) -> None:
    use_provider("s3")

    def denied(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": ARN_MESSAGE}}, "CreateMultipartUpload"
        )

    monkeypatch.setattr(s3_storage.client, "create_multipart_upload", denied)
    body = {"filename": "a.png", "content_type": "image/png", "size": 6 * MiB}
    with caplog.at_level(logging.WARNING):
        native = client.post("/api/v1/uploads/multipart/", body, format="json")
        uppy = client.post(
            "/api/v1/s3/multipart",
            {"filename": "a.png", "type": "image/png", "metadata": {"size": 6 * MiB}},
            format="json",
        )

    operation = "create_multipart_upload (CreateMultipartUpload)"
    for response in (native, uppy):
        assert response.status_code == 503
        assert response["Retry-After"]
        text = response.content.decode()
        for leak in ("arn:", "123456789012", "secret-bucket", "not authorized", "broker"):
            assert leak not in text
        err = response.json()["error"]
        assert err["code"] == "provider_unavailable"
        assert err["message"] == f"S3 {operation} is unavailable; retry later."
        assert err["details"] == {"provider": "s3", "operation": operation, "code": "AccessDenied"}
    assert uppy.json()["message"] == uppy.json()["error"]["message"]
    # The operator still sees what S3 said.
    assert any(ARN_MESSAGE in record.getMessage() for record in caplog.records)
    assert MediaUpload.objects.count() == 0


def test_abort_after_s3_completed_deletes_the_assembled_object(
    django_user_model, s3_server_storage
) -> None:
    """Request A's CompleteMultipartUpload reached S3; request B's abort then gets NoSuchUpload
    and wins the row. The assembled object must not outlive the `deleted` row."""
    use_provider("s3")
    owner = django_user_model.objects.create_user("mp-race", password="pw-mp-race-1")
    data = png_bytes(3 * MiB)
    row = multipart.create_multipart_upload(
        owner=owner, filename="big.png", content_type="image/png", size=len(data)
    )
    (signed,) = multipart.sign_parts(row, [1])
    put = requests.put(signed.url, data=data, timeout=10)
    assert put.status_code == 200, put.text
    parts = [CompletedPart(1, put.headers["ETag"])]
    ref = row.object_ref()
    s3_server_storage.complete_multipart_upload(ref, row.multipart_upload_id, parts)  # A at S3
    assert s3_server_storage.inspect(ref).exists

    aborted = multipart.abort_multipart_upload(MediaUpload.objects.get(pk=row.pk))  # B

    assert aborted.status == UploadStatus.DELETED
    assert aborted.metadata["deleted_reason"] == "aborted by client"
    assert not s3_server_storage.inspect(ref).exists
    with pytest.raises(Gone):  # A goes on: its finalise finds the row deleted
        services.finalise_upload(row.pk, source="client")
    assert MediaUpload.objects.get(pk=row.pk).status == UploadStatus.DELETED


def test_abort_race_with_the_provider_down_hands_the_delete_to_the_job(
    memory_storage, django_user_model, monkeypatch
) -> None:
    from backend.storage.base import ObjectRef

    owner = django_user_model.objects.create_user("mp-race2", password="pw-mp-race-2")
    row = multipart.create_multipart_upload(
        owner=owner, filename="big.png", content_type="image/png", size=100
    )
    memory_storage.put(ObjectRef(row.key, row.content_type), png_bytes(100))  # assembled
    monkeypatch.setattr(memory_storage, "delete_many", _down)
    sent: list[Any] = []
    monkeypatch.setattr(jobs, "enqueue_delete", sent.append)

    aborted = multipart.abort_multipart_upload(row)

    assert aborted.status == UploadStatus.DELETING
    assert sent == [row.pk]


def _down(*args: Any, **kwargs: Any) -> Any:
    from backend.core.errors import ProviderUnavailable

    raise ProviderUnavailable("S3 delete_many (DeleteObjects) is unavailable; retry later.")
