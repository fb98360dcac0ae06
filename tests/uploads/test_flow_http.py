"""The whole flow over real HTTP: our API on a live server, the file to the provider.

S3: the moto S3 server (moto_server). The upload goes to exactly the returned url + fields with
`requests`; moto checks no policy, so uploading what the policy would refuse proves that confirm
catches it. Cloudinary: the local stand-in (cloudinary_standin), which checks signatures like
Cloudinary.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from django.test import override_settings
from rest_framework.authtoken.models import Token

from backend.storage.factory import CloudStorageFactory
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider
from tests.uploads.test_api_support import HTML, png_bytes

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10


class Api:
    """A mobile client: token auth, JSON, real HTTP against the live server."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def post(self, path: str, json: Any) -> requests.Response:
        return self.session.post(self.base + path, json=json, timeout=TIMEOUT)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base + path, timeout=TIMEOUT)


@pytest.fixture
def api(live_server: Any, django_user_model: Any) -> Iterator[Api]:
    user = django_user_model.objects.create_user("flow-user", password="flow-pass-123")
    # The token endpoint is part of the flow a mobile developer follows.
    response = requests.post(
        live_server.url + "/api/v1/auth/token/",
        json={"username": "flow-user", "password": "flow-pass-123"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token"] == Token.objects.get(user=user).key
    client = Api(live_server.url, response.json()["token"])
    yield client
    client.session.close()


def upload_with(instructions: dict[str, Any], data: bytes, content_type: str) -> requests.Response:
    """What the browser widget / mobile app does: fields in order, then the file."""
    assert instructions["method"] == "POST"
    return requests.post(
        instructions["url"],
        data=instructions["fields"],
        files={"file": ("upload.bin", data, content_type)},
        headers=instructions["headers"],
        timeout=TIMEOUT,
    )


def s3_client(endpoint: str) -> Any:
    from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
    )


def object_exists(endpoint: str, key: str) -> bool:
    try:
        s3_client(endpoint).head_object(Bucket=MOTO_SERVER_BUCKET, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


# --- S3 (moto server) -------------------------------------------------------------------------


def test_s3_whole_flow(api, s3_server_storage, moto_server) -> None:
    use_provider("s3")
    data = png_bytes(2048)

    created = api.post(
        "/api/v1/uploads/", {"filename": "cat.png", "content_type": "image/png", "size": len(data)}
    )
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["provider"] == "s3"
    assert upload["upload"]["url"].startswith(moto_server)

    sent = upload_with(upload["upload"], data, "image/png")
    assert sent.status_code in (200, 201, 204), sent.text

    confirmed = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", {})
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["status"] == "uploaded"
    assert body["metadata"]["bytes"] == len(data)
    assert body["metadata"]["content_type"] == "image/png"
    assert body["metadata"]["etag"]

    detail = api.get(f"/api/v1/uploads/{upload['id']}/").json()
    assert detail["status"] == "uploaded"
    fetched = requests.get(detail["url"], timeout=TIMEOUT)
    assert fetched.status_code == 200
    assert fetched.content == data


def test_s3_html_declared_as_png_is_rejected_and_deleted(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    created = api.post(
        "/api/v1/uploads/", {"filename": "x.png", "content_type": "image/png", "size": len(HTML)}
    ).json()
    # The policy pins Content-Type image/png; moto does not enforce it, a real bucket would.
    sent = upload_with(created["upload"], HTML, "image/png")
    assert sent.status_code in (200, 201, 204)
    staged = created["upload"]["fields"]["key"]
    assert staged != created["key"]  # the form writes the staging key
    assert object_exists(moto_server, staged)
    assert not object_exists(moto_server, created["key"])

    response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", {})

    assert response.status_code == 422
    err = response.json()["error"]
    assert err["code"] == "verification_failed"
    assert "first bytes are not PNG" in err["message"]
    assert not object_exists(moto_server, created["key"])
    assert not object_exists(moto_server, staged)
    row = MediaUpload.objects.get(pk=created["id"])
    assert row.status == UploadStatus.FAILED
    assert api.post(f"/api/v1/uploads/{created['id']}/confirm/", {}).json() == response.json()


def test_s3_oversize_and_wrong_type_uploads_are_rejected(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    created = api.post(
        "/api/v1/uploads/", {"filename": "x.png", "content_type": "image/png", "size": 100}
    ).json()
    # Bigger than declared and sent as text/html: moto stores it anyway.
    upload_with(
        created["upload"]
        | {"fields": {**created["upload"]["fields"], "Content-Type": "text/html"}},
        png_bytes(5000),
        "text/html",
    )
    response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", {})
    assert response.status_code == 422
    reasons = response.json()["error"]["details"]["reasons"]
    assert "stored size 5000 bytes != declared 100 bytes" in reasons
    assert "stored content type text/html != declared image/png" in reasons
    assert not object_exists(moto_server, created["key"])


def test_s3_confirm_before_upload_is_409(api, s3_server_storage) -> None:
    use_provider("s3")
    created = api.post(
        "/api/v1/uploads/", {"filename": "x.png", "content_type": "image/png", "size": 100}
    ).json()
    response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", {})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_uploaded_yet"


def _dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused


def test_s3_unreachable_during_confirm_is_503_and_row_stays_pending(
    api, s3_server_storage, moto_server
) -> None:
    use_provider("s3")
    data = png_bytes(300)
    created = api.post(
        "/api/v1/uploads/", {"filename": "x.png", "content_type": "image/png", "size": len(data)}
    ).json()
    upload_with(created["upload"], data, "image/png")

    with override_settings(AWS_S3_ENDPOINT_URL=_dead_endpoint()):
        CloudStorageFactory.reset()
        started = time.monotonic()
        response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", {})
        elapsed = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert "moto-dev-secret" not in response.text
    assert elapsed < 30
    assert MediaUpload.objects.get(pk=created["id"]).status == UploadStatus.PENDING

    CloudStorageFactory.reset()  # the provider is back
    assert api.post(f"/api/v1/uploads/{created['id']}/confirm/", {}).status_code == 200


# --- Cloudinary (local stand-in) --------------------------------------------------------------


def test_cloudinary_whole_flow(api, cloudinary_standin) -> None:
    use_provider("cloudinary")
    data = png_bytes(1500)
    created = api.post(
        "/api/v1/uploads/", {"filename": "dog.png", "content_type": "image/png", "size": len(data)}
    )
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["provider"] == "cloudinary"
    assert upload["upload"]["url"].startswith(cloudinary_standin.url)
    assert "api_secret" not in str(upload)

    sent = upload_with(upload["upload"], data, "image/png")
    assert sent.status_code == 200, sent.text
    provider_response = sent.json()
    assert provider_response["public_id"] == upload["key"]

    # The client's `bytes`/`format` are unsigned claims: lie about them, they must be ignored.
    claims = provider_response | {"bytes": 1, "format": "exe"}
    confirmed = api.post(f"/api/v1/uploads/{upload['id']}/confirm/", claims)
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["status"] == "uploaded"
    assert body["metadata"]["bytes"] == len(data)
    assert body["metadata"]["version"] == str(provider_response["version"])
    assert body["metadata"]["content_type"] == "image/png"

    detail = api.get(f"/api/v1/uploads/{upload['id']}/").json()
    fetched = requests.get(detail["url"], timeout=TIMEOUT)
    assert fetched.status_code == 200
    assert fetched.content == data


def test_cloudinary_forged_confirmation_is_refused_and_row_stays_pending(
    api, cloudinary_standin
) -> None:
    use_provider("cloudinary")
    data = png_bytes(200)
    created = api.post(
        "/api/v1/uploads/", {"filename": "a.png", "content_type": "image/png", "size": len(data)}
    ).json()
    provider_response = upload_with(created["upload"], data, "image/png").json()

    forged = provider_response | {"signature": "0" * 40}
    response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", forged)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "verification_failed"
    assert "signature" in response.json()["error"]["message"]
    assert MediaUpload.objects.get(pk=created["id"]).status == UploadStatus.PENDING

    # The genuine response still confirms.
    ok = api.post(f"/api/v1/uploads/{created['id']}/confirm/", provider_response)
    assert ok.status_code == 200


def test_cloudinary_binary_declared_as_text_is_rejected(api, cloudinary_standin) -> None:
    use_provider("cloudinary")
    data = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 92  # an executable, declared as text
    created = api.post(
        "/api/v1/uploads/",
        {"filename": "notes.txt", "content_type": "text/plain", "size": len(data)},
    ).json()
    assert created["key"].endswith("/notes.txt")  # raw resources keep their extension
    provider_response = upload_with(created["upload"], data, "text/plain").json()

    response = api.post(f"/api/v1/uploads/{created['id']}/confirm/", provider_response)

    assert response.status_code == 422
    assert "not UTF-8 text" in response.json()["error"]["message"]
    assert ("raw", created["key"]) not in cloudinary_standin.objects
    assert MediaUpload.objects.get(pk=created["id"]).status == UploadStatus.FAILED


def test_provider_switch_between_presign_and_confirm(
    api, cloudinary_standin, s3_server_storage, moto_server
) -> None:
    """A row presigned at Cloudinary confirms at Cloudinary after the admin switched to S3."""
    use_provider("cloudinary")
    data = png_bytes(400)
    created = api.post(
        "/api/v1/uploads/", {"filename": "a.png", "content_type": "image/png", "size": len(data)}
    ).json()
    provider_response = upload_with(created["upload"], data, "image/png").json()

    use_provider("s3")
    confirmed = api.post(f"/api/v1/uploads/{created['id']}/confirm/", provider_response)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["provider"] == "cloudinary"
    assert confirmed.json()["metadata"]["provider"] == "cloudinary"
    assert not object_exists(moto_server, created["key"])

    new = api.post(
        "/api/v1/uploads/",
        {"filename": "b.png", "content_type": "image/png", "size": 10 + len(data)},
    ).json()
    assert new["provider"] == "s3"
