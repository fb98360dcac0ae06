"""The optional multipart part of the provider contract: S3 (moto server, real HTTP PUTs of the
presigned part URLs) and the in-memory fake behave alike; Cloudinary refuses with a typed 400."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from backend.core.errors import NotSupported, ProviderUnavailable
from backend.storage.base import CompletedPart, MultipartRejected, ObjectRef, PartInstructions
from tests.fixtures.memory import InMemoryStorageService

MiB = 1024 * 1024
REF = ObjectRef(key="uploads/7/abc/big.bin", content_type="application/octet-stream")


class Harness:
    """One provider plus how a client PUTs a part to it (returns the ETag header)."""

    def __init__(self, service: Any, put_part: Callable[[PartInstructions, bytes], str]) -> None:
        self.service = service
        self.put_part = put_part
        # The moto server outlives a test: a key of its own keeps tests apart.
        self.ref = ObjectRef(
            key=f"uploads/7/{uuid.uuid4().hex}/big.bin", content_type=REF.content_type
        )


def _put_over_http(instructions: PartInstructions, data: bytes) -> str:
    assert instructions.method == "PUT"
    response = requests.put(instructions.url, data=data, headers=instructions.headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


@pytest.fixture(params=["s3", "memory"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "s3":
        service = request.getfixturevalue("s3_server_storage")
        yield Harness(service, _put_over_http)
    else:
        fake = InMemoryStorageService(name="memory")
        yield Harness(fake, fake.accept_part)


def _upload(h: Harness, chunks: list[bytes]) -> tuple[str, list[CompletedPart]]:
    session = h.service.create_multipart_upload(h.ref)
    assert session.key == h.ref.key and session.upload_id
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        signed = h.service.presign_upload_part(
            h.ref, session.upload_id, number, expires_in=300, content_length=len(chunk)
        )
        assert signed.part_number == number
        parts.append(CompletedPart(number, h.put_part(signed, chunk)))
    return session.upload_id, parts


def test_whole_multipart_upload_assembles_the_object(harness) -> None:
    h = harness
    chunks = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    upload_id, parts = _upload(h, chunks)

    listed = h.service.list_parts(h.ref, upload_id)
    assert [(p.part_number, p.size) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB), (3, 4)]
    assert [p.etag.strip('"') for p in listed] == [p.etag.strip('"') for p in parts]

    h.service.complete_multipart_upload(h.ref, upload_id, parts)

    stored = h.service.inspect(h.ref)
    assert stored.exists and stored.size == 10 * MiB + 4
    assert stored.content_type == h.ref.content_type
    assert h.service.read_head(h.ref, 4) == b"aaaa"


def test_wrong_etag_is_rejected_as_invalid_part_and_upload_survives(harness) -> None:
    h = harness
    upload_id, parts = _upload(h, [b"only part"])
    with pytest.raises(MultipartRejected) as caught:
        h.service.complete_multipart_upload(
            h.ref, upload_id, [CompletedPart(1, '"' + "0" * 32 + '"')]
        )
    assert caught.value.code == "InvalidPart"
    # Still there: the right ETag completes it.
    h.service.complete_multipart_upload(h.ref, upload_id, parts)
    assert h.service.inspect(h.ref).size == len(b"only part")


def test_small_non_last_part_is_entity_too_small(harness) -> None:
    h = harness
    upload_id, parts = _upload(h, [b"x" * 100, b"y" * 100])
    with pytest.raises(MultipartRejected) as caught:
        h.service.complete_multipart_upload(h.ref, upload_id, parts)
    assert caught.value.code == "EntityTooSmall"


def test_abort_frees_the_upload_and_is_idempotent(harness) -> None:
    h = harness
    upload_id, _ = _upload(h, [b"part"])
    h.service.abort_multipart_upload(h.ref, upload_id)
    h.service.abort_multipart_upload(h.ref, upload_id)  # NoSuchUpload counts as success
    with pytest.raises(MultipartRejected) as caught:
        h.service.list_parts(h.ref, upload_id)
    assert caught.value.code == "NoSuchUpload"
    assert not h.service.inspect(h.ref).exists


def test_s3_list_parts_reads_every_page(s3_server_storage, monkeypatch) -> None:
    h = Harness(s3_server_storage, _put_over_http)
    upload_id, _ = _upload(h, [b"1", b"2", b"3"])
    client = s3_server_storage.client
    calls: list[dict[str, Any]] = []
    original = client.list_parts

    def one_per_page(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(**kwargs, MaxParts=1)

    monkeypatch.setattr(client, "list_parts", one_per_page)
    parts = s3_server_storage.list_parts(h.ref, upload_id)
    assert [p.part_number for p in parts] == [1, 2, 3]
    assert len(calls) >= 3
    assert calls[1]["PartNumberMarker"] == 1


def test_s3_part_url_is_a_presigned_put_with_the_upload_id(s3_storage) -> None:
    signed = s3_storage.presign_upload_part(
        REF, "UPLOAD-1", 7, expires_in=10_000, content_length=5 * MiB
    )
    assert signed.method == "PUT" and signed.headers == {}
    assert "partNumber=7" in signed.url and "uploadId=UPLOAD-1" in signed.url
    assert "X-Amz-Signature=" in signed.url
    assert "X-Amz-Expires=900" in signed.url  # capped at UPLOAD_MAX_PRESIGN_EXPIRY


def test_s3_create_records_the_content_type(s3_storage) -> None:
    ref = ObjectRef(key="uploads/1/x/pic.png", content_type="image/png")
    session = s3_storage.create_multipart_upload(ref)
    etag = s3_storage.client.upload_part(
        Bucket=s3_storage.bucket, Key=ref.key, UploadId=session.upload_id, PartNumber=1, Body=b"p"
    )["ETag"]
    s3_storage.complete_multipart_upload(ref, session.upload_id, [CompletedPart(1, etag)])
    assert s3_storage.inspect(ref).content_type == "image/png"


def test_s3_outage_is_provider_unavailable(s3_storage, monkeypatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    def down(**kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    for name in ("create_multipart_upload", "list_parts", "complete_multipart_upload"):
        monkeypatch.setattr(s3_storage.client, name, down)
    monkeypatch.setattr(s3_storage.client, "abort_multipart_upload", down)
    with pytest.raises(ProviderUnavailable):
        s3_storage.create_multipart_upload(REF)
    with pytest.raises(ProviderUnavailable):
        s3_storage.list_parts(REF, "u")
    with pytest.raises(ProviderUnavailable):
        s3_storage.complete_multipart_upload(REF, "u", [CompletedPart(1, "e")])
    with pytest.raises(ProviderUnavailable):
        s3_storage.abort_multipart_upload(REF, "u")


def test_cloudinary_has_no_multipart(cloudinary_standin) -> None:
    service = cloudinary_standin.service
    assert service.supports_multipart is False
    calls: list[Callable[[], Any]] = [
        functools.partial(service.create_multipart_upload, REF),
        functools.partial(
            service.presign_upload_part, REF, "u", 1, expires_in=60, content_length=1
        ),
        functools.partial(service.list_parts, REF, "u"),
        functools.partial(service.complete_multipart_upload, REF, "u", []),
        functools.partial(service.abort_multipart_upload, REF, "u"),
    ]
    for call in calls:
        with pytest.raises(NotSupported) as caught:
            call()
        assert caught.value.status_code == 400
        assert caught.value.code == "multipart_not_supported"
        assert "cloudinary" in caught.value.message


def test_memory_fake_refuses_tampered_part_urls() -> None:
    from tests.fixtures.memory import UploadRefused

    fake = InMemoryStorageService()
    session = fake.create_multipart_upload(REF)
    signed = fake.presign_upload_part(REF, session.upload_id, 1, expires_in=60, content_length=1)
    forged = PartInstructions(1, "PUT", signed.url + "0", {}, signed.expires_at)
    with pytest.raises(UploadRefused):
        fake.accept_part(forged, b"x")


def _sigv4_query_signature(url: str, headers: dict[str, str], secret: str) -> str:
    """What S3 computes for a presigned (query-string SigV4) request with these headers."""
    import hashlib
    import hmac
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    pairs = [item.split("=", 1) for item in parts.query.split("&")]
    query = dict(pairs)
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs) if k != "X-Amz-Signature")
    signed = unquote(query["X-Amz-SignedHeaders"]).split(";")
    lower = {k.lower(): str(v).strip() for k, v in {**headers, "host": parts.netloc}.items()}
    canonical_headers = "".join(f"{name}:{lower[name]}\n" for name in signed)
    canonical = "\n".join(
        [
            "PUT",
            parts.path,
            canonical_query,
            canonical_headers,
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    date, region, service, _ = unquote(query["X-Amz-Credential"]).split("/")[1:]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            query["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for item in (date, region, service, "aws4_request"):
        key = hmac.new(key, item.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_s3_part_url_is_bound_to_the_part_length(s3_storage) -> None:
    from urllib.parse import parse_qs, urlsplit

    from tests.fixtures.providers import S3_SETTINGS

    signed = s3_storage.presign_upload_part(
        REF, "UPLOAD-1", 2, expires_in=300, content_length=6 * MiB
    )
    query = parse_qs(urlsplit(signed.url).query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;host"]
    # No header to send: browsers and HTTP clients set Content-Length from the body.
    assert signed.headers == {}
    # S3 accepts the declared length only: the signature of any other length differs.
    secret = S3_SETTINGS["AWS_SECRET_ACCESS_KEY"]
    signature = query["X-Amz-Signature"][0]
    assert _sigv4_query_signature(signed.url, {"Content-Length": str(6 * MiB)}, secret) == signature
    for wrong in (6 * MiB - 1, 6 * MiB + 1, 5 * 1024 * MiB):
        assert _sigv4_query_signature(signed.url, {"Content-Length": str(wrong)}, secret) != (
            signature
        )


def test_s3_part_url_of_the_right_length_uploads_over_http(s3_server_storage) -> None:
    """The moto server does not check signatures; this proves a real client's PUT (requests
    sets Content-Length from the body) still goes through with the signed length."""
    h = Harness(s3_server_storage, _put_over_http)
    session = h.service.create_multipart_upload(h.ref)
    signed = h.service.presign_upload_part(
        h.ref, session.upload_id, 1, expires_in=300, content_length=7
    )
    assert "content-length" in signed.url.split("X-Amz-SignedHeaders=")[1].split("&")[0]
    etag = _put_over_http(signed, b"7 bytes")
    h.service.complete_multipart_upload(h.ref, session.upload_id, [CompletedPart(1, etag)])
    assert h.service.inspect(h.ref).size == 7


def test_memory_fake_refuses_a_part_of_another_length() -> None:
    from tests.fixtures.memory import UploadRefused

    fake = InMemoryStorageService()
    session = fake.create_multipart_upload(REF)
    signed = fake.presign_upload_part(REF, session.upload_id, 1, expires_in=60, content_length=4)
    with pytest.raises(UploadRefused):
        fake.accept_part(signed, b"12345")
    assert fake.accept_part(signed, b"1234")
