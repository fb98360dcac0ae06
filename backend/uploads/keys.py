"""Display-name sanitising and server-side key generation.

A client never chooses a key: it only supplies a display filename, which is cleaned here and
then reduced further to a conservative ASCII slug for the key itself. Keys look like
`<prefix>/<owner_id>/<uuid hex>/<name>`, so two uploads can never collide and reconciliation can
scan everything we issued under one prefix.
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from django.conf import settings

from backend.storage.base import ProviderCapabilities

MAX_DISPLAY_NAME_LENGTH = 100
MAX_KEY_NAME_LENGTH = 100
# Extensions longer than this are not treated as extensions (keeps "a.<100 chars>" from
# surviving truncation whole).
MAX_EXTENSION_LENGTH = 16
FALLBACK_NAME = "file"

_WHITESPACE = re.compile(r"\s+")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEY_DASHES = re.compile(r"-{2,}")


def _is_invisible(char: str) -> bool:
    # Cc: control characters incl. NUL; Cf: format characters, which include the bidi
    # overrides/isolates (U+202A-U+202E, U+2066-U+2069) that make "gpj.exe" render as
    # "exe.jpg", and zero-width characters that hide in names.
    return unicodedata.category(char) in {"Cc", "Cf"}


def split_extension(name: str) -> tuple[str, str]:
    """("photo", ".jpg") for "photo.jpg"; a leading dot alone is not an extension."""
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return name, ""
    ext = name[dot:]
    if len(ext) > MAX_EXTENSION_LENGTH or " " in ext:
        return name, ""
    return name[:dot], ext


def _truncate_keeping_extension(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    stem, ext = split_extension(name)
    return stem[: max(limit - len(ext), 1)].rstrip(" .-") + ext


def sanitise_filename(raw: str) -> str:
    """A safe display name: last path component, NFKC, no control/bidi characters, single
    spaces, at most 100 characters with the extension kept; "file" when nothing is left."""
    name = unicodedata.normalize("NFKC", raw or "")
    # A printable name has neither (both are Unicode's Cc/Cf, which isprintable refuses): the
    # character walks below are for the names that need them.
    if not name.isprintable():
        name = "".join(" " if ch in "\t\n\r\x0b\x0c" else ch for ch in name)
        name = "".join(ch for ch in name if not _is_invisible(ch))
    # NFKC turns fullwidth solidus and friends into "/" first, so this catches them too.
    name = name.rpartition("/")[2].rpartition("\\")[2]
    name = _WHITESPACE.sub(" ", name).strip(" .")
    name = _truncate_keeping_extension(name, MAX_DISPLAY_NAME_LENGTH)
    if not name or set(name) <= {"."}:
        return FALLBACK_NAME
    return name


def key_safe_name(display_name: str) -> str:
    """The ASCII slug used inside a key (S3 keys and Cloudinary public_ids both accept it)."""
    ascii_name = (
        unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode("ascii")
    )
    slug = _KEY_UNSAFE.sub("-", ascii_name.replace(" ", "-"))
    slug = _KEY_DASHES.sub("-", slug).rstrip(".-")
    # Split before trimming: "日本語.png" slugs to ".png", whose extension must survive.
    dot = slug.rfind(".")
    stem, ext = (slug[:dot], slug[dot:]) if 0 <= dot < len(slug) - 1 else (slug, "")
    if len(ext) > MAX_EXTENSION_LENGTH:
        stem, ext = slug, ""
    stem = stem.strip(".-")
    if not stem:
        stem = FALLBACK_NAME
    return _truncate_keeping_extension(stem + ext.lower(), MAX_KEY_NAME_LENGTH)


def build_key(
    *,
    owner_id: object,
    upload_id: uuid.UUID,
    display_name: str,
    content_type: str,
    capabilities: ProviderCapabilities,
) -> str:
    """`<prefix>/<owner_id>/<uuid hex>/<name>`.

    The name loses its extension where the provider's key rule says so
    (`capabilities.keeps_extension`: Cloudinary adds the format to image and video public_ids
    itself, and serves raw files with the type of the public_id's extension) and gets the one
    the declared type maps to instead (`capabilities.key_extension`), never the client's.
    """
    name = key_safe_name(display_name)
    if not capabilities.keeps_extension(content_type):
        stem, _ext = split_extension(name)
        name = stem + capabilities.key_extension(content_type)
    prefix = settings.UPLOAD_KEY_PREFIX
    parts = [prefix] if prefix else []
    parts += [str(owner_id), upload_id.hex, name]
    return "/".join(parts)
