"""The Companion-compatible /api/v1/s3/* endpoints as @uppy/aws-s3 6.x and 5.x call them
(the browser tests in tests/e2e/test_uppy6_aws_s3.py drive the real plugin; these pin the
details): the same-origin proof of session requests, status-text errors, /s3/params, uploads
without a size, confirm by key, and the signRequest signer with its S3-dialect URLs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.core.models import AppConfig
from backend.storage.base import PartInstructions, UploadInstructions
from backend.uploads.api.auth import REFUSED
from backend.uploads.api.companion_views import _params, reason_phrase
from backend.uploads.models import MediaUpload
from tests.uploads.test_api_support import png_bytes

pytestmark = pytest.mark.django_db

PARAMS = "/api/v1/s3/params?filename=a.png&type=image/png"


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("uppy-user", password="pw-uppy-user-1")


@pytest.fixture
def session(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.fixture
def token_client(user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


# --- same-origin proof for session requests ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"HTTP_SEC_FETCH_SITE": "same-origin"}, True),
        ({"HTTP_SEC_FETCH_SITE": "same-site"}, False),  # a sibling subdomain
        ({"HTTP_SEC_FETCH_SITE": "cross-site"}, False),
        ({"HTTP_SEC_FETCH_SITE": "none"}, False),  # typed into the address bar
        ({"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "https://evil.example"}, False),
        ({"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "https://app.example"}, True),
        ({"HTTP_ORIGIN": "http://testserver"}, True),  # a browser without Fetch Metadata
        ({"HTTP_ORIGIN": "http://evil.example"}, False),
        ({"HTTP_REFERER": "http://testserver/page"}, True),
        ({"HTTP_REFERER": "http://testserver.evil.example/"}, False),
        ({}, False),  # no browser said where it came from
    ],
)
@override_settings(CSRF_TRUSTED_ORIGINS=["https://app.example"])
def test_session_requests_need_a_same_origin_proof(
    session: Client, memory_storage: Any, headers: dict[str, str], allowed: bool
) -> None:
    response = session.get(PARAMS, **headers)
    if allowed:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403
        assert response.json()["message"] == REFUSED
        assert response.reason_phrase == REFUSED
        assert not MediaUpload.objects.exists()


def test_unsafe_session_request_with_djangos_csrf_token_is_accepted(
    session: Client, memory_storage: Any
) -> None:
    """Uppy 5 can send `X-CSRFToken` (its `headers` option): Django's own check then passes."""
    from django.middleware.csrf import get_token
    from django.test import RequestFactory

    body = {"filename": "a.png", "type": "image/png", "metadata": {}}
    refused = session.post("/api/v1/s3/multipart", body, content_type="application/json")
    assert refused.status_code == 403
    page = RequestFactory().get("/")  # the page that rendered the token and set its cookie
    token = get_token(page)
    session.cookies["csrftoken"] = page.META["CSRF_COOKIE"]
    ok = session.post(
        "/api/v1/s3/multipart", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert ok.status_code == 200, ok.content


def test_token_requests_need_no_origin_proof(token_client: APIClient, memory_storage: Any) -> None:
    assert token_client.get(PARAMS, HTTP_SEC_FETCH_SITE="cross-site").status_code == 200


def test_the_rest_of_the_api_keeps_djangos_csrf_check(session: Client, memory_storage: Any) -> None:
    body = {"filename": "a.png", "content_type": "image/png", "size": 10}
    response = session.post(
        "/api/v1/uploads/", body, content_type="application/json", HTTP_SEC_FETCH_SITE="same-origin"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


# --- errors as Uppy 6 sees them ------------------------------------------------------------------


def test_errors_carry_our_message_as_status_text_and_body_message(
    token_client: APIClient, memory_storage: Any
) -> None:
    response = token_client.get("/api/v1/s3/params?filename=p.html&type=text/html")
    assert response.status_code == 400
    assert response.reason_phrase == "Content type text/html is not allowed."
    body = response.json()
    assert body["message"] == body["error"]["message"] == response.reason_phrase
    assert body["error"]["code"] == "content_type_not_allowed"


def test_reason_phrase_is_one_line_of_printable_ascii() -> None:
    assert reason_phrase("Été\r\nà «Zürich»\x00 日本", 400) == "Ete a Zurich"
    assert reason_phrase("日本", 404) == "Not Found"
    long = reason_phrase("x " * 400, 400)
    assert len(long) <= 300 and long.endswith("...")
    assert re.fullmatch(r"[\x20-\x7e]+", reason_phrase("a\tb\u2028c", 400))


# --- /s3/params -----------------------------------------------------------------------------------


def test_params_creates_an_upload_without_a_size(
    token_client: APIClient, memory_storage: Any
) -> None:
    response = token_client.get(PARAMS + "&metadata[name]=a.png&metadata[type]=image/png")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["method"] == "POST" and set(body) == {
        "method",
        "url",
        "fields",
        "headers",
        "expires",
    }
    row = MediaUpload.objects.get(key=body["fields"]["key"])
    assert (row.declared_size, row.status, row.original_filename) == (None, "pending", "a.png")
    assert 0 < body["expires"] <= 900

    data = png_bytes(3000)
    instructions = UploadInstructions(
        body["method"], body["url"], body["fields"], body["headers"], row.expires_at
    )
    memory_storage.accept_upload(instructions, data)
    confirmed = token_client.post("/api/v1/s3/confirm", {"key": row.key}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    row.refresh_from_db()
    assert (row.status, row.declared_size, row.stored_size) == ("uploaded", 3000, 3000)
    assert confirmed.json()["size"] == 3000
    # Confirming again (a multipart upload confirmed after complete) is the same answer.
    again = token_client.post("/api/v1/s3/confirm", {"key": row.key}, format="json")
    assert again.json() == confirmed.json()


def test_params_over_the_policy_maximum_is_refused_at_confirm(
    token_client: APIClient, memory_storage: Any
) -> None:
    AppConfig.objects.update(max_upload_size=2000)
    from backend.core.config import clear_app_config_cache

    clear_app_config_cache()
    body = token_client.get(PARAMS).json()
    row = MediaUpload.objects.get(key=body["fields"]["key"])
    memory_storage.put(memory_ref(row), png_bytes(2500), "image/png")  # what S3 would refuse
    refused = token_client.post("/api/v1/s3/confirm", {"key": row.key}, format="json")
    assert refused.status_code == 422
    assert "exceeds the limit of 2000 bytes" in refused.json()["message"]


def memory_ref(row: MediaUpload) -> Any:
    return row.object_ref()


def test_params_translate_put_instructions_too() -> None:
    """Not hard-coded to POST: 5.x follows `method` and sends a PUT with its headers."""
    now = datetime.now(UTC) + timedelta(seconds=60)
    put = UploadInstructions("PUT", "https://s3/k?sig", {}, {"If-None-Match": "*"}, now)
    assert _params(put) == {
        "method": "PUT",
        "url": "https://s3/k?sig",
        "fields": {},
        "headers": {"If-None-Match": "*"},
        "expires": pytest.approx(60, abs=2),
    }
    post = UploadInstructions("POST", "https://s3/", {"key": "k"}, {}, now)
    assert _params(post)["fields"] == {"key": "k"}


def test_confirm_by_key_is_per_owner(
    token_client: APIClient, memory_storage: Any, django_user_model: Any
) -> None:
    key = token_client.get(PARAMS).json()["fields"]["key"]
    stranger = APIClient()
    other = django_user_model.objects.create_user("stranger", password="pw-stranger-1")
    stranger.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other).key}")
    assert stranger.post("/api/v1/s3/confirm", {"key": key}, format="json").status_code == 404


# --- multipart without a size ---------------------------------------------------------------------


def _sizeless(token_client: APIClient) -> tuple[str, str]:
    body = {"filename": "v.png", "type": "image/png", "metadata": {"name": "v.png"}}
    created = token_client.post("/api/v1/s3/multipart", body, format="json").json()
    return created["key"], created["uploadId"]


def _put(token_client: APIClient, fake: Any, key: str, upload_id: str, n: int, data: bytes) -> str:
    signed = token_client.get(f"/api/v1/s3/multipart/{upload_id}/{n}?key={key}")
    assert signed.status_code == 200, signed.content
    part = PartInstructions(n, "PUT", signed.json()["url"], {}, datetime.now(UTC))
    return str(fake.accept_part(part, data))


def test_multipart_without_a_size_is_sized_from_the_part_list(
    token_client: APIClient, memory_storage: Any, live_server: Any
) -> None:
    memory_storage.min_part_size = 1
    key, upload_id = _sizeless(token_client)
    data = png_bytes(7000)
    # Parts of the client's choosing: not bound to a length the server computed.
    parts = [
        {
            "PartNumber": 1,
            "ETag": _put(token_client, memory_storage, key, upload_id, 1, data[:4000]),
        },
        {
            "PartNumber": 2,
            "ETag": _put(token_client, memory_storage, key, upload_id, 2, data[4000:]),
        },
    ]
    done = token_client.post(
        f"/api/v1/s3/multipart/{upload_id}/complete?key={key}", {"parts": parts}, format="json"
    )
    assert done.status_code == 200, done.content
    row = MediaUpload.objects.get(key=key)
    assert (row.status, row.declared_size, row.stored_size) == ("uploaded", 7000, 7000)
    assert urlsplit(done.json()["location"]).path == f"/api/v1/uploads/{row.id}/"


def test_multipart_without_a_size_above_the_maximum_is_refused_before_assembly(
    token_client: APIClient, memory_storage: Any
) -> None:
    from backend.core.config import clear_app_config_cache

    AppConfig.objects.update(max_upload_size=5000)
    clear_app_config_cache()
    memory_storage.min_part_size = 1
    key, upload_id = _sizeless(token_client)
    etag = _put(token_client, memory_storage, key, upload_id, 1, png_bytes(6000))
    done = token_client.post(
        f"/api/v1/s3/multipart/{upload_id}/complete?key={key}",
        {"parts": [{"PartNumber": 1, "ETag": etag}]},
        format="json",
    )
    assert done.status_code == 400
    assert done.json()["error"]["code"] == "file_too_large"
    assert done.json()["error"]["details"] == {"size": 6000, "max_upload_size": 5000}
    row = MediaUpload.objects.get(key=key)
    assert row.status == "pending" and not memory_storage.keys()  # nothing assembled
    # Part numbers stay within what the maximum allows (parts of at least 5 MiB).
    too_far = token_client.get(f"/api/v1/s3/multipart/{upload_id}/2?key={key}")
    assert too_far.status_code == 400 and too_far.json()["error"]["code"] == "invalid_part_number"


# --- signRequest (6.x): /s3/presign and its S3-dialect URLs ------------------------------------


def _xml(response: Any, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>", response.content.decode())
    assert match, response.content
    return match.group(1)


def test_presign_runs_a_multipart_upload_through_s3_dialect_urls(
    token_client: APIClient, memory_storage: Any
) -> None:
    memory_storage.min_part_size = 1
    data = png_bytes(6000)
    anonymous = Client()  # the S3-dialect URLs carry their own authority
    new = {"method": "POST", "key": "uppy-id", "filename": "t.png", "type": "image/png"}
    create = token_client.post("/api/v1/s3/presign", {**new, "size": len(data)}, format="json")
    assert create.status_code == 200, create.content
    key = create.json()["key"]
    assert key.startswith("uploads/") and key.endswith("/t.png")
    initiated = anonymous.post(create.json()["url"], content_type="image/png")
    assert initiated.status_code == 200 and initiated["Content-Type"] == "application/xml"
    upload_id = _xml(initiated, "UploadId")
    assert MediaUpload.objects.get(key=key).multipart_upload_id == upload_id

    base = {"key": key, "uploadId": upload_id}
    part = token_client.post(
        "/api/v1/s3/presign", {**base, "method": "PUT", "partNumber": 1}, format="json"
    ).json()
    etag = memory_storage.accept_part(
        PartInstructions(1, "PUT", part["url"], {}, datetime.now(UTC)), data
    )
    listed_url = token_client.post(
        "/api/v1/s3/presign", {**base, "method": "GET"}, format="json"
    ).json()["url"]
    assert _xml(anonymous.get(listed_url), "PartNumber") == "1"
    complete_url = token_client.post(
        "/api/v1/s3/presign", {**base, "method": "POST"}, format="json"
    ).json()["url"]
    assert anonymous.get(complete_url).status_code == 404  # one method per URL
    assert anonymous.post(complete_url[:-3] + "xyz", b"", content_type="x").status_code == 404
    body = (
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
        f"<ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    )
    done = anonymous.post(complete_url, body, content_type="application/xml")
    assert done.status_code == 200, done.content
    row = MediaUpload.objects.get(key=key)
    assert row.status == "uploaded" and row.stored_size == len(data)
    assert urlsplit(_xml(done, "Location")).path == f"/api/v1/uploads/{row.id}/"
    assert _xml(done, "Key") == key


def test_presign_single_request_and_abort(token_client: APIClient, memory_storage: Any) -> None:
    single = token_client.post(
        "/api/v1/s3/presign",
        {"method": "PUT", "key": "x", "filename": "s.png", "type": "image/png", "size": 100},
        format="json",
    )
    assert single.status_code == 200, single.content
    assert set(single.json()) == {"url", "fields", "key"}  # an S3 POST form (PutObject)
    assert single.json()["fields"]["key"] == single.json()["key"]

    created = token_client.post(
        "/api/v1/s3/presign",
        {"method": "POST", "key": "y", "filename": "m.png", "type": "image/png"},
        format="json",
    ).json()
    upload_id = _xml(Client().post(created["url"], content_type="image/png"), "UploadId")
    abort_url = token_client.post(
        "/api/v1/s3/presign",
        {"method": "DELETE", "key": created["key"], "uploadId": upload_id},
        format="json",
    ).json()["url"]
    assert Client().delete(abort_url).status_code == 204
    assert MediaUpload.objects.get(key=created["key"]).status == "deleted"


def test_presign_refusals_carry_our_message(token_client: APIClient, memory_storage: Any) -> None:
    refused = token_client.post(
        "/api/v1/s3/presign",
        {"method": "PUT", "key": "x", "filename": "p.html", "type": "text/html"},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == "Content type text/html is not allowed."
    untyped = token_client.post("/api/v1/s3/presign", {"method": "POST", "key": "x"}, format="json")
    assert untyped.status_code == 400 and "type" in untyped.json()["message"]


# --- schema-exactness fixes -------------------------------------------------------------------


def test_list_is_paginated_and_refuses_a_blank_status(token_client: APIClient) -> None:
    page = token_client.get("/api/v1/uploads/")
    assert set(page.json()) == {"count", "next", "previous", "results"}
    blank = token_client.get("/api/v1/uploads/?status=")
    assert blank.status_code == 400 and blank.json()["error"]["details"]["fields"] == {
        "status": ["May not be blank."]
    }


def test_errors_of_list_items_are_plain_text() -> None:
    from rest_framework.exceptions import ValidationError

    from backend.core.errors import _drf_details
    from backend.uploads.api.multipart_serializers import PartNumbersInputSerializer

    data = PartNumbersInputSerializer(data={"part_numbers": [1, 0]})
    assert not data.is_valid()
    message, details = _drf_details(ValidationError(data.errors))
    assert message == "part_numbers.1: Ensure this value is greater than or equal to 1."
    assert details == {
        "fields": {"part_numbers.1": ["Ensure this value is greater than or equal to 1."]}
    }


def test_config_reports_the_applied_presign_expiry(token_client: APIClient) -> None:
    from backend.core.config import clear_app_config_cache

    config = AppConfig.load()
    config.presign_expiry_seconds = 86400
    config.save()
    clear_app_config_cache()
    applied = token_client.get("/api/v1/config/").json()["presign_expiry_seconds"]
    assert applied == settings.UPLOAD_MAX_PRESIGN_EXPIRY < 86400


def test_unknown_api_paths_answer_json(token_client: APIClient) -> None:
    response = token_client.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
