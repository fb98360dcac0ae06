"""Re-checking an `uploaded` row after the provider reported another write to its key."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from backend.core.errors import NotFound
from backend.storage.factory import CloudStorageFactory
from backend.uploads import sniff
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.selectors import get_upload
from backend.uploads.sequencer import sequencer_is_newer
from backend.uploads.services.delete import delete_failed_object
from backend.uploads.services.finalise import failure_metadata, verification_problems

logger = logging.getLogger(__name__)


def reverify_uploaded(upload_id: object, *, sequencer: str = "") -> MediaUpload:
    """Re-check an `uploaded` row's object after the provider reported a write to its key with
    other facts than the ones confirmed (an S3 ObjectCreated whose ETag or size differs).

    A presigned S3 POST can be reused until it expires, so an upload can be replaced after it
    was verified. The same checks as confirm run against what is stored now (size, type, first
    bytes): a mismatch makes the row `failed` ("object replaced after confirm: ...") and deletes
    the object; a match updates `metadata.etag`/`bytes` from the provider. An event older than
    the last one applied (`sequencer`) changes nothing, nor does any status but `uploaded`.
    Provider calls run before the row lock, like finalise. Raises NotFound, and
    ProviderUnavailable (503; nothing changed, the provider delivers the event again)."""
    row = get_upload(upload_id)
    if row.status != UploadStatus.UPLOADED:
        return row
    if sequencer and not sequencer_is_newer(sequencer, row.event_sequencer):
        return row
    service = CloudStorageFactory.for_upload(row)
    ref = row.object_ref()
    stored, head = service.inspect_with_head(ref, sniff.SNIFF_LENGTH)
    if not stored.exists or head is None:
        return row  # gone: the provider's removal event marks the row
    confirmed = row.metadata or {}
    unchanged = stored.etag == confirmed.get("etag") and stored.size == confirmed.get("bytes")
    problems = [] if unchanged else verification_problems(row, stored, head)
    now = timezone.now()
    with transaction.atomic():
        current = MediaUpload.objects.select_for_update().filter(pk=row.pk).first()
        if current is None:
            raise NotFound("No upload with this id.")
        if current.status != UploadStatus.UPLOADED:
            return current
        if sequencer and not sequencer_is_newer(sequencer, current.event_sequencer):
            return current
        changes: dict[str, Any] = {"event_sequencer": sequencer} if sequencer else {}
        if problems:
            reason = "object replaced after confirm: " + "; ".join(problems)
            changes["status"] = UploadStatus.FAILED
            changes["metadata"] = failure_metadata(current, reason, problems)
        elif not unchanged:
            changes["metadata"] = current.metadata_with(
                etag=stored.etag, bytes=stored.size, reverified_at=now.isoformat()
            )
            changes["stored_size"] = stored.size
        if not changes:
            return current
        changes["updated_at"] = now
        MediaUpload.objects.filter(pk=current.pk).update(**changes)
        for name, value in changes.items():
            setattr(current, name, value)
    if problems:
        logger.warning(
            "upload %s replaced after confirm at %s: %s", current.id, current.provider, problems
        )
        delete_failed_object(service, current, ref, what="the replaced object")
    elif not unchanged:
        logger.info("upload %s re-verified after its object was replaced", current.id)
    return current
