"""Multipart endpoints (ours and the Uppy Companion shape) over DRF's APIClient, on the fake."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.storage.base import PartInstructions
from backend.uploads.models import MediaUpload, UploadStatus
from tests.uploads.test_api_support import error_of, png_bytes

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
CREATE = "/api/v1/uploads/multipart/"
UPPY = "/api/v1/s3/multipart"


def client_for(user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


@pytest.fixture
def client(django_user_model: Any) -> APIClient:
    return client_for(django_user_model.objects.create_user("mp-api", password="pw-mp-api-1"))


@pytest.fixture
def other(django_user_model: Any) -> APIClient:
    return client_for(django_user_model.objects.create_user("mp-other", password="pw-mp-oth-1"))


def uppy_error_of(response: Any) -> dict[str, Any]:
    """An /api/v1/s3/* error: this API's `error` object plus a top-level `message` for Uppy."""
    body = response.json()
    assert set(body) == {"message", "error"}, body
    assert body["message"] == body["error"]["message"] and body["message"]
    assert set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


def create(client: APIClient, size: int = 12 * MiB) -> dict[str, Any]:
    response = client.post(
        CREATE, {"filename": "big.png", "content_type": "image/png", "size": size}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def put_parts(client: APIClient, fake: Any, created: dict[str, Any], data: bytes) -> list[dict]:
    numbers = list(range(1, created["part_count"] + 1))
    signed = client.post(
        f"/api/v1/uploads/{created['id']}/multipart/parts/",
        {"part_numbers": numbers},
        format="json",
    )
    assert signed.status_code == 200, signed.content
    size = created["part_size"]
    parts = []
    for part in signed.json()["parts"]:
        n = part["part_number"]
        instructions = PartInstructions(
            n, part["method"], part["url"], part["headers"], parse_datetime(part["expires_at"])
        )
        etag = fake.accept_part(instructions, data[(n - 1) * size : n * size])
        parts.append({"part_number": n, "etag": etag})
    return parts


def test_anonymous_is_refused(memory_storage) -> None:
    anon = APIClient()
    some = uuid.uuid4()
    for method, url in [
        ("post", CREATE),
        ("post", f"/api/v1/uploads/{some}/multipart/parts/"),
        ("get", f"/api/v1/uploads/{some}/multipart/parts/"),
        ("post", f"/api/v1/uploads/{some}/multipart/complete/"),
        ("delete", f"/api/v1/uploads/{some}/multipart/"),
        ("post", UPPY),
        ("get", f"{UPPY}/abc/1?key=k"),
        ("get", f"{UPPY}/abc?key=k"),
        ("post", f"{UPPY}/abc/complete?key=k"),
        ("delete", f"{UPPY}/abc?key=k"),
    ]:
        response = getattr(anon, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        err = uppy_error_of(response) if url.startswith(UPPY) else error_of(response)
        assert err["code"] == "not_authenticated"


def test_native_flow(client, memory_storage) -> None:
    data = png_bytes(12 * MiB)
    created = create(client, len(data))
    assert set(created) == {
        "id",
        "protocol",
        "key",
        "upload_id",
        "part_size",
        "part_count",
        "expires_at",
        "capabilities",
    }
    assert created["protocol"] == "multipart"
    assert created["capabilities"]["large_uploads"] == "multipart"
    assert (created["part_size"], created["part_count"]) == (5 * MiB, 3)

    parts = put_parts(client, memory_storage, created, data)
    listed = client.get(f"/api/v1/uploads/{created['id']}/multipart/parts/")
    assert [p["part_number"] for p in listed.json()["parts"]] == [1, 2, 3]
    assert listed.json()["parts"][2]["size"] == 2 * MiB

    done = client.post(
        f"/api/v1/uploads/{created['id']}/multipart/complete/", {"parts": parts}, format="json"
    )
    assert done.status_code == 200, done.content
    assert done.json()["status"] == "uploaded"
    assert done.json()["size"] == len(data)
    assert done.json()["url"]


def test_someone_elses_upload_is_404(client, other, memory_storage) -> None:
    created = create(client)
    for method, url, body in [
        ("post", f"/api/v1/uploads/{created['id']}/multipart/parts/", {"part_numbers": [1]}),
        ("get", f"/api/v1/uploads/{created['id']}/multipart/parts/", None),
        ("post", f"/api/v1/uploads/{created['id']}/multipart/complete/", {"parts": []}),
        ("delete", f"/api/v1/uploads/{created['id']}/multipart/", None),
        ("get", f"{UPPY}/{created['upload_id']}/1?key={created['key']}", None),
        ("get", f"{UPPY}/{created['upload_id']}?key={created['key']}", None),
        ("delete", f"{UPPY}/{created['upload_id']}?key={created['key']}", None),
    ]:
        response = getattr(other, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.content)
        err = uppy_error_of(response) if url.startswith(UPPY) else error_of(response)
        assert err["code"] == "not_found"
    assert MediaUpload.objects.get(pk=created["id"]).status == UploadStatus.PENDING


def test_part_number_out_of_range_is_400(client, memory_storage) -> None:
    created = create(client)
    response = client.post(
        f"/api/v1/uploads/{created['id']}/multipart/parts/", {"part_numbers": [4]}, format="json"
    )
    assert response.status_code == 400
    err = error_of(response)
    assert err["code"] == "invalid_part_number"
    assert err["details"]["part_count"] == 3
    uppy = client.get(f"{UPPY}/{created['upload_id']}/4?key={created['key']}")
    assert uppy.status_code == 400
    assert uppy_error_of(uppy)["code"] == "invalid_part_number"


def test_unknown_fields_are_named(client, memory_storage) -> None:
    response = client.post(
        CREATE,
        {"filename": "a.png", "content_type": "image/png", "size": 10, "parts": 3},
        format="json",
    )
    assert response.status_code == 400
    assert "parts" in error_of(response)["details"]["fields"]


def test_abort_answers_204_and_marks_deleted(client, memory_storage) -> None:
    created = create(client)
    response = client.delete(f"/api/v1/uploads/{created['id']}/multipart/")
    assert response.status_code == 204
    row = MediaUpload.objects.get(pk=created["id"])
    assert row.status == UploadStatus.DELETED
    assert row.metadata["deleted_reason"] == "aborted by client"
    assert memory_storage.multipart_upload_ids() == []


def test_cloudinary_active_is_400_multipart_not_supported(
    client, cloudinary_standin, use_provider
) -> None:
    use_provider("cloudinary")
    for response in (
        client.post(
            CREATE, {"filename": "a.png", "content_type": "image/png", "size": 10}, format="json"
        ),
        client.post(
            UPPY,
            {"filename": "a.png", "type": "image/png", "metadata": {"size": 10}},
            format="json",
        ),
    ):
        assert response.status_code == 400
        uppy = response.wsgi_request.path == UPPY
        err = uppy_error_of(response) if uppy else error_of(response)
        assert err["code"] == ("s3_contract_not_supported" if uppy else "multipart_not_supported")
        assert "cloudinary" in err["message"]


# --- Uppy shape -------------------------------------------------------------------------------


def test_uppy_create_takes_an_optional_size_in_metadata(client, memory_storage) -> None:
    response = client.post(
        UPPY, {"filename": "a.png", "type": "image/png", "metadata": {"size": "-3"}}, format="json"
    )
    assert response.status_code == 400
    assert "metadata.size" in uppy_error_of(response)["message"]
    # Without it (what Uppy sends by default): a multipart upload with no declared size.
    sizeless = client.post(
        UPPY, {"filename": "a.png", "type": "image/png", "metadata": {}}, format="json"
    )
    assert sizeless.status_code == 200, sizeless.content
    row = MediaUpload.objects.get(key=sizeless.json()["key"])
    assert (row.declared_size, row.multipart_part_size) == (None, None)
    # Uppy may stringify meta values: a digit string is taken.
    ok = client.post(
        UPPY,
        {"filename": "a.png", "type": "image/png", "metadata": {"size": "10", "name": "a.png"}},
        format="json",
    )
    assert ok.status_code == 200, ok.content
    assert set(ok.json()) == {"key", "uploadId"}


def test_uppy_flow(client, memory_storage) -> None:
    data = png_bytes(6 * MiB)
    created = client.post(
        UPPY,
        {"filename": "v.png", "type": "image/png", "metadata": {"size": len(data)}},
        format="json",
    ).json()
    key, upload_id = created["key"], created["uploadId"]
    parts = []
    for n, chunk in ((1, data[: 5 * MiB]), (2, data[5 * MiB :])):
        signed = client.get(f"{UPPY}/{upload_id}/{n}?key={key}")
        assert signed.status_code == 200, signed.content
        body = signed.json()
        assert body["method"] == "PUT" and 0 < body["expires"] <= 900
        etag = memory_storage.accept_part(
            PartInstructions(n, "PUT", body["url"], {}, timezone.now()), chunk
        )
        parts.append({"PartNumber": n, "ETag": etag})

    listed = client.get(f"{UPPY}/{upload_id}?key={key}")
    assert listed.status_code == 200
    assert [(p["PartNumber"], p["Size"]) for p in listed.json()] == [(1, 5 * MiB), (2, MiB)]
    assert {p["ETag"] for p in listed.json()} == {p["ETag"] for p in parts}

    done = client.post(f"{UPPY}/{upload_id}/complete?key={key}", {"parts": parts}, format="json")
    assert done.status_code == 200, done.content
    assert set(done.json()) == {"location", "key", "id"}
    assert done.json()["key"] == key
    assert MediaUpload.objects.get(pk=done.json()["id"]).status == UploadStatus.UPLOADED


def test_uppy_key_must_match_the_upload(client, memory_storage) -> None:
    created = create(client)
    wrong_key = client.get(f"{UPPY}/{created['upload_id']}?key=uploads/other")
    assert wrong_key.status_code == 404
    missing_key = client.get(f"{UPPY}/{created['upload_id']}")
    assert missing_key.status_code == 400
    assert "key" in uppy_error_of(missing_key)["details"]["fields"]


def test_uppy_abort_answers_empty_object(client, memory_storage) -> None:
    created = create(client)
    response = client.delete(f"{UPPY}/{created['upload_id']}?key={created['key']}")
    assert response.status_code == 200
    assert response.json() == {}
    assert MediaUpload.objects.get(pk=created["id"]).status == UploadStatus.DELETED


def test_uppy_pairs_mixing_two_users_uploads_are_404(client, other, memory_storage) -> None:
    """(uploadId, key) must name one upload of the caller: half of it from someone else's real
    upload is 404 on every Uppy call, and neither upload changes."""
    mine, theirs = create(client), create(other)
    mixes = [
        (mine["upload_id"], theirs["key"]),  # my uploadId, their real key
        (theirs["upload_id"], mine["key"]),  # their uploadId, my real key
        (theirs["upload_id"], theirs["key"]),  # theirs entirely
    ]
    for upload_id, key in mixes:
        for method, url, body in [
            ("get", f"{UPPY}/{upload_id}/1?key={key}", None),
            ("get", f"{UPPY}/{upload_id}?key={key}", None),
            ("post", f"{UPPY}/{upload_id}/complete?key={key}", {"parts": []}),
            ("delete", f"{UPPY}/{upload_id}?key={key}", None),
        ]:
            response = getattr(client, method)(url, body, format="json")
            assert response.status_code == 404, (method, url, response.content)
            assert uppy_error_of(response)["code"] == "not_found"
    statuses = MediaUpload.objects.values_list("status", flat=True)
    assert set(statuses) == {UploadStatus.PENDING}
    assert len(memory_storage.multipart_upload_ids()) == 2


def test_uppy_errors_carry_a_top_level_message(client, memory_storage) -> None:
    """Uppy's Companion client shows `message` of a 4xx body; our `error` object stays."""
    created = create(client)
    done = client.delete(f"{UPPY}/{created['upload_id']}?key={created['key']}")
    assert done.status_code == 200
    gone = client.get(f"{UPPY}/{created['upload_id']}/1?key={created['key']}")
    assert gone.status_code == 410
    assert uppy_error_of(gone)["code"] == "deleted"
    # Our own endpoints keep the plain shape.
    native = client.post(
        f"/api/v1/uploads/{created['id']}/multipart/parts/", {"part_numbers": [1]}, format="json"
    )
    assert native.status_code == 410 and error_of(native)["code"] == "deleted"
