"""Reads of `MediaUpload` and of what a row points at. Writes live in `backend.uploads.services`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db.models import QuerySet

from backend.core.errors import NotFound, ProviderUnavailable, StorageUnavailable, ValidationFailed
from backend.storage.factory import CloudStorageFactory
from backend.uploads.models import MediaUpload, UploadStatus

logger = logging.getLogger(__name__)

DOWNLOAD_URL_EXPIRY = 300


def parse_upload_id(upload_id: object) -> uuid.UUID | None:
    if isinstance(upload_id, uuid.UUID):
        return upload_id
    try:
        return uuid.UUID(str(upload_id))
    except (TypeError, ValueError):
        return None


def get_upload(upload_id: object) -> MediaUpload:
    """The upload with this id, whoever owns it (jobs and webhooks); NotFound otherwise."""
    parsed = parse_upload_id(upload_id)
    row = MediaUpload.objects.filter(pk=parsed).first() if parsed else None
    if row is None:
        raise NotFound("No upload with this id.")
    return row


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
    """The upload at `provider` whose object is at `key`, or was staged there (an event for a
    single upload's staged key names the row of its final key)."""
    return MediaUpload.objects.filter(provider=provider, key__in=_keys_for(provider, key)).first()


def _keys_for(provider: str, key: str) -> list[str]:
    try:
        final = CloudStorageFactory.for_provider(provider).final_key(key)
    except StorageUnavailable:
        final = key
    return list(dict.fromkeys([key, final]))


def get_owner_upload_by_key(owner: Any, key: str) -> MediaUpload | None:
    """The owner's upload whose final or staged key (what Uppy keeps) is `key`, at the active
    provider's key rule; None when there is none."""
    if owner is None or not getattr(owner, "pk", None) or not key:
        return None
    try:
        final = CloudStorageFactory.active().final_key(key)
    except StorageUnavailable:
        final = key
    keys = list(dict.fromkeys([key, final]))
    return MediaUpload.objects.filter(owner_id=owner.pk, key__in=keys).first()


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


def download_url_for(row: MediaUpload, *, expires_in: int = DOWNLOAD_URL_EXPIRY) -> str | None:
    """A short-lived URL for an uploaded object, or None (not uploaded / provider gone)."""
    if row.status != UploadStatus.UPLOADED:
        return None
    try:
        service = CloudStorageFactory.for_upload(row)
        return service.download_url(row.object_ref(), expires_in=expires_in)
    except (StorageUnavailable, ProviderUnavailable):
        logger.warning("no download URL for upload %s: provider %s unusable", row.id, row.provider)
        return None
