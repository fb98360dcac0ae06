"""Magic-number checks of the first bytes against the declared content type."""

from __future__ import annotations

import pytest

from backend.uploads import sniff

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
GIF = b"GIF89a\x01\x00\x01\x00" + b"\x00" * 10
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 10
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
MOV = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  "
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>'


@pytest.mark.parametrize(
    ("declared", "head"),
    [
        ("image/png", PNG),
        ("image/jpeg", JPEG),
        ("IMAGE/JPEG; charset=binary", JPEG),
        ("image/gif", GIF),
        ("image/webp", WEBP),
        ("application/pdf", PDF),
        ("video/mp4", MP4),
        ("video/quicktime", MOV),
        ("application/zip", ZIP),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ZIP),
        ("text/plain", "héllo wörld\n".encode()),
        ("text/plain", "é".encode() * 255 + "é".encode()[:1]),  # cut inside a character
        ("application/octet-stream", b"\x00\x01\x02binary"),
        ("application/json", b'{"a": 1}'),
    ],
)
def test_consistent_heads_pass(declared: str, head: bytes) -> None:
    assert sniff.mismatch_reason(declared, head) is None


@pytest.mark.parametrize(
    ("declared", "head", "fragment"),
    [
        ("image/png", HTML, "not PNG"),
        ("image/png", JPEG, "not PNG"),
        ("image/jpeg", SVG, "not JPEG"),
        ("image/gif", PNG, "not GIF"),
        ("image/webp", b"RIFF\x24\x00\x00\x00WAVEfmt ", "not WebP"),
        ("application/pdf", HTML, "not PDF"),
        ("video/mp4", HTML, "not MP4"),
        ("application/zip", PDF, "not ZIP"),
        ("text/plain", b"abc\x00def", "not UTF-8 text"),
        ("text/plain", b"\xff\xfe\xfa invalid", "not UTF-8 text"),
        ("image/svg+xml", SVG, "markup"),
        ("image/x-icon", b"  \n<html><body>hi</body></html>", "markup"),
        ("application/octet-stream", b"\xef\xbb\xbf<script>alert(1)</script>", "markup"),
        ("image/png", b"", "empty"),
    ],
)
def test_mismatches_are_named(declared: str, head: bytes, fragment: str) -> None:
    reason = sniff.mismatch_reason(declared, head)
    assert reason is not None
    assert fragment in reason


def test_utf16_html_is_markup() -> None:
    assert sniff.looks_like_markup("<html><body>x".encode("utf-16"))


def test_normalise_content_type() -> None:
    assert sniff.normalise_content_type(" Text/Plain ; charset=UTF-8") == "text/plain"
