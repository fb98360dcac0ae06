"""Reads of `MediaUpload`. Writes live in `backend.uploads.services` only."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from backend.core.errors import NotFound, ValidationFailed
from backend.uploads.models import MediaUpload, UploadStatus


def parse_upload_id(upload_id: object) -> uuid.UUID | None:
    if isinstance(upload_id, uuid.UUID):
        return upload_id
    try:
        return uuid.UUID(str(upload_id))
    except (TypeError, ValueError):
        return None


def get_upload_for_owner(owner: Any, upload_id: object) -> MediaUpload:
    """The owner's upload; someone else's (or a malformed id) is indistinguishable from a
    missing one, so ids cannot be probed."""
    parsed = parse_upload_id(upload_id)
    if parsed is None or owner is None or not getattr(owner, "pk", None):
        raise NotFound("No upload with this id.", code="not_found")
    try:
        return MediaUpload.objects.get(pk=parsed, owner_id=owner.pk)
    except MediaUpload.DoesNotExist:
        raise NotFound("No upload with this id.", code="not_found") from None


def get_upload_by_key(provider: str, key: str) -> MediaUpload | None:
    return MediaUpload.objects.filter(provider=provider, key=key).first()


def list_uploads_for_owner(owner: Any, status: str | None = None) -> QuerySet[MediaUpload]:
    qs = MediaUpload.objects.filter(owner_id=owner.pk)
    if status:
        if status not in UploadStatus.values:
            raise ValidationFailed(
                f"Unknown status {status!r}.",
                code="invalid_status",
                details={"allowed": list(UploadStatus.values)},
            )
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def get_multipart_upload_for_owner(owner: Any, *, key: str, upload_id: str) -> MediaUpload:
    """The owner's multipart upload named the way Uppy names it: (S3 UploadId, key).

    Both must match one row of this owner; anything else is 404, like someone else's upload."""
    if owner is None or not getattr(owner, "pk", None) or not key or not upload_id:
        raise NotFound("No multipart upload with this uploadId and key.", code="not_found")
    row = MediaUpload.objects.filter(
        owner_id=owner.pk, key=key, multipart_upload_id=upload_id
    ).first()
    if row is None:
        raise NotFound("No multipart upload with this uploadId and key.", code="not_found")
    return row
