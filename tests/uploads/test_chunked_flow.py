"""Chunked uploads (Cloudinary above one request's 100 MB) over real HTTP, as a mobile client
does them from docs/api.md: token, create, one POST per chunk to the provider, confirm.

The API runs in Django's live server, the provider is the Cloudinary stand-in (bytes on disk);
the client is plain `requests`, nothing of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.large_files import sha256_of, write_large_mp4
from tests.fixtures.providers import use_provider

pytestmark = [pytest.mark.timeout(180)]

MB = 1000 * 1000
FILE_SIZE = 120 * MB


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("chunked") / "holiday.mp4"
    return path, write_large_mp4(path, FILE_SIZE)


@pytest.fixture
def cloudinary_live(cloudinary_standin: Any, transactional_db: None) -> Any:
    from backend.core.config import clear_app_config_cache
    from backend.core.models import AppConfig

    use_provider("cloudinary")
    AppConfig.objects.update(max_upload_size=200 * MB, max_bytes_per_user_per_day=10 * 1024**3)
    clear_app_config_cache()
    return cloudinary_standin


def api_session(live_server: Any) -> requests.Session:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="mobile", password="mobile-password-1")
    session = requests.Session()
    answer = session.post(
        f"{live_server.url}/api/v1/auth/token/",
        json={"username": "mobile", "password": "mobile-password-1"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    session.headers["Authorization"] = f"Token {answer.json()['token']}"
    return session


def send_chunks(upload: dict[str, Any], path: Path) -> dict[str, Any]:
    """docs/api.md, step 2 (chunked): one POST per chunk, in order; the last answer returned."""
    chunked = upload["chunked"]
    size, total = chunked["chunk_size"], chunked["total_size"]
    answer: dict[str, Any] = {}
    with path.open("rb") as handle, requests.Session() as provider:
        for start in range(0, total, size):
            data = handle.read(size)
            end = start + len(data) - 1
            headers = {
                **upload["headers"],
                "Content-Range": chunked["content_range"].format(start=start, end=end, total=total),
            }
            response = provider.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (path.name, data, "application/octet-stream")},
                headers=headers,
                timeout=120,
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            if end < total - 1:  # an intermediate chunk's answer: not an asset yet
                assert answer["done"] is False, answer
    return answer


def test_mobile_chunked_flow_120_mb(
    cloudinary_live: Any, live_server: Any, large_file: tuple[Path, str]
) -> None:
    from backend.uploads.models import MediaUpload

    path, sha256 = large_file
    api = api_session(live_server)
    base = f"{live_server.url}/api/v1"

    config = api.get(f"{base}/config/", timeout=30).json()
    assert config["capabilities"]["large_uploads"] == "chunked"
    assert config["capabilities"]["max_single_upload"] < FILE_SIZE

    created = api.post(
        f"{base}/uploads/",
        json={"filename": "holiday.mp4", "content_type": "video/mp4", "size": FILE_SIZE},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    upload = body["upload"]
    assert upload["protocol"] == "chunked"
    assert body["capabilities"] == config["capabilities"]
    chunked = upload["chunked"]
    assert chunked["chunk_size"] == config["capabilities"]["part_size"] == 20 * 1024 * 1024
    assert chunked["chunk_count"] == 6 and chunked["total_size"] == FILE_SIZE
    assert set(upload["headers"]) == {"X-Unique-Upload-Id"}
    assert "signature" in upload["fields"] and "api_secret" not in upload["fields"]

    final = send_chunks(upload, path)
    assert final["public_id"] == body["key"] and final["bytes"] == FILE_SIZE

    confirmed = api.post(f"{base}/uploads/{body['id']}/confirm/", json=final, timeout=60)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "uploaded"
    row = MediaUpload.objects.get(pk=body["id"])
    assert (row.status, row.metadata["bytes"]) == ("uploaded", FILE_SIZE)

    stored = cloudinary_live.objects[("video", body["key"])]
    assert stored.size == FILE_SIZE
    assert stored.sha256 == sha256
    assert sha256_of(stored.path) == sha256
    assert not cloudinary_live.standin.uploads  # nothing half-assembled left


def test_chunked_confirm_refuses_a_forged_final_answer(
    cloudinary_live: Any, live_server: Any, large_file: tuple[Path, str]
) -> None:
    """The last chunk's answer is verified like a single upload's: signature over public_id +
    version; a client cannot confirm with an answer it made up."""
    path, _ = large_file
    api = api_session(live_server)
    base = f"{live_server.url}/api/v1"
    body = api.post(
        f"{base}/uploads/",
        json={"filename": "holiday.mp4", "content_type": "video/mp4", "size": FILE_SIZE},
        timeout=30,
    ).json()
    final = send_chunks(body["upload"], path)
    confirm = f"{base}/uploads/{body['id']}/confirm/"
    for forged in (
        {**final, "version": int(final["version"]) + 1},
        {**final, "signature": "0" * len(final["signature"])},
    ):
        refused = api.post(confirm, json=forged, timeout=30)
        assert refused.status_code == 422
        assert "signature does not verify" in refused.json()["error"]["message"]
    # The row stayed pending: the genuine answer still confirms it (then the ranged read).
    confirmed = api.post(confirm, json=final, timeout=60)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "uploaded"


def test_s3_above_one_request_needs_multipart(memory_storage: Any, django_user_model: Any) -> None:
    """S3 without multipart cannot carry more than 5 GiB in one request: a 400 naming the
    multipart endpoint, not instructions S3 would refuse."""
    from backend.core.config import clear_app_config_cache
    from backend.core.models import AppConfig

    AppConfig.objects.update(max_upload_size=6 * 1024**3, max_bytes_per_user_per_day=10 * 1024**3)
    clear_app_config_cache()
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="s3-user"))
    response = client.post(
        "/api/v1/uploads/",
        {"filename": "big.mp4", "content_type": "video/mp4", "size": 5 * 1024**3 + 1},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "multipart_required"
    assert "/api/v1/uploads/multipart/" in error["message"]
    assert error["details"]["max_single_upload"] == 5 * 1024**3
    assert error["details"]["large_uploads"] == "multipart"


def test_cloudinary_protocol_follows_the_size_and_the_account_limit(
    cloudinary_live: Any, django_user_model: Any, settings: Any
) -> None:
    """Up to 100 MB one request, above it chunked (20 MiB chunks, one hour to finish); the
    account limit is what /config/ reports as the largest file."""
    from rest_framework.test import APIClient

    settings.CLOUDINARY_MAX_FILE_SIZE = 1_500_000_000
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="sizes"))
    config = client.get("/api/v1/config/").json()
    assert config["capabilities"]["max_file_size"] == 1_500_000_000

    def create(size: int) -> dict[str, Any]:
        response = client.post(
            "/api/v1/uploads/",
            {"filename": "clip.mp4", "content_type": "video/mp4", "size": size},
            format="json",
        )
        assert response.status_code == 201, response.content
        return dict(response.json())

    settings.CLOUDINARY_MAX_FILE_SIZE = 150 * MB  # the account's limit, below the policy's
    too_big = client.post(
        "/api/v1/uploads/",
        {"filename": "clip.mp4", "content_type": "video/mp4", "size": 150 * MB + 1},
        format="json",
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == "file_too_large"
    assert too_big.json()["error"]["details"]["max_upload_size"] == 150 * MB
    settings.CLOUDINARY_MAX_FILE_SIZE = 1_500_000_000

    single = create(100 * MB)["upload"]
    assert (single["protocol"], single["chunked"], single["headers"]) == ("single", None, {})
    chunked_body = create(100 * MB + 1)
    chunked = chunked_body["upload"]
    assert chunked["protocol"] == "chunked"
    assert chunked["chunked"] == {
        "chunk_size": 20 * 1024 * 1024,
        "chunk_count": 5,
        "total_size": 100 * MB + 1,
        "content_range": "bytes {start}-{end}/{total}",
    }
    assert set(chunked["fields"]) >= {"timestamp", "public_id", "api_key", "signature"}
    assert chunked["fields"]["public_id"] == chunked_body["key"]
    assert len(chunked["headers"]["X-Unique-Upload-Id"]) == 32
    # Two uploads never share an upload id.
    assert create(150 * MB)["upload"]["headers"] != chunked["headers"]
    from datetime import datetime

    lifetime = datetime.fromisoformat(chunked["expires_at"]) - datetime.fromtimestamp(
        int(chunked["fields"]["timestamp"]), tz=datetime.fromisoformat(chunked["expires_at"]).tzinfo
    )
    assert lifetime.total_seconds() == 3600


def test_abandoned_chunked_upload_is_expired_by_the_cleanup(
    cloudinary_live: Any, django_user_model: Any, large_file: tuple[Path, str]
) -> None:
    """A client that stops after some chunks (no cancel, no confirm): the row is never
    `uploaded`; once its instructions and the grace period are past, the cleanup job marks it
    `expired` and deletes whatever is stored under the key (here: nothing, the chunks are no
    asset). Had the last chunk landed, the asset would be deleted with it."""
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.test import APIClient

    from backend.uploads import cleanup
    from backend.uploads.models import MediaUpload

    path, _ = large_file
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="gone"))
    body = client.post(
        "/api/v1/uploads/",
        {"filename": "holiday.mp4", "content_type": "video/mp4", "size": FILE_SIZE},
        format="json",
    ).json()
    upload = body["upload"]
    size = upload["chunked"]["chunk_size"]
    with path.open("rb") as handle:
        for start in (0, size):  # two chunks of six, then the client goes away
            data = handle.read(size)
            answer = requests.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (path.name, data)},
                headers={
                    **upload["headers"],
                    "Content-Range": f"bytes {start}-{start + len(data) - 1}/{FILE_SIZE}",
                },
                timeout=60,
            )
            assert answer.status_code == 200 and answer.json()["done"] is False
    assert cloudinary_live.standin.uploads  # held by the provider, not an asset
    assert ("video", body["key"]) not in cloudinary_live.objects

    row = MediaUpload.objects.get(pk=body["id"])
    report = cleanup.expire_orphans(now=row.expires_at + timedelta(days=1))
    assert report.deleted == 1, report.summary()
    row.refresh_from_db()
    assert row.status == "expired"
    assert row.expires_at < timezone.now() + timedelta(hours=2)
    assert ("video", body["key"]) not in cloudinary_live.objects
