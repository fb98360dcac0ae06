"""The media upload service as Uppy's S3 plugin (@uppy/aws-s3, through Companion's contract or
its `signRequest` option) needs it: small functions over `services` and `multipart`.

Companion's contract speaks S3: a single request is an S3 POST form with the key in
`fields.key`, large files are S3 multipart uploads. So it is offered only while the active
provider has S3's multipart capability; otherwise the answer names the API that works.
"""

from __future__ import annotations

from typing import Any

from backend.core.errors import NotFound, NotSupported
from backend.storage.base import UploadInstructions
from backend.storage.factory import CloudStorageFactory
from backend.uploads import selectors, services
from backend.uploads.models import MediaUpload
from backend.uploads.services import multipart


def _require_s3_contract() -> None:
    service = CloudStorageFactory.active()
    if not service.supports_multipart:
        raise NotSupported(
            f"Uppy's S3 plugin needs a storage provider with S3's API; the active provider "
            f"({service.name}) has none. Use POST /api/v1/uploads/ instead.",
            code="s3_contract_not_supported",
            details={"provider": service.name},
        )


def create_single_upload(
    *, owner: Any, filename: str, content_type: str, size: int | None
) -> tuple[MediaUpload, UploadInstructions]:
    """`create_upload` for Uppy's single-request path (`size=None`: Uppy did not tell)."""
    _require_s3_contract()
    return services.create_upload(
        owner=owner, filename=filename, content_type=content_type, size=size
    )


def create_multipart_upload(
    *, owner: Any, filename: str, content_type: str, size: int | None
) -> MediaUpload:
    _require_s3_contract()
    return multipart.create_multipart_upload(
        owner=owner, filename=filename, content_type=content_type, size=size
    )


def get_upload_by_key(owner: Any, key: str) -> MediaUpload:
    """The owner's upload with this key (what Uppy 6 keeps of an upload: the staged key its
    POST form wrote, or a multipart upload's key); else 404."""
    row = selectors.get_owner_upload_by_key(owner, key)
    if row is None:
        raise NotFound("No upload with this key.", code="not_found")
    return row


def confirm_by_key(*, owner: Any, key: str) -> MediaUpload:
    """Confirm the owner's upload named by its key: the verified finalise for a single request;
    for a multipart upload that complete already finalised, the same row again (idempotent)."""
    row = get_upload_by_key(owner, key)
    return services.confirm_upload(owner=owner, upload_id=row.id, payload={})
