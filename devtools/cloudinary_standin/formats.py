"""Format detection from the bytes, the way Cloudinary decides an upload's `format`.

Cloudinary analyses the uploaded bytes, not the client's file name or Content-Type: the upload
response's `format` is the detected one, `resource_type=image` refuses bytes that are not an image
("Invalid image file"), and `allowed_formats` is checked against the detected format
(https://cloudinary.com/documentation/image_upload_api_reference#upload, parameter
`allowed_formats`). Raw files are not analysed: their format is their extension.

Detection here is by magic bytes over the first bytes of the file (HEAD_BYTES): enough for every
format below, including a JPEG's size marker in all but unusual files.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_BYTES = 256 * 1024

# Names Cloudinary treats as one format in `allowed_formats` (it reports JPEG as "jpg", TIFF as
# "tiff"); the documentation lists formats by their usual extension, so both spellings match.
FORMAT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "m4v": "mp4"}


@dataclass(frozen=True)
class Detected:
    """What the bytes are: Cloudinary's format name and its resource type ("image"/"video")."""

    format: str
    kind: str
    width: int | None = None
    height: int | None = None


def canonical_format(name: str) -> str:
    name = name.strip().lower().lstrip(".")
    return FORMAT_ALIASES.get(name, name)


def detect(head: bytes) -> Detected | None:
    """The image or video format of a file from its first bytes, or None (raw data)."""
    return _detect_image(head) or _detect_video(head)


def sniff_image(data: bytes) -> tuple[str, int | None, int | None] | None:
    """(format, width, height) when the bytes are an image Cloudinary accepts, else None."""
    found = _detect_image(data)
    return (found.format, found.width, found.height) if found else None


def _detect_image(data: bytes) -> Detected | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return Detected(
            "png", "image", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        )
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        gif_width = int.from_bytes(data[6:8], "little")
        return Detected("gif", "image", gif_width, int.from_bytes(data[8:10], "little"))
    if data.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return Detected("jpg", "image", width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Detected("webp", "image")
    if data.startswith(b"BM") and len(data) >= 26:
        return Detected(
            "bmp",
            "image",
            int.from_bytes(data[18:22], "little"),
            abs(int.from_bytes(data[22:26], "little", signed=True)),
        )
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return Detected("tiff", "image")
    if data[:4] == b"\x00\x00\x01\x00" and len(data) >= 6 and data[4:6] != b"\x00\x00":
        return Detected("ico", "image")
    # Cloudinary stores PDFs as images (one page each, `pages` in the answer).
    if data.startswith(b"%PDF-"):
        return Detected("pdf", "image")
    if _is_svg(data):
        return Detected("svg", "image")
    return None


def _is_svg(data: bytes) -> bool:
    # An SVG may open with a BOM, whitespace, an XML declaration, comments or a doctype before its
    # <svg> root: look past them rather than only at the first bytes, so SVG bytes posted under
    # another name are still recognised (and refused by allowed_formats).
    text = data[:8192].decode("latin-1").lstrip("\ufeff\xef\xbb\xbf \t\r\n").lower()
    if text.startswith("<svg"):
        return True
    return text.startswith(("<?xml", "<!--", "<!doctype")) and "<svg" in text


def _detect_video(data: bytes) -> Detected | None:
    # Audio is "video" in Cloudinary's resource types.
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand == b"qt  ":
            return Detected("mov", "video")
        if brand in (b"M4A ", b"M4B "):
            return Detected("m4a", "video")
        if brand.startswith(b"3g"):
            return Detected("3gp", "video")
        return Detected("mp4", "video")
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return Detected("webm" if b"webm" in data[:64] else "mkv", "video")
    if data.startswith(b"OggS"):
        return Detected("ogv" if b"theora" in data[:128].lower() else "ogg", "video")
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return Detected("avi", "video")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return Detected("wav", "video")
    if data.startswith(b"FLV\x01"):
        return Detected("flv", "video")
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xfa"):
        return Detected("mp3", "video")
    if data.startswith(b"fLaC"):
        return Detected("flac", "video")
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None, None
