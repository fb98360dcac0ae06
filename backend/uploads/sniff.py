"""Magic-number check of an object's first bytes against its declared content type.

The declared type is what the provider will serve the object as. A file declared `image/png`
whose bytes are HTML is the classic stored-XSS vector (S3 and moto accept it happily), so
confirm reads the first bytes back and refuses a mismatch. For declared types we have no
signature for, only obvious HTML/script is refused.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from backend.storage.base import media_type

SNIFF_LENGTH = 512

# Markers of content a browser would render as a page or execute. Checked after a BOM and
# leading whitespace are stripped and the bytes lower-cased.
_HTML_MARKERS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<svg",
    b"<?xml",
    b"<!--",
    b"<meta",
    b"<style",
    b"<object",
    b"<embed",
)
# Anywhere in the first bytes (an SVG's script may follow a long header).
_SCRIPT_ANYWHERE = (b"<script",)


def _strip_preamble(head: bytes) -> bytes:
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    return head.lstrip(b" \t\r\n\x0c").lower()


def looks_like_markup(head: bytes) -> bool:
    """True for bytes a browser would treat as HTML/SVG/XML or script."""
    body = _strip_preamble(head)
    if body.replace(b"\x00", b"").startswith(_HTML_MARKERS):  # UTF-16 markup too
        return True
    lowered = head.lower()
    return any(marker in lowered for marker in _SCRIPT_ANYWHERE)


def _is_jpeg(h: bytes) -> bool:
    return h.startswith(b"\xff\xd8\xff")


def _is_png(h: bytes) -> bool:
    return h.startswith(b"\x89PNG\r\n\x1a\n")


def _is_gif(h: bytes) -> bool:
    return h[:6] in (b"GIF87a", b"GIF89a")


def _is_webp(h: bytes) -> bool:
    return h[:4] == b"RIFF" and h[8:12] == b"WEBP"


def _is_pdf(h: bytes) -> bool:
    # Readers accept the header anywhere in the first KiB; we only see SNIFF_LENGTH of it.
    return b"%PDF-" in h[:1024]


def _is_iso_bmff(h: bytes) -> bool:
    """MP4 / MOV / M4V / 3GP / HEIC / AVIF: an `ftyp` box first."""
    return h[4:8] == b"ftyp"


def _is_quicktime(h: bytes) -> bool:
    # Old QuickTime files may start with another top-level atom instead of `ftyp`.
    return _is_iso_bmff(h) or h[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def _is_zip(h: bytes) -> bool:
    return h[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def _is_bmp(h: bytes) -> bool:
    return h[:2] == b"BM"


def _is_tiff(h: bytes) -> bool:
    return h[:4] in (b"II*\x00", b"MM\x00*")


def _is_webm(h: bytes) -> bool:
    return h[:4] == b"\x1a\x45\xdf\xa3"


def _is_text(h: bytes) -> bool:
    if b"\x00" in h:
        return False
    # The head may end inside a multi-byte character: an incremental decoder with
    # final=False accepts a truncated tail but still rejects invalid sequences.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(h, final=False)
    except UnicodeDecodeError:
        return False
    return True


_Check = Callable[[bytes], bool]

# declared type -> (what we expect, check)
SIGNATURES: dict[str, tuple[str, _Check]] = {
    "image/jpeg": ("JPEG", _is_jpeg),
    "image/pjpeg": ("JPEG", _is_jpeg),
    "image/png": ("PNG", _is_png),
    "image/gif": ("GIF", _is_gif),
    "image/webp": ("WebP", _is_webp),
    "image/bmp": ("BMP", _is_bmp),
    "image/tiff": ("TIFF", _is_tiff),
    "image/heic": ("HEIF (ftyp)", _is_iso_bmff),
    "image/heif": ("HEIF (ftyp)", _is_iso_bmff),
    "image/avif": ("AVIF (ftyp)", _is_iso_bmff),
    "application/pdf": ("PDF", _is_pdf),
    "video/mp4": ("MP4 (ftyp)", _is_iso_bmff),
    "video/x-m4v": ("MP4 (ftyp)", _is_iso_bmff),
    "audio/mp4": ("MP4 audio (ftyp)", _is_iso_bmff),
    "video/3gpp": ("3GP (ftyp)", _is_iso_bmff),
    "video/quicktime": ("QuickTime", _is_quicktime),
    "video/webm": ("WebM", _is_webm),
    "application/zip": ("ZIP", _is_zip),
    "application/x-zip-compressed": ("ZIP", _is_zip),
    "application/epub+zip": ("ZIP (EPUB)", _is_zip),
    "text/plain": ("UTF-8 text without NUL bytes", _is_text),
    "text/csv": ("UTF-8 text without NUL bytes", _is_text),
    "text/markdown": ("UTF-8 text without NUL bytes", _is_text),
}
_ZIP_FAMILIES = ("application/vnd.openxmlformats-", "application/vnd.oasis.opendocument.")


def normalise_content_type(value: str) -> str:
    """ "Image/PNG; charset=binary" -> "image/png" (the storage contract's `media_type`)."""
    return media_type(value)


def mismatch_reason(declared: str, head: bytes) -> str | None:
    """Why `head` cannot be a `declared` file, or None when it is consistent."""
    declared = normalise_content_type(declared)
    if not head:
        return "the stored object is empty"
    known = SIGNATURES.get(declared)
    if known is None and declared.startswith(_ZIP_FAMILIES):
        known = ("ZIP (office document)", _is_zip)
    if known is not None:
        expected, check = known
        if not check(head):
            return f"declared {declared} but the first bytes are not {expected}"
        # Text that happens to contain markup stays acceptable: it is served as text/plain
        # with nosniff, which no browser renders.
        return None
    if looks_like_markup(head):
        return f"declared {declared} but the content is HTML/SVG/script markup"
    return None
