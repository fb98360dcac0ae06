"""REST API v1 over DRF's APIClient (in-memory provider fake unless the provider is the point)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.core.config import get_app_config
from backend.core.models import AppConfig
from backend.storage.factory import CloudStorageFactory
from backend.uploads.models import MediaUpload, UploadStatus
from tests.uploads.test_api_support import HTML, error_of, png_bytes, store

pytestmark = pytest.mark.django_db

UPLOADS = "/api/v1/uploads/"


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("api-user", password="pw-api-user-1")


@pytest.fixture
def client(user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"filename": "pic.png", "content_type": "image/png", "size": 100}
    data.update(overrides)
    return data


def create(client: APIClient, **overrides: Any) -> dict[str, Any]:
    response = client.post(UPLOADS, body(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- auth -------------------------------------------------------------------------------------


def test_anonymous_is_refused_everywhere(memory_storage) -> None:
    anon = APIClient()
    some_id = uuid.uuid4()
    for method, url in [
        ("get", UPLOADS),
        ("post", UPLOADS),
        ("get", f"{UPLOADS}{some_id}/"),
        ("delete", f"{UPLOADS}{some_id}/"),
        ("post", f"{UPLOADS}{some_id}/confirm/"),
        ("get", "/api/v1/config/"),
    ]:
        response = getattr(anon, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        assert response["WWW-Authenticate"] == "Token"
        assert error_of(response)["code"] == "not_authenticated"
    assert MediaUpload.objects.count() == 0


def test_token_endpoint_issues_a_working_token(memory_storage, user) -> None:
    anon = APIClient(enforce_csrf_checks=True)
    response = anon.post(
        "/api/v1/auth/token/", {"username": "api-user", "password": "pw-api-user-1"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert token == Token.objects.get(user=user).key
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/api/v1/config/").status_code == 200


def test_token_endpoint_wrong_password(memory_storage, user) -> None:
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "api-user", "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    err = error_of(response)
    assert err["code"] == "validation_failed"
    assert "Unable to log in" in err["message"]
    assert not Token.objects.exists()


def test_session_auth_requires_csrf(memory_storage, user) -> None:
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get(UPLOADS).status_code == 200
    response = browser.post(UPLOADS, body(), format="json")
    assert response.status_code == 403
    err = error_of(response)
    assert err["code"] == "permission_denied"
    assert "CSRF" in err["message"]
    assert MediaUpload.objects.count() == 0


# --- create -----------------------------------------------------------------------------------


def test_create_returns_instructions(client, memory_storage, user) -> None:
    data = create(client, filename="holiday photo.png")
    row = MediaUpload.objects.get()
    assert data == {
        "id": str(row.id),
        "status": "pending",
        "provider": "s3",
        "key": row.key,
        "filename": "holiday photo.png",
        "content_type": "image/png",
        "size": 100,
        "expires_at": data["expires_at"],
        "upload": data["upload"],
        "capabilities": data["capabilities"],
    }
    assert row.key == f"uploads/{user.pk}/{row.id.hex}/holiday-photo.png"
    assert set(data["upload"]) == {
        "protocol",
        "method",
        "url",
        "fields",
        "headers",
        "expires_at",
        "chunked",
    }
    assert (data["upload"]["protocol"], data["upload"]["chunked"]) == ("single", None)
    assert data["capabilities"]["large_uploads"] == "multipart"  # what the client decides from
    assert data["upload"]["method"] == "POST"
    assert data["upload"]["fields"]["key"] == row.key


@pytest.mark.parametrize(
    ("overrides", "code", "message_part", "field"),
    [
        ({"size": 25 * 1024 * 1024 + 1}, "file_too_large", "largest accepted upload", None),
        ({"size": 0}, "validation_failed", "greater than or equal to 1", "size"),
        ({"size": -1}, "validation_failed", "greater than or equal to 1", "size"),
        ({"size": "lots"}, "validation_failed", "valid integer", "size"),
        ({"size": 1.5}, "validation_failed", "valid integer", "size"),
        ({"size": None}, "validation_failed", "may not be null", "size"),
        ({"content_type": "text/html"}, "content_type_not_allowed", "not allowed", None),
        ({"content_type": "application/x-msdownload"}, "content_type_not_allowed", "", None),
        ({"content_type": ""}, "validation_failed", "may not be blank", "content_type"),
        ({"filename": ""}, "validation_failed", "may not be blank", "filename"),
        ({"filename": "x" * 10_001}, "validation_failed", "no more than 10000", "filename"),
        ({"checksum_sha256": "zz"}, "invalid_checksum", "64 hexadecimal", None),
        ({"bucket": "other", "acl": "public-read"}, "validation_failed", "Unknown field", "acl"),
    ],
)
def test_create_bad_input(client, memory_storage, overrides, code, message_part, field) -> None:
    response = client.post(UPLOADS, body(**overrides), format="json")
    assert response.status_code == 400, response.content
    err = error_of(response)
    assert err["code"] == code
    assert message_part in err["message"]
    if field:
        assert field in err["details"]["fields"]
    assert MediaUpload.objects.count() == 0
    assert memory_storage.keys() == []


def test_create_missing_fields_are_named(client, memory_storage) -> None:
    response = client.post(UPLOADS, {}, format="json")
    assert response.status_code == 400
    err = error_of(response)
    assert set(err["details"]["fields"]) == {"filename", "content_type", "size"}


def test_unknown_fields_are_all_named(client, memory_storage) -> None:
    response = client.post(UPLOADS, body(key="mine/evil.png", public_read=True), format="json")
    err = error_of(response)
    assert set(err["details"]["fields"]) == {"key", "public_read"}
    assert "key: Unknown field" in err["message"]


def test_disallowed_type_lists_allowed_ones(client, memory_storage) -> None:
    err = error_of(client.post(UPLOADS, body(content_type="image/svg+xml"), format="json"))
    assert err["details"]["content_type"] == "image/svg+xml"
    assert "image/png" in err["details"]["allowed_content_types"]


def test_oversize_names_the_limit(client, memory_storage) -> None:
    err = error_of(client.post(UPLOADS, body(size=10**12), format="json"))
    assert err["details"] == {"size": 10**12, "max_upload_size": get_app_config().max_upload_size}


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("../../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("evil\x00.png", "evil.png"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("a" * 10_000, "a" * 100),
        ("<script>alert(1)</script>.png", "script>.png"),
    ],
)
def test_hostile_filenames_are_sanitised(client, memory_storage, user, filename, stored) -> None:
    data = create(client, filename=filename)
    assert data["filename"] == stored
    row = MediaUpload.objects.get()
    assert row.original_filename == stored
    prefix = f"uploads/{user.pk}/{row.id.hex}/"
    assert row.key.startswith(prefix)
    tail = row.key[len(prefix) :]
    assert "/" not in tail and "\\" not in tail and ".." not in tail
    assert tail.isascii() and len(tail) <= 100


def test_quota_exceeded_is_429_with_numbers(client, memory_storage) -> None:
    config = AppConfig.load()
    config.max_pending_uploads_per_user = 1
    config.save()
    create(client)
    response = client.post(UPLOADS, body(), format="json")
    assert response.status_code == 429
    err = error_of(response)
    assert err["code"] == "too_many_pending_uploads"
    assert err["details"] == {"pending": 1, "max_pending_uploads": 1}
    assert MediaUpload.objects.count() == 1


def test_no_provider_configured_is_503(client, db) -> None:
    CloudStorageFactory.reset()
    response = client.post(UPLOADS, body(), format="json")
    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    err = error_of(response)
    assert err["code"] == "storage_unavailable"
    assert "AWS_STORAGE_BUCKET_NAME" in err["message"]
    assert MediaUpload.objects.count() == 0


def test_create_query_budget(memory_storage, user, django_assert_max_num_queries) -> None:
    api = APIClient()
    api.force_authenticate(user)
    get_app_config()
    # On SQLite a user's first reservation also inserts the counter row (tests/uploads/
    # test_query_budgets.py holds the budgets with token authentication, on PostgreSQL too).
    assert api.post(UPLOADS, body(), format="json").status_code == 201
    with django_assert_max_num_queries(2):
        response = api.post(UPLOADS, body(), format="json")
    assert response.status_code == 201


def test_create_is_throttled(memory_storage, user, settings) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    rates = {"upload_create": "2/minute", "upload_confirm": "100/minute"}
    original = ScopedRateThrottle.THROTTLE_RATES
    ScopedRateThrottle.THROTTLE_RATES = rates
    try:
        api = APIClient()
        api.force_authenticate(user)
        assert api.post(UPLOADS, body(), format="json").status_code == 201
        assert api.post(UPLOADS, body(), format="json").status_code == 201
        response = api.post(UPLOADS, body(), format="json")
        assert response.status_code == 429
        assert error_of(response)["code"] == "throttled"
        assert "Retry-After" in response
        assert api.get(UPLOADS).status_code == 200  # reads are not throttled
    finally:
        ScopedRateThrottle.THROTTLE_RATES = original
    assert MediaUpload.objects.count() == 2


# --- confirm ----------------------------------------------------------------------------------


def confirm_url(upload_id: str) -> str:
    return f"{UPLOADS}{upload_id}/confirm/"


def test_confirm_flow_and_detail(client, memory_storage) -> None:
    data = create(client)
    row = MediaUpload.objects.get()
    store(memory_storage, row, png_bytes(100))

    response = client.post(confirm_url(data["id"]), {}, format="json")

    assert response.status_code == 200, response.content
    out = response.json()
    assert out["status"] == "uploaded"
    assert out["id"] == data["id"]
    assert out["metadata"]["bytes"] == 100
    assert out["metadata"]["content_type"] == "image/png"
    assert out["url"].startswith(f"memory://s3/{row.key}")
    assert out["confirmed_at"]
    for field in ("provider", "key", "filename", "content_type", "size", "created_at"):
        assert field in out
    detail = client.get(f"{UPLOADS}{data['id']}/").json()
    assert detail["status"] == "uploaded"
    assert detail["url"] == out["url"]


def test_double_confirm_same_result(client, memory_storage) -> None:
    data = create(client)
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    first = client.post(confirm_url(data["id"]), {}, format="json")
    second = client.post(confirm_url(data["id"]), {}, format="json")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()


def test_confirm_before_upload_is_409(client, memory_storage) -> None:
    data = create(client)
    response = client.post(confirm_url(data["id"]), {}, format="json")
    assert response.status_code == 409
    err = error_of(response)
    assert err["code"] == "not_uploaded_yet"
    assert "has not arrived" in err["message"]
    assert MediaUpload.objects.get().status == UploadStatus.PENDING


def test_confirm_after_expiry_is_410(client, memory_storage, settings) -> None:
    settings.UPLOAD_ORPHAN_GRACE_SECONDS = 600
    data = create(client)
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    MediaUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=601))
    response = client.post(confirm_url(data["id"]), {}, format="json")
    assert response.status_code == 410
    err = error_of(response)
    assert err["code"] == "expired"
    assert "request a new upload" in err["message"]
    assert MediaUpload.objects.get().status == UploadStatus.PENDING


def test_html_declared_as_png_is_rejected(client, memory_storage) -> None:
    data = create(client, size=len(HTML))
    row = MediaUpload.objects.get()
    store(memory_storage, row, HTML)

    response = client.post(confirm_url(data["id"]), {}, format="json")

    assert response.status_code == 422
    err = error_of(response)
    assert err["code"] == "verification_failed"
    assert "first bytes are not PNG" in err["message"]
    assert err["details"]["reasons"] == ["declared image/png but the first bytes are not PNG"]
    assert MediaUpload.objects.get().status == UploadStatus.FAILED
    assert memory_storage.keys() == []
    again = client.post(confirm_url(data["id"]), {}, format="json")
    assert again.status_code == 422
    assert again.json() == response.json()
    assert client.get(f"{UPLOADS}{data['id']}/").json()["url"] is None


def test_confirm_body_must_be_object(client, memory_storage) -> None:
    data = create(client)
    response = client.post(confirm_url(data["id"]), [1, 2], format="json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_payload"


def test_confirm_malformed_json_is_400(client, memory_storage) -> None:
    data = create(client)
    response = client.post(confirm_url(data["id"]), "{nope", content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


def test_provider_down_on_confirm_is_503_and_row_pending(client, memory_storage) -> None:
    data = create(client)
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    memory_storage.available = False
    response = client.post(confirm_url(data["id"]), {}, format="json")
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert error_of(response)["code"] == "provider_unavailable"
    assert MediaUpload.objects.get().status == UploadStatus.PENDING


def test_confirm_query_budget(memory_storage, user, django_assert_max_num_queries) -> None:
    api = APIClient()
    api.force_authenticate(user)
    data = api.post(UPLOADS, body(), format="json").json()
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    get_app_config()
    with django_assert_max_num_queries(3):
        response = api.post(confirm_url(data["id"]), {}, format="json")
    assert response.status_code == 200


# --- other owners, list, delete, config -------------------------------------------------------


def test_someone_elses_upload_is_404(client, memory_storage, django_user_model) -> None:
    data = create(client)
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    intruder = APIClient()
    intruder.force_authenticate(django_user_model.objects.create_user("intruder"))
    for method, url in [
        ("get", f"{UPLOADS}{data['id']}/"),
        ("delete", f"{UPLOADS}{data['id']}/"),
        ("post", confirm_url(data["id"])),
    ]:
        response = getattr(intruder, method)(url, {}, format="json")
        assert response.status_code == 404
        assert error_of(response) == {
            "code": "not_found",
            "message": "No upload with this id.",
            "details": {},
        }
    assert intruder.get(UPLOADS).json()["count"] == 0
    assert MediaUpload.objects.get().status == UploadStatus.PENDING
    assert client.get(f"{UPLOADS}not-a-uuid/").status_code == 404


def test_list_is_paginated_and_filterable(client, memory_storage) -> None:
    first = create(client)
    create(client)
    store(memory_storage, MediaUpload.objects.get(pk=first["id"]), png_bytes(100))
    client.post(confirm_url(first["id"]), {}, format="json")

    page = client.get(UPLOADS).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 2
    uploaded = client.get(UPLOADS, {"status": "uploaded"}).json()
    assert [r["id"] for r in uploaded["results"]] == [first["id"]]
    assert uploaded["results"][0]["url"]
    response = client.get(UPLOADS, {"status": "bogus"})
    assert response.status_code == 400
    assert "status" in error_of(response)["details"]["fields"]


def test_delete_is_202_deleting_then_job_deletes(
    client, memory_storage, django_capture_on_commit_callbacks
) -> None:
    from backend.uploads import tasks

    data = create(client)
    store(memory_storage, MediaUpload.objects.get(), png_bytes(100))
    client.post(confirm_url(data["id"]), {}, format="json")
    broker = tasks.delete_upload.broker
    broker.flush_all()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"{UPLOADS}{data['id']}/")
    assert response.status_code == 202
    assert response.json()["status"] == "deleting"
    assert response.json()["url"] is None
    assert broker.queues["default"].qsize() == 1
    broker.flush_all()
    tasks.delete_upload(data["id"])  # what the worker runs
    assert memory_storage.keys() == []
    assert client.get(f"{UPLOADS}{data['id']}/").json()["status"] == "deleted"
    assert client.delete(f"{UPLOADS}{data['id']}/").status_code == 202  # idempotent
    response = client.post(confirm_url(data["id"]), {}, format="json")
    assert response.status_code == 410
    assert error_of(response)["code"] == "deleted"


def test_config_endpoint(client, memory_storage) -> None:
    response = client.get("/api/v1/config/")
    assert response.status_code == 200
    config = get_app_config()
    assert response.json() == {
        "provider": "s3",
        # The active provider's capabilities: what the widget decides multipart uploads from.
        "capabilities": {
            "max_single_upload": 5 * 1024**3,
            "large_uploads": "multipart",
            "min_part_size": 5 * 1024**2,
            "max_part_size": 5 * 1024**3,
            "max_parts": 10_000,
            "part_size": None,
            "verifies_checksum": True,
            "max_file_size": 10_000 * 5 * 1024**3,
        },
        "max_upload_size": config.max_upload_size,
        "allowed_content_types": list(config.allowed_content_types),
        "presign_expiry_seconds": config.presign_expiry_seconds,
    }


def test_config_endpoint_without_provider(client, db) -> None:
    CloudStorageFactory.reset()
    body = client.get("/api/v1/config/").json()
    assert body["provider"] is None and body["capabilities"] is None


def test_no_secret_in_responses(client, s3_storage) -> None:
    from django.conf import settings

    data = create(client)
    text = str(data)
    assert settings.AWS_SECRET_ACCESS_KEY not in text
    assert "x-amz-signature" in {k.lower() for k in data["upload"]["fields"]}


def test_token_endpoint_is_throttled_per_ip(memory_storage, user) -> None:
    from backend.uploads.api.views import TokenObtainThrottle

    original = TokenObtainThrottle.THROTTLE_RATES
    TokenObtainThrottle.THROTTLE_RATES = {"auth_token": "2/minute"}
    try:
        anon = APIClient()
        for _ in range(2):
            response = anon.post(
                "/api/v1/auth/token/", {"username": "api-user", "password": "bad"}, format="json"
            )
            assert response.status_code == 400
        response = anon.post(
            "/api/v1/auth/token/",
            {"username": "api-user", "password": "pw-api-user-1"},
            format="json",
        )
        assert response.status_code == 429
        assert error_of(response)["code"] == "throttled"
    finally:
        TokenObtainThrottle.THROTTLE_RATES = original
    assert not Token.objects.exists()


def test_input_serializer_fields_are_per_instance_copies() -> None:
    """Shallow copies (no per-request deep copy), still one bound field object per instance;
    the declared fields themselves are never bound."""
    from backend.uploads.api.serializers import UploadCreateInputSerializer

    a = UploadCreateInputSerializer(data=body())
    b = UploadCreateInputSerializer(data=body(size="x"))
    assert a.is_valid() and not b.is_valid()
    assert "size" in b.errors and not a.errors
    assert a.fields["size"] is not b.fields["size"]
    assert a.fields["size"].parent is a and b.fields["size"].parent is b
    declared = UploadCreateInputSerializer._declared_fields["size"]
    assert getattr(declared, "parent", None) is None
