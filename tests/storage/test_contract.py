"""One contract suite, run against every provider: S3 (moto in-process), Cloudinary (the local
stand-in, over real HTTP) and the in-memory fake. A behaviour the upload service relies on is
asserted here once, for all of them."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.test import override_settings

from backend.core.errors import ProviderUnavailable
from backend.storage.base import CloudStorageService, ObjectRef, UploadInstructions
from backend.storage.factory import CloudStorageFactory
from tests.fixtures.memory import InMemoryStorageService
from tests.fixtures.providers import CLOUDINARY_TEST_SECRET, S3_SETTINGS

# A real 1x1 PNG: the Cloudinary stand-in (like Cloudinary) refuses non-image bytes as "image".
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SECRETS = (CLOUDINARY_TEST_SECRET, S3_SETTINGS["AWS_SECRET_ACCESS_KEY"])


@dataclass
class Harness:
    service: CloudStorageService
    upload: Callable[[ObjectRef, UploadInstructions, bytes], None]
    fetch: Callable[[str], bytes]
    break_provider: Callable[[], CloudStorageService]


def _s3_harness(s3_storage: Any) -> Harness:
    def upload(ref: ObjectRef, instructions: UploadInstructions, data: bytes) -> None:
        # In-process moto cannot receive an HTTP form: put what the form would have put.
        assert instructions.fields["key"] == s3_storage.staged_key(ref.key)
        s3_storage.client.put_object(
            Bucket=s3_storage.bucket,
            Key=instructions.fields["key"],
            Body=data,
            ContentType=instructions.fields["Content-Type"],
        )

    def fetch(url: str) -> bytes:
        # moto in-process answers `requests` calls to AWS hosts too.
        return requests.get(url, timeout=5).content

    def break_provider() -> CloudStorageService:
        with override_settings(AWS_STORAGE_BUCKET_NAME="bucket-that-does-not-exist"):
            return CloudStorageFactory.for_provider("s3")

    return Harness(s3_storage, upload, fetch, break_provider)


def _cloudinary_harness(handle: Any) -> Harness:
    def upload(ref: ObjectRef, instructions: UploadInstructions, data: bytes) -> None:
        answer = requests.post(
            instructions.url,
            data=instructions.fields,
            files={"file": ("upload.bin", data, ref.content_type)},
            timeout=5,
        )
        assert answer.status_code == 200, answer.text

    def fetch(url: str) -> bytes:
        return requests.get(url, timeout=5).content

    def break_provider() -> CloudStorageService:
        handle.standin.fail_with = 500
        return handle.service  # type: ignore[no-any-return]

    return Harness(handle.service, upload, fetch, break_provider)


def _memory_harness() -> Harness:
    service = InMemoryStorageService(name="memory")

    def upload(ref: ObjectRef, instructions: UploadInstructions, data: bytes) -> None:
        service.accept_upload(instructions, data)

    def fetch(url: str) -> bytes:
        key = url.split(f"memory://{service.name}/", 1)[1].split("?", 1)[0]
        return service.read_head(ObjectRef(key), 10**9) or b""

    def break_provider() -> CloudStorageService:
        service.available = False
        return service

    return Harness(service, upload, fetch, break_provider)


@pytest.fixture(params=["s3", "cloudinary", "memory"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "s3":
        yield _s3_harness(request.getfixturevalue("s3_storage"))
    elif request.param == "cloudinary":
        yield _cloudinary_harness(request.getfixturevalue("cloudinary_standin"))
    else:
        yield _memory_harness()


def new_ref(content_type: str = "image/png", prefix: str = "uploads/7") -> ObjectRef:
    return ObjectRef(key=f"{prefix}/{uuid.uuid4().hex}/picture", content_type=content_type)


def put(harness: Harness, ref: ObjectRef, data: bytes = PNG) -> None:
    instructions = harness.service.presign_upload(
        ref, size=len(data), max_size=10_000, expires_in=600
    )
    harness.upload(ref, instructions, data)
    # What the client wrote becomes the object at the final key (S3: a copy from staging).
    assert harness.service.promote(ref).ref == ref


def test_presign_shape(harness: Harness) -> None:
    ref = new_ref()
    before = datetime.now(UTC)
    instructions = harness.service.presign_upload(ref, size=70, max_size=1000, expires_in=600)

    assert instructions.method == "POST"
    assert instructions.url.startswith(("https://", "http://", "memory://"))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in instructions.fields.items())
    assert isinstance(instructions.headers, dict)
    # The server-chosen key (staged where the provider stages) is pinned in what the client
    # must send.
    assert harness.service.staged_key(ref.key) in instructions.fields.values()
    assert harness.service.final_key(harness.service.staged_key(ref.key)) == ref.key
    assert before + timedelta(seconds=590) <= instructions.expires_at
    # expires_at is when the provider really stops accepting the instructions: what was asked
    # (S3 presigns for exactly that), or Cloudinary's fixed hour for signed parameters.
    lifetime = 3600 if harness.service.name == "cloudinary" else 600
    assert instructions.expires_at <= before + timedelta(seconds=lifetime + 1)
    dumped = repr(instructions.as_dict())
    assert not any(secret in dumped for secret in SECRETS)


def test_upload_then_inspect(harness: Harness) -> None:
    ref = new_ref()
    put(harness, ref)

    stored = harness.service.inspect(ref)

    assert stored.exists is True
    assert stored.key == ref.key
    assert stored.size == len(PNG)
    assert (stored.content_type or "").startswith("image/png")
    assert stored.etag


def test_inspect_missing_is_a_value(harness: Harness) -> None:
    stored = harness.service.inspect(new_ref())
    assert stored.exists is False
    assert stored.size is None


def test_read_head(harness: Harness) -> None:
    ref = new_ref()
    put(harness, ref)

    assert harness.service.read_head(ref, 8) == PNG[:8]
    assert harness.service.read_head(ref, 10_000) == PNG
    assert harness.service.read_head(new_ref(), 8) is None


def test_inspect_with_head_describes_one_version(harness: Harness) -> None:
    """Facts and first bytes come together, and the size is the whole object's, not the
    length of the range that was read."""
    ref = new_ref()
    put(harness, ref)

    stored, head = harness.service.inspect_with_head(ref, 8)

    assert head == PNG[:8]
    assert stored.exists is True
    assert stored.size == len(PNG)
    assert (stored.content_type or "").startswith("image/png")
    assert stored.etag == harness.service.inspect(ref).etag

    whole_stored, whole = harness.service.inspect_with_head(ref, 10_000)
    assert whole == PNG
    assert whole_stored.size == len(PNG)

    missing, nothing = harness.service.inspect_with_head(new_ref(), 8)
    assert missing.exists is False
    assert nothing is None


def test_delete_many_counts_missing_keys_as_deleted(harness: Harness) -> None:
    present, missing = new_ref(), new_ref()
    put(harness, present)

    result = harness.service.delete_many([present, missing])

    assert sorted(result.deleted) == sorted([present.key, missing.key])
    assert result.failed == {}
    assert harness.service.inspect(present).exists is False
    assert harness.service.delete(present) is True  # deleting again is still success


def test_delete_many_refuses_more_than_one_batch(harness: Harness) -> None:
    too_many = [new_ref() for _ in range(harness.service.delete_batch_size + 1)]
    with pytest.raises(ValueError, match="at most"):
        harness.service.delete_many(too_many)


def test_list_pages_through_a_prefix(harness: Harness) -> None:
    prefix = f"uploads/list-{uuid.uuid4().hex[:8]}"
    refs = [new_ref(prefix=prefix) for _ in range(5)]
    for ref in refs:
        put(harness, ref)
    put(harness, new_ref(prefix="uploads/elsewhere"))

    first = harness.service.list_objects(prefix, page_size=2)
    listed = list(harness.service.iter_objects(prefix, page_size=2))

    assert len(first.objects) <= 2
    assert first.next_token
    assert sorted(item.ref.key for item in listed) == sorted(ref.key for ref in refs)
    assert all(item.size == len(PNG) for item in listed)
    assert all(item.last_modified.tzinfo is not None for item in listed)


def test_download_url_serves_the_object(harness: Harness) -> None:
    ref = new_ref()
    put(harness, ref)

    url = harness.service.download_url(ref, expires_in=60)

    assert harness.fetch(url) == PNG


def test_probe_ok(harness: Harness) -> None:
    result = harness.service.probe()
    assert result.ok is True
    assert result.error is None
    assert result.latency_ms >= 0


def test_provider_failure_is_provider_unavailable(harness: Harness) -> None:
    broken = harness.break_provider()

    with pytest.raises(ProviderUnavailable) as caught:
        broken.list_objects("uploads/")
    with pytest.raises(ProviderUnavailable):
        broken.delete_many([new_ref()])
    probe = broken.probe()

    assert caught.value.status_code == 503
    assert caught.value.details["provider"] in (broken.name,)
    assert probe.ok is False
    assert probe.error
    assert not any(secret in probe.error + caught.value.message for secret in SECRETS)
