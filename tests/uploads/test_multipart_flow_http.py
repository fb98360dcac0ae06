"""Multipart uploads over real HTTP: our API on a live server, the parts PUT with `requests` to
the presigned URLs of the moto S3 server, ETags read from the PUT answers.

moto enforces S3's 5 MiB minimum for every part but the last at complete time. Its environment
switch (S3_UPLOAD_PART_MIN_SIZE) is read once when moto is imported, and the session's moto server
runs in this process, so it cannot be lowered per test: these tests send real 5 MiB parts
(12 MiB files: 5 + 5 + 2 MiB).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from backend.uploads import cleanup
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider
from tests.uploads.test_api_support import HTML, png_bytes
from tests.uploads.test_flow_http import TIMEOUT, Api, api, object_exists, s3_client

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["api"]  # the live-server client fixture, shared with test_flow_http

MiB = 1024 * 1024


def put_part(url: str, chunk: bytes, headers: dict[str, str] | None = None) -> str:
    """What @uppy/aws-s3 or an app does with one signed part: PUT the bytes, keep the ETag."""
    response = requests.put(url, data=chunk, headers=headers or {}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


def pending_multipart_uploads(endpoint: str, key: str) -> list[dict[str, Any]]:
    listed = s3_client(endpoint).list_multipart_uploads(Bucket=MOTO_SERVER_BUCKET, Prefix=key)
    return list(listed.get("Uploads", []))


def native_upload(api: Api, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
    """Create, sign every part, PUT them; returns the create answer plus the parts."""
    created = api.post(
        "/api/v1/uploads/multipart/",
        {"filename": "big.png", "content_type": content_type, "size": len(data)},
    )
    assert created.status_code == 201, created.text
    upload = created.json()
    numbers = list(range(1, upload["part_count"] + 1))
    signed = api.post(f"/api/v1/uploads/{upload['id']}/multipart/parts/", {"part_numbers": numbers})
    assert signed.status_code == 200, signed.text
    size = upload["part_size"]
    upload["parts"] = [
        {
            "part_number": part["part_number"],
            "etag": put_part(
                part["url"],
                data[(part["part_number"] - 1) * size : part["part_number"] * size],
                part["headers"],
            ),
        }
        for part in signed.json()["parts"]
    ]
    return upload


def test_whole_multipart_flow(api, s3_server_storage, moto_server) -> None:
    use_provider("s3")
    data = png_bytes(12 * MiB)

    upload = native_upload(api, data)
    assert (upload["part_size"], upload["part_count"]) == (5 * MiB, 3)
    assert pending_multipart_uploads(moto_server, upload["key"])

    listed = api.get(f"/api/v1/uploads/{upload['id']}/multipart/parts/").json()["parts"]
    assert [(p["part_number"], p["size"]) for p in listed] == [
        (1, 5 * MiB),
        (2, 5 * MiB),
        (3, 2 * MiB),
    ]

    done = api.post(
        f"/api/v1/uploads/{upload['id']}/multipart/complete/", {"parts": upload["parts"]}
    )

    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "uploaded"
    assert body["metadata"]["bytes"] == len(data)
    assert body["metadata"]["content_type"] == "image/png"
    assert MediaUpload.objects.get(pk=upload["id"]).status == UploadStatus.UPLOADED
    fetched = requests.get(body["url"], timeout=TIMEOUT)
    assert fetched.status_code == 200 and fetched.content == data
    assert pending_multipart_uploads(moto_server, upload["key"]) == []


def test_uppy_shaped_flow(api, s3_server_storage, moto_server) -> None:
    """The requests @uppy/aws-s3 makes with `endpoint`/`companionUrl` = our /api/v1."""
    use_provider("s3")
    data = png_bytes(12 * MiB)
    created = api.post(
        "/api/v1/s3/multipart",
        {"filename": "clip.png", "type": "image/png", "metadata": {"size": len(data), "x": 1}},
    )
    assert created.status_code == 200, created.text
    key, upload_id = created.json()["key"], created.json()["uploadId"]
    query = f"?key={requests.utils.quote(key, safe='')}"
    base = f"/api/v1/s3/multipart/{requests.utils.quote(upload_id, safe='')}"

    parts = []
    for number in (1, 2, 3):
        signed = api.get(f"{base}/{number}{query}")
        assert signed.status_code == 200, signed.text
        chunk = data[(number - 1) * 5 * MiB : number * 5 * MiB]
        parts.append({"PartNumber": number, "ETag": put_part(signed.json()["url"], chunk)})

    listed = api.get(f"{base}{query}")
    assert listed.status_code == 200
    assert [(p["PartNumber"], p["ETag"]) for p in listed.json()] == [
        (p["PartNumber"], p["ETag"]) for p in parts
    ]

    done = api.post(f"{base}/complete{query}", {"parts": parts})
    assert done.status_code == 200, done.text
    assert done.json()["key"] == key
    assert done.json()["location"].endswith(f"/api/v1/uploads/{done.json()['id']}/")
    row = MediaUpload.objects.get(pk=done.json()["id"])
    assert row.status == UploadStatus.UPLOADED and row.stored_size == len(data)


def test_wrong_etag_is_a_clear_400_and_the_row_stays_pending(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = png_bytes(12 * MiB)
    upload = native_upload(api, data)
    wrong = [dict(p) for p in upload["parts"]]
    wrong[1]["etag"] = '"' + "0" * 32 + '"'

    response = api.post(f"/api/v1/uploads/{upload['id']}/multipart/complete/", {"parts": wrong})

    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["code"] == "invalid_part"
    assert err["details"]["provider_code"] == "InvalidPart"
    assert "ETag" in err["message"]
    assert MediaUpload.objects.get(pk=upload["id"]).status == UploadStatus.PENDING
    ok = api.post(f"/api/v1/uploads/{upload['id']}/multipart/complete/", {"parts": upload["parts"]})
    assert ok.status_code == 200, ok.text


def test_html_assembled_under_a_png_declaration_is_failed_and_deleted(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = HTML + b" " * (12 * MiB - len(HTML))
    upload = native_upload(api, data)

    response = api.post(
        f"/api/v1/uploads/{upload['id']}/multipart/complete/", {"parts": upload["parts"]}
    )

    assert response.status_code == 422, response.text
    assert "first bytes are not PNG" in response.json()["error"]["message"]
    assert MediaUpload.objects.get(pk=upload["id"]).status == UploadStatus.FAILED
    assert not object_exists(moto_server, upload["key"])


def test_abort_frees_the_parts(api, s3_server_storage, moto_server) -> None:
    use_provider("s3")
    upload = native_upload(api, png_bytes(6 * MiB))
    assert pending_multipart_uploads(moto_server, upload["key"])

    response = api.session.delete(
        f"{api.base}/api/v1/uploads/{upload['id']}/multipart/", timeout=TIMEOUT
    )

    assert response.status_code == 204, response.text
    assert pending_multipart_uploads(moto_server, upload["key"]) == []
    row = MediaUpload.objects.get(pk=upload["id"])
    assert row.status == UploadStatus.DELETED
    assert row.metadata["deleted_reason"] == "aborted by client"


def test_someone_elses_multipart_upload_is_404(
    api, s3_server_storage, moto_server, live_server, django_user_model
) -> None:
    from rest_framework.authtoken.models import Token

    use_provider("s3")
    upload = native_upload(api, png_bytes(6 * MiB))
    intruder = django_user_model.objects.create_user("intruder", password="pw-intruder-1")
    other = Api(live_server.url, Token.objects.create(user=intruder).key)
    base = f"/api/v1/s3/multipart/{upload['upload_id']}"
    for response in (
        other.post(f"/api/v1/uploads/{upload['id']}/multipart/parts/", {"part_numbers": [1]}),
        other.get(f"{base}/1?key={upload['key']}"),
        other.post(
            f"{base}/complete?key={upload['key']}", {"parts": [{"PartNumber": 1, "ETag": "e"}]}
        ),
    ):
        assert response.status_code == 404, response.text
    assert pending_multipart_uploads(moto_server, upload["key"])


def test_cleanup_of_an_orphan_multipart_row_aborts_it(api, s3_server_storage, moto_server) -> None:
    use_provider("s3")
    upload = native_upload(api, png_bytes(6 * MiB))
    MediaUpload.objects.filter(pk=upload["id"]).update(
        expires_at=timezone.now() - timedelta(days=3)
    )

    report = cleanup.expire_orphans()

    assert report.multipart_aborted == 1
    assert pending_multipart_uploads(moto_server, upload["key"]) == []
    assert MediaUpload.objects.get(pk=upload["id"]).status == UploadStatus.EXPIRED
