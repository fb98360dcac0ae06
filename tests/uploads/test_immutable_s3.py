"""Confirmed means immutable (S3, issue 11), over real HTTP: our API on a live server, the bytes
to the moto S3 server with `requests`, as a client (or an attacker holding its instructions)
would send them.

Measured on moto 5.2: it honours `If-None-Match: *` on CompleteMultipartUpload (412), ignores
POST policy conditions and `x-amz-checksum-sha256` on a POST form, and returns the right
`ChecksumSHA256` for a CopyObject with ChecksumAlgorithm=SHA256. So a wrong declared digest gets
through moto's POST, and confirm refuses it from the promoting copy's checksum (real S3 refuses
the POST itself: the policy pins the digest, see the policy test below).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from backend.storage.base import CompletedPart, MultipartRejected, ObjectRef
from backend.uploads import cleanup
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider
from tests.uploads.test_api_support import png_bytes
from tests.uploads.test_flow_http import TIMEOUT, api, object_exists, s3_client, upload_with
from tests.uploads.test_multipart_flow_http import MiB, native_upload, put_part

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["api"]  # the live-server client fixture, shared with test_flow_http


def _other_png(data: bytes) -> bytes:
    """Other bytes, same size and type (still a PNG to the sniffer)."""
    other = data[:-64] + b"\xab" * 64
    assert other != data and len(other) == len(data)
    return other


def _create(api: Any, data: bytes, **extra: Any) -> dict[str, Any]:
    created = api.post(
        "/api/v1/uploads/",
        {"filename": "cat.png", "content_type": "image/png", "size": len(data), **extra},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_replayed_form_after_confirm_changes_nothing_anyone_reads(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = png_bytes(4096)
    upload = _create(api, data)
    assert upload_with(upload["upload"], data, "image/png").status_code == 204
    confirmed = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", {}).json()
    assert confirmed["status"] == "uploaded"
    etag = confirmed["metadata"]["etag"]
    # Promoted: the final key holds the bytes, the staged copy is gone.
    staged = upload["upload"]["fields"]["key"]
    assert object_exists(moto_server, upload["key"]) and not object_exists(moto_server, staged)

    # The attacker re-posts the same form (valid for minutes more) with other bytes of the same
    # size and type: S3 (moto) accepts it, at the staging key.
    replay = upload_with(upload["upload"], _other_png(data), "image/png")
    assert replay.status_code == 204
    assert object_exists(moto_server, staged)

    detail = api.get(f"/api/v1/uploads/{upload['id']}/").json()
    assert requests.get(detail["url"], timeout=TIMEOUT).content == data
    assert detail["metadata"]["etag"] == etag
    again = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", {}).json()
    assert (again["status"], again["metadata"]["etag"]) == ("uploaded", etag)
    head = s3_client(moto_server).head_object(Bucket=MOTO_SERVER_BUCKET, Key=upload["key"])
    assert head["ETag"].strip('"') == etag
    assert MediaUpload.objects.get(pk=upload["id"]).metadata["etag"] == etag

    # The replayed bytes are swept by reconciliation once past its grace; the row's object stays.
    later = timezone.now() + timedelta(seconds=settings.UPLOAD_RECONCILE_GRACE_SECONDS + 60)
    report = cleanup.reconcile("s3", now=later)
    assert report.providers["s3"].deleted >= 1  # the bucket may hold other tests' leftovers
    assert not object_exists(moto_server, staged)
    assert requests.get(detail["url"], timeout=TIMEOUT).content == data


def test_replayed_multipart_complete_changes_nothing(api, s3_server_storage, moto_server) -> None:
    use_provider("s3")
    data = png_bytes(12 * MiB)
    upload = native_upload(api, data)
    complete = f"/api/v1/uploads/{upload['id']}/multipart/complete/"
    done = api.post(complete, {"parts": upload["parts"]})
    assert done.status_code == 200, done.text
    etag = done.json()["metadata"]["etag"]

    # Replaying the complete through our API: the same row, nothing sent to S3.
    replay = api.post(complete, {"parts": upload["parts"]})
    assert replay.status_code == 200, replay.text
    assert replay.json()["metadata"]["etag"] == etag
    # The part URLs the client still holds are dead: their upload is complete.
    signed_part = requests.put(
        s3_client(moto_server).generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": MOTO_SERVER_BUCKET,
                "Key": upload["key"],
                "UploadId": upload["upload_id"],
                "PartNumber": 1,
            },
            HttpMethod="PUT",
        ),
        data=b"x" * 100,
        timeout=TIMEOUT,
    )
    # Real S3 answers 404 NoSuchUpload; moto 5.2 a 500 (KeyError on the finished upload).
    assert signed_part.status_code in (404, 500)

    # Worst case: another multipart upload at the same key, completed with our credentials (a
    # stale create racing, an operator's script). CompleteMultipartUpload carries
    # If-None-Match: *, so S3 refuses it (412) and the confirmed object stays.
    ref = ObjectRef(upload["key"], "image/png")
    second = s3_server_storage.create_multipart_upload(ref)
    part_url = s3_server_storage.presign_upload_part(
        ref, second.upload_id, 1, expires_in=60, content_length=None
    ).url
    other_etag = put_part(part_url, _other_png(data[: 6 * MiB]))
    with pytest.raises(MultipartRejected) as refused:
        s3_server_storage.complete_multipart_upload(
            ref, second.upload_id, [CompletedPart(1, other_etag)]
        )
    assert refused.value.code == "PreconditionFailed"
    s3_server_storage.abort_multipart_upload(ref, second.upload_id)

    detail = api.get(f"/api/v1/uploads/{upload['id']}/").json()
    assert detail["metadata"]["etag"] == etag
    fetched = requests.get(detail["url"], timeout=TIMEOUT)
    assert fetched.status_code == 200 and fetched.content == data


def test_declared_checksum_not_matching_the_bytes_fails_the_row(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = png_bytes(2048)
    upload = _create(api, data, checksum_sha256=hashlib.sha256(data).hexdigest())
    # moto ignores the form's x-amz-checksum-sha256 (real S3 answers 400 BadDigest).
    assert upload_with(upload["upload"], _other_png(data), "image/png").status_code == 204

    response = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", {})

    assert response.status_code == 422, response.text
    assert (
        "stored SHA-256 differs from the declared checksum_sha256"
        in (response.json()["error"]["details"]["reasons"])
    )
    row = MediaUpload.objects.get(pk=upload["id"])
    assert row.status == UploadStatus.FAILED
    assert not object_exists(moto_server, upload["key"])
    assert not object_exists(moto_server, upload["upload"]["fields"]["key"])


def test_declared_checksum_matching_the_bytes_is_recorded(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = png_bytes(2048)
    digest = hashlib.sha256(data).hexdigest()
    upload = _create(api, data, checksum_sha256=digest)
    assert upload_with(upload["upload"], data, "image/png").status_code == 204

    confirmed = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", {})

    assert confirmed.status_code == 200, confirmed.text
    # S3 computed it over the promoted copy: a provider fact, not the client's claim.
    assert confirmed.json()["metadata"]["checksum_sha256"] == digest


def test_signed_policy_names_the_staging_key_and_the_checksum(api, s3_server_storage) -> None:
    use_provider("s3")
    data = png_bytes(100)
    upload = _create(api, data, checksum_sha256=hashlib.sha256(data).hexdigest())
    fields = upload["upload"]["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = [c for c in policy["conditions"] if isinstance(c, dict)]

    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    staged = s3_server_storage.staged_key(upload["key"])
    assert staged != upload["key"] and "/_staging/" in staged
    assert {"key": staged} in conditions and fields["key"] == staged
    assert {"x-amz-checksum-algorithm": "SHA256"} in conditions
    assert {"x-amz-checksum-sha256": digest} in conditions
    assert fields["x-amz-checksum-sha256"] == digest
    assert ["content-length-range", 1, len(data)] in policy["conditions"]


def test_multipart_with_a_declared_checksum_is_refused_at_create(api, s3_server_storage) -> None:
    use_provider("s3")
    response = api.post(
        "/api/v1/uploads/multipart/",
        {
            "filename": "big.png",
            "content_type": "image/png",
            "size": 12 * MiB,
            "checksum_sha256": "0" * 64,
        },
    )
    assert response.status_code == 400, response.text
    assert "checksum_sha256" in response.text
    assert not MediaUpload.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [("image/png", None), ("text/html", "attachment"), ("image/svg+xml", "attachment")],
)
def test_download_answers_with_the_row_type_and_attachment_for_active_types(
    s3_server_storage, moto_server, content_type, disposition
) -> None:
    ref = ObjectRef(f"uploads/5/dl/{content_type.replace('/', '-')}", content_type)
    # Stored with a misleading type: the answer's type comes from the verified row.
    s3_client(moto_server).put_object(
        Bucket=MOTO_SERVER_BUCKET, Key=ref.key, Body=b"<x/>", ContentType="text/html"
    )

    answer = requests.get(s3_server_storage.download_url(ref), timeout=TIMEOUT)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == content_type
    if disposition:
        assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    else:
        assert "Content-Disposition" not in answer.headers
