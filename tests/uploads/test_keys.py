"""Display-name sanitising and server-side keys."""

from __future__ import annotations

import unicodedata
import uuid

import pytest
from django.test import override_settings

from backend.storage.cloudinary import CloudinaryService
from backend.storage.s3 import S3Service
from backend.uploads import keys

S3 = S3Service.capabilities
CLOUDINARY = CloudinaryService.capabilities


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("holiday.jpg", "holiday.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ("a\x00b.png", "ab.png"),
        ("photo\u202egpj.exe", "photogpj.exe"),  # right-to-left override removed
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("  my \t\n  file.png  ", "my file.png"),
        (
            "\uff46\uff4f\uff4f\uff0f\uff42\uff41\uff52.png",
            "bar.png",
        ),  # NFKC turns the fullwidth solidus into "/"
        ("", "file"),
        ("...", "file"),
        ("/", "file"),
        ("\x00\x01\u202e", "file"),
    ],
)
def test_sanitise_filename(raw: str, expected: str) -> None:
    assert keys.sanitise_filename(raw) == expected


def test_sanitise_limits_length_and_keeps_extension() -> None:
    name = keys.sanitise_filename("x" * 10_000 + ".jpeg")
    assert len(name) == keys.MAX_DISPLAY_NAME_LENGTH
    assert name.endswith(".jpeg")
    assert set(name[:-5]) == {"x"}


def test_sanitise_long_pseudo_extension_is_not_kept_whole() -> None:
    name = keys.sanitise_filename("a." + "b" * 500)
    assert len(name) == keys.MAX_DISPLAY_NAME_LENGTH


def test_sanitised_name_has_no_control_or_format_characters() -> None:
    hostile = "".join(chr(c) for c in range(0, 0x40)) + "\u202a\u202b\u202d\u2066\u2069\ufeff.png"
    name = keys.sanitise_filename(hostile)
    assert all(unicodedata.category(ch) not in {"Cc", "Cf"} for ch in name)
    assert "/" not in name and "\\" not in name
    assert name.endswith(".png")


def test_sanitise_normalises_to_nfkc() -> None:
    assert keys.sanitise_filename("ﬁle.txt") == "file.txt"  # ligature fi
    decomposed = "cafe\u0301.txt"
    assert keys.sanitise_filename(decomposed) == unicodedata.normalize("NFKC", decomposed)


def test_key_safe_name_is_ascii_slug() -> None:
    assert keys.key_safe_name("Ünïcode naïve café.JPG") == "Unicode-naive-cafe.jpg"
    assert keys.key_safe_name("a  b?#%&<>.png") == "a-b.png"
    assert keys.key_safe_name("日本語.png") == "file.png"


def test_build_key_s3_and_cloudinary() -> None:
    upload_id = uuid.UUID("3f1c7a52-9a7e-4c51-8d2e-6f0b2c1d9e11")
    common = {"owner_id": 42, "upload_id": upload_id, "display_name": "My Photo.JPG"}
    hexid = upload_id.hex
    assert (
        keys.build_key(**common, content_type="image/jpeg", capabilities=S3)
        == f"uploads/42/{hexid}/My-Photo.jpg"
    )
    # Cloudinary adds the format itself to image public_ids ...
    assert (
        keys.build_key(**common, content_type="image/jpeg", capabilities=CLOUDINARY)
        == f"uploads/42/{hexid}/My-Photo"
    )
    # ... while raw files get the declared type's extension, never the client's: Cloudinary
    # serves a raw file with the type its public_id's extension names.
    raw = {**common, "display_name": "notes.txt"}
    assert (
        keys.build_key(**raw, content_type="text/plain", capabilities=CLOUDINARY)
        == f"uploads/42/{hexid}/notes.txt"
    )
    page = {**common, "display_name": "page.html"}
    assert (
        keys.build_key(**page, content_type="text/plain", capabilities=CLOUDINARY)
        == f"uploads/42/{hexid}/page.txt"
    )
    assert (
        keys.build_key(**page, content_type="application/octet-stream", capabilities=CLOUDINARY)
        == f"uploads/42/{hexid}/page"
    )
    assert (
        keys.build_key(**page, content_type="text/html", capabilities=CLOUDINARY)
        == f"uploads/42/{hexid}/page"
    )
    # S3 sets the Content-Type itself, so its keys keep the name as given.
    assert (
        keys.build_key(**page, content_type="text/plain", capabilities=S3)
        == f"uploads/42/{hexid}/page.html"
    )


@override_settings(UPLOAD_KEY_PREFIX="media/in")
def test_build_key_uses_configured_prefix() -> None:
    key = keys.build_key(
        owner_id=1,
        upload_id=uuid.uuid4(),
        display_name="../x.png",
        content_type="image/png",
        capabilities=S3,
    )
    assert key.startswith("media/in/1/")
    assert key.endswith("/x.png")
    assert ".." not in key
