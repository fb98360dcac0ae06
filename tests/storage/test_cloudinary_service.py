"""CloudinaryService specifics: signing (documented vectors), confirm and notification checks,
settings isolation, the delivery-URL reads, and the stand-in's own Cloudinary behaviour."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import cloudinary
import pytest
import requests
from django.test import override_settings
from freezegun import freeze_time

from backend.core.errors import ProviderUnavailable
from backend.storage.base import ConfirmationRejected, ObjectRef
from backend.storage.cloudinary import CloudinaryService, resource_type_for
from backend.storage.factory import CloudStorageFactory
from backend.storage.provider_settings import CloudinarySettings
from tests.fixtures.providers import (
    CLOUDINARY_TEST_CLOUD,
    CLOUDINARY_TEST_KEY,
    CLOUDINARY_TEST_SECRET,
)
from tests.storage.test_contract import PNG

# Cloudinary's documented example (authentication signatures page).
VECTOR_PARAMS = {
    "eager": "w_400,h_300,c_pad|w_260,h_200,c_crop",
    "public_id": "sample_image",
    "timestamp": "1315060510",
}
VECTOR_SHA1 = "bfd09f95f331f558cbd1320e67aa8d488770583e"
VECTOR_STRING = (
    "eager=w_400,h_300,c_pad|w_260,h_200,c_crop&public_id=sample_image&timestamp=1315060510"
)


def service_with(secret: str = "abcd", algorithm: str = "sha1") -> CloudinaryService:
    return CloudinaryService(
        CloudinarySettings(
            cloud_name="demo", api_key="1234", api_secret=secret, signature_algorithm=algorithm
        )
    )


def upload(handle, ref: ObjectRef, data: bytes = PNG, **presign) -> requests.Response:
    instructions = handle.service.presign_upload(
        ref, size=len(data), max_size=10_000, expires_in=600, **presign
    )
    return requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("f.bin", data, ref.content_type)},
        timeout=5,
    )


def test_documented_signature_vector_sha1() -> None:
    assert service_with().sign(VECTOR_PARAMS) == VECTOR_SHA1


def test_signature_vector_sha256() -> None:
    expected = hashlib.sha256((VECTOR_STRING + "abcd").encode()).hexdigest()
    assert service_with(algorithm="sha256").sign(VECTOR_PARAMS) == expected


def test_presign_fields_are_exactly_the_signed_params() -> None:
    service = service_with(secret="very-secret-value")
    ref = ObjectRef("uploads/9/abc/holiday", "image/jpeg")

    with freeze_time("2030-01-01T00:00:00Z"):
        instructions = service.presign_upload(
            ref,
            size=10,
            max_size=10,
            expires_in=900,
            notification_url="https://app.example.com/api/v1/webhooks/cloudinary/",
        )
    timestamp = str(int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()))
    signed = {
        "notification_url": "https://app.example.com/api/v1/webhooks/cloudinary/",
        "overwrite": "false",
        "public_id": ref.key,
        "timestamp": timestamp,
        "type": "authenticated",
        "allowed_formats": "jpg",
    }
    string_to_sign = "&".join(f"{k}={v}" for k, v in sorted(signed.items()))

    assert instructions.url == "https://api.cloudinary.com/v1_1/demo/image/upload"
    assert instructions.fields == {
        **signed,
        "api_key": "1234",
        "signature": hashlib.sha1((string_to_sign + "very-secret-value").encode()).hexdigest(),
    }
    assert "very-secret-value" not in json.dumps(instructions.as_dict())
    # Cloudinary honours signed parameters for an hour, whatever expires_in asked for.
    assert instructions.expires_at == datetime(2030, 1, 1, 1, 0, tzinfo=UTC)


def test_presign_expiry_is_the_signature_lifetime_and_no_notification_url() -> None:
    with freeze_time("2030-01-01T00:00:00Z"):
        instructions = service_with().presign_upload(
            ObjectRef("uploads/1/a/doc.pdf", "application/pdf"),
            size=1,
            max_size=1,
            expires_in=10_000,
        )
    assert instructions.expires_at == datetime(2030, 1, 1, 1, 0, tzinfo=UTC)
    assert instructions.url.endswith("/raw/upload")
    # Raw: no allowed_formats (the format is the public_id's extension, which we choose).
    assert set(instructions.fields) == {
        "timestamp",
        "public_id",
        "overwrite",
        "type",
        "api_key",
        "signature",
    }


@pytest.mark.parametrize(
    ("content_type", "resource_type"),
    [
        ("image/png", "image"),
        ("image/svg+xml", "image"),
        ("video/mp4", "video"),
        ("audio/mpeg", "video"),
        ("application/pdf", "raw"),
        ("text/plain", "raw"),
    ],
)
def test_resource_type_for(content_type: str, resource_type: str) -> None:
    assert resource_type_for(content_type) == resource_type


def test_upload_response_verifies_and_sets_version(cloudinary_standin) -> None:
    ref = ObjectRef("uploads/2/abc/cat", "image/png")
    answer = upload(cloudinary_standin, ref)
    assert answer.status_code == 200, answer.text
    payload = answer.json()

    verified = cloudinary_standin.service.verify_confirmation(ref, payload)

    assert verified == ObjectRef(ref.key, "image/png", version=str(payload["version"]))
    assert (payload["width"], payload["height"], payload["format"]) == (1, 1, "png")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"public_id": "uploads/2/other/cat"}, "public_id does not match"),
        ({"version": 1}, "does not verify"),
        ({"signature": "0" * 40}, "does not verify"),
        ({"signature": None}, "signature is missing"),
        ({"version": None}, "version is missing"),
        ({"version": "12a"}, "version is malformed"),
    ],
)
def test_tampered_upload_response_is_rejected(cloudinary_standin, change, reason) -> None:
    ref = ObjectRef("uploads/2/abc/cat", "image/png")
    payload = upload(cloudinary_standin, ref).json()
    payload.update(change)

    with pytest.raises(ConfirmationRejected, match=reason):
        cloudinary_standin.service.verify_confirmation(ref, payload)


def test_response_signed_with_another_secret_is_rejected(cloudinary_standin) -> None:
    ref = ObjectRef("uploads/2/abc/cat", "image/png")
    payload = upload(cloudinary_standin, ref).json()
    forged = service_with(secret="attacker").sign(
        {"public_id": ref.key, "version": payload["version"]}, signature_version=1
    )
    with pytest.raises(ConfirmationRejected):
        cloudinary_standin.service.verify_confirmation(ref, {**payload, "signature": forged})


def test_stand_in_refuses_bad_and_stale_signatures(cloudinary_standin) -> None:
    service = cloudinary_standin.service
    ref = ObjectRef("uploads/2/abc/dog", "image/png")
    instructions = service.presign_upload(ref, size=len(PNG), max_size=1000, expires_in=600)
    tampered = {**instructions.fields, "public_id": "uploads/2/abc/somewhere-else"}
    bad = requests.post(instructions.url, data=tampered, files={"file": PNG}, timeout=5)
    # Correctly signed, but more than an hour old.
    old = {"public_id": ref.key, "timestamp": str(int(time.time()) - 3700)}
    stale_fields = {**old, "api_key": CLOUDINARY_TEST_KEY, "signature": service.sign(old)}
    stale = requests.post(instructions.url, data=stale_fields, files={"file": PNG}, timeout=5)

    assert bad.status_code == 400 and "Invalid Signature" in bad.json()["error"]["message"]
    assert stale.status_code == 400 and "Stale request" in stale.json()["error"]["message"]
    assert cloudinary_standin.objects == {}


def test_overwrite_false_is_signed_so_a_client_cannot_drop_or_flip_it(cloudinary_standin) -> None:
    ref = ObjectRef("uploads/2/abc/pinned", "image/png")
    instructions = cloudinary_standin.service.presign_upload(
        ref, size=len(PNG), max_size=len(PNG), expires_in=600
    )
    assert instructions.fields["overwrite"] == "false"
    flipped = {**instructions.fields, "overwrite": "true"}
    dropped = {k: v for k, v in instructions.fields.items() if k != "overwrite"}
    for fields in (flipped, dropped):
        answer = requests.post(instructions.url, data=fields, files={"file": PNG}, timeout=5)
        assert answer.status_code == 400 and "Invalid Signature" in answer.text
    assert cloudinary_standin.objects == {}


def test_second_upload_with_the_same_params_returns_the_existing_asset(
    cloudinary_standin,
) -> None:
    ref = ObjectRef("uploads/2/abc/once", "image/png")
    instructions = cloudinary_standin.service.presign_upload(
        ref, size=len(PNG), max_size=len(PNG), expires_in=600
    )
    other_png = PNG[:-12] + b"\x00" * 12  # still starts like a PNG
    first = requests.post(
        instructions.url, data=instructions.fields, files={"file": PNG}, timeout=5
    )
    second = requests.post(
        instructions.url, data=instructions.fields, files={"file": other_png}, timeout=5
    )

    assert first.status_code == second.status_code == 200
    assert "existing" not in first.json()
    assert second.json()["existing"] is True
    for name in ("public_id", "version", "bytes", "etag", "signature"):
        assert second.json()[name] == first.json()[name]
    assert [asset.data for asset in cloudinary_standin.objects.values()] == [PNG]
    assert len(cloudinary_standin.standin.notifications) == 0


def test_stand_in_overwrites_by_default_like_cloudinary(cloudinary_standin) -> None:
    service = cloudinary_standin.service
    ref = ObjectRef("uploads/2/abc/default", "text/plain")
    params = {"public_id": ref.key, "timestamp": str(int(time.time()))}
    fields = {**params, "api_key": CLOUDINARY_TEST_KEY, "signature": service.sign(params)}
    url = service.presign_upload(ref, size=1, max_size=1, expires_in=60).url
    for body in (b"first", b"second"):
        answer = requests.post(url, data=fields, files={"file": body}, timeout=5)
        assert answer.status_code == 200 and "existing" not in answer.json()
    assert [asset.data for asset in cloudinary_standin.objects.values()] == [b"second"]


def test_stand_in_refuses_non_image_bytes_as_image(cloudinary_standin) -> None:
    answer = upload(cloudinary_standin, ObjectRef("uploads/2/abc/fake", "image/png"), b"not png")
    assert answer.status_code == 400
    assert answer.json() == {"error": {"message": "Invalid image file"}}


def test_sha256_account_end_to_end(cloudinary_standin) -> None:
    cloudinary_standin.standin.signature_algorithm = "sha256"
    with override_settings(CLOUDINARY_SIGNATURE_ALGORITHM="sha256"):
        service = CloudStorageFactory.for_provider("cloudinary")
        ref = ObjectRef("uploads/5/abc/notes.txt", "text/plain")
        instructions = service.presign_upload(ref, size=5, max_size=5, expires_in=60)
        answer = requests.post(
            instructions.url, data=instructions.fields, files={"file": b"hello"}, timeout=5
        )
        payload = answer.json()
        verified = service.verify_confirmation(ref, payload)

    assert len(instructions.fields["signature"]) == 64
    assert answer.status_code == 200
    assert verified.version == str(payload["version"])
    assert service.inspect(verified).size == 5


def test_inspect_and_read_head_use_delivery_urls_not_the_admin_api(cloudinary_standin) -> None:
    ref = ObjectRef("uploads/6/abc/readme.txt", "text/plain")
    version = upload(cloudinary_standin, ref, b"hello world").json()["version"]
    verified = ObjectRef(ref.key, ref.content_type, version=str(version))

    stored = cloudinary_standin.service.inspect(verified)
    head = cloudinary_standin.service.read_head(verified, 5)

    # The unsigned location (refused for an authenticated asset), never a signed URL.
    assert stored.url == (
        f"{cloudinary_standin.url}/{CLOUDINARY_TEST_CLOUD}/raw/authenticated/v{version}/{ref.key}"
    )
    assert requests.get(stored.url, timeout=5).status_code == 401
    assert (stored.size, stored.content_type, stored.version) == (11, "text/plain", str(version))
    assert head == b"hello"
    assert cloudinary_standin.standin.admin_calls == []


def test_sizes_are_of_the_stored_bytes_even_when_the_cdn_compresses_text(
    cloudinary_standin,
) -> None:
    """A CDN may gzip text for clients that accept it; the lengths would then describe the
    compressed bytes and a genuine upload would fail its size check."""
    ref = ObjectRef("uploads/6/abc/notes.txt", "text/plain")
    text = b"hello world, " * 200
    version = upload(cloudinary_standin, ref, text).json()["version"]
    verified = ObjectRef(ref.key, ref.content_type, version=str(version))
    compressed = requests.get(
        cloudinary_standin.service.delivery_url(verified, signed=True),
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=5,
    )
    assert compressed.headers["Content-Encoding"] == "gzip"  # the stand-in does compress
    assert int(compressed.headers["Content-Length"]) < len(text)

    assert cloudinary_standin.service.inspect(verified).size == len(text)
    stored, head = cloudinary_standin.service.inspect_with_head(verified, 5)
    assert (stored.size, head) == (len(text), b"hello")


def test_delete_groups_by_resource_type(cloudinary_standin) -> None:
    image = ObjectRef("uploads/8/abc/pic", "image/png")
    raw = ObjectRef("uploads/8/abc/doc.txt", "text/plain")
    upload(cloudinary_standin, image)
    upload(cloudinary_standin, raw, b"text")

    result = cloudinary_standin.service.delete_many([image, raw])

    assert sorted(result.deleted) == sorted([image.key, raw.key])
    assert cloudinary_standin.objects == {}
    assert [method for method, _ in cloudinary_standin.standin.admin_calls] == ["DELETE"] * 2


def test_outage_is_provider_unavailable(cloudinary_standin) -> None:
    cloudinary_standin.standin.fail_with = 503
    ref = ObjectRef("uploads/8/abc/pic", "image/png")
    with pytest.raises(ProviderUnavailable, match="Cloudinary delivery HEAD answered 503"):
        cloudinary_standin.service.inspect(ref)
    with pytest.raises(ProviderUnavailable):
        cloudinary_standin.service.read_head(ref)


def test_signed_notification_from_stand_in_verifies(cloudinary_standin) -> None:
    ref = ObjectRef("uploads/3/abc/pic", "image/png")
    upload(cloudinary_standin, ref, notification_url="http://127.0.0.1:9/never-listening")
    note = cloudinary_standin.standin.notifications[0]

    assert json.loads(note.body)["public_id"] == ref.key
    assert cloudinary_standin.service.verify_notification(note.body, note.timestamp, note.signature)
    assert not cloudinary_standin.service.verify_notification(
        note.body + b" ", note.timestamp, note.signature
    )


class TestVerifyNotification:
    body = b'{"notification_type":"upload","public_id":"uploads/1/a/b"}'

    def signed(self, timestamp: str, secret: str = "abcd", algorithm: str = "sha1") -> str:
        return hashlib.new(algorithm, self.body + timestamp.encode() + secret.encode()).hexdigest()

    def test_valid(self) -> None:
        now = int(time.time())
        assert service_with().verify_notification(self.body, str(now), self.signed(str(now)))

    def test_sha256(self) -> None:
        sig = self.signed("1000", algorithm="sha256")
        assert service_with(algorithm="sha256").verify_notification(
            self.body, "1000", sig, now=1000
        )
        assert not service_with().verify_notification(self.body, "1000", sig, now=1000)

    @pytest.mark.parametrize("offset", [-601, 601, 100_000])
    def test_outside_the_window_both_sides(self, offset: int, settings) -> None:
        settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = 600
        timestamp = str(10_000 + offset)
        assert not service_with().verify_notification(
            self.body, timestamp, self.signed(timestamp), now=10_000
        )

    def test_edge_of_window_accepted(self, settings) -> None:
        settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = 600
        assert service_with().verify_notification(
            self.body, "10600", self.signed("10600"), now=10_000
        )

    @pytest.mark.parametrize("signature", ["", "zz", "é" * 40, "0" * 40])
    def test_wrong_signatures(self, signature: str) -> None:
        assert not service_with().verify_notification(self.body, "10", signature, now=10)

    def test_wrong_secret_and_bad_timestamp(self) -> None:
        assert not service_with().verify_notification(
            self.body, "10", self.signed("10", secret="other"), now=10
        )
        assert not service_with().verify_notification(self.body, "soon", "00", now=10)


def test_two_configurations_do_not_leak_into_each_other() -> None:
    global_before = (cloudinary.config().api_secret, cloudinary.config().cloud_name)
    first, second = service_with(secret="one"), service_with(secret="two")

    assert first.sign({"public_id": "x"}) != second.sign({"public_id": "x"})
    assert "/demo/" in first.delivery_url(ObjectRef("uploads/a", "image/png"))
    assert (cloudinary.config().api_secret, cloudinary.config().cloud_name) == global_before


def test_credentials_from_cloudinary_url() -> None:
    with override_settings(
        CLOUDINARY_URL=f"cloudinary://{CLOUDINARY_TEST_KEY}:{CLOUDINARY_TEST_SECRET}@My-Cloud",
        CLOUDINARY_CLOUD_NAME="",
        CLOUDINARY_API_KEY="",
        CLOUDINARY_API_SECRET="",
    ):
        cfg = CloudinarySettings.from_django()
    assert (cfg.cloud_name, cfg.api_key, cfg.api_secret) == (
        "My-Cloud",
        CLOUDINARY_TEST_KEY,
        CLOUDINARY_TEST_SECRET,
    )
    assert CLOUDINARY_TEST_SECRET not in repr(cfg)


def test_admin_api_error_text_stays_in_the_server_log(
    cloudinary_standin, monkeypatch, caplog
) -> None:
    import cloudinary.api
    import cloudinary.exceptions

    said = f"Invalid api_key {CLOUDINARY_TEST_KEY} for cloud {CLOUDINARY_TEST_CLOUD}"

    def refuse(**kwargs: object) -> object:
        raise cloudinary.exceptions.AuthorizationRequired(said)

    monkeypatch.setattr(cloudinary.api, "resources", refuse)
    with pytest.raises(ProviderUnavailable) as caught:
        cloudinary_standin.service.list_objects("uploads/")
    assert (
        caught.value.message == "Cloudinary list_objects (resources) is unavailable; retry later."
    )
    assert caught.value.details == {
        "provider": "cloudinary",
        "operation": "list_objects (resources)",
        "code": "AuthorizationRequired",
    }
    assert CLOUDINARY_TEST_KEY not in str(caught.value.details)
    assert any(said in record.getMessage() for record in caplog.records)


def test_cloudinary_resource_type() -> None:
    assert resource_type_for("image/png") == "image"
    assert resource_type_for("application/pdf") == "raw"
    assert resource_type_for("video/mp4") == "video"
    assert resource_type_for("text/plain") == "raw"


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("IMAGE/PNG; charset=binary", "png"),
        ("image/svg+xml", "svg"),
        ("video/mp4", "mp4"),
        ("audio/mpeg", "mp3"),
        # Not listed: its own subtype, so another format is still refused.
        ("image/x-portable-pixmap", "portable-pixmap"),
        # Raw: the format is the public_id's extension, which we choose.
        ("text/plain", ""),
        ("application/pdf", ""),
    ],
)
def test_allowed_formats_follow_the_declared_type(content_type: str, allowed: str) -> None:
    from backend.storage.cloudinary import allowed_formats_for

    assert allowed_formats_for(content_type) == allowed
    fields = (
        service_with()
        .presign_upload(ObjectRef("uploads/1/a/x", content_type), size=1, max_size=1, expires_in=60)
        .fields
    )
    assert fields.get("allowed_formats", "") == allowed
    assert fields["type"] == "authenticated"


def test_download_url_is_the_private_download_url_with_an_expiry() -> None:
    with freeze_time("2030-01-01T00:00:00Z"):
        url = service_with().download_url(
            ObjectRef("uploads/1/a/pic", "image/png", version="5"), expires_in=300
        )
    query = dict(parse_qsl(urlsplit(url).query))
    assert url.startswith("https://api.cloudinary.com/v1_1/demo/image/download?")
    assert query["expires_at"] == str(int(datetime(2030, 1, 1, 0, 5, tzinfo=UTC).timestamp()))
    assert query["type"] == "authenticated" and query["public_id"] == "uploads/1/a/pic"
    assert "attachment" not in query  # an image is shown inline
    assert query["signature"] and "secret" not in url
