"""Shared helpers for the upload service/API tests (no tests here)."""

from __future__ import annotations

from typing import Any

from backend.storage.base import ObjectRef
from backend.uploads.models import MediaUpload

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


def png_bytes(size: int) -> bytes:
    """A PNG signature padded to exactly `size` bytes (enough for the sniff check)."""
    assert size >= len(PNG)
    return PNG + b"\x00" * (size - len(PNG))


def store(service: Any, row: MediaUpload, data: bytes, content_type: str | None = None) -> None:
    """Put bytes where the row's instructions would have put them (in-memory fake)."""
    service.put(ObjectRef(row.key, row.content_type), data, content_type or row.content_type)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]
