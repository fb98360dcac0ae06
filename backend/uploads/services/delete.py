"""Deleting: on the owner's request (through the delete job), at the provider, and as the provider
reports it. Every transition is a conditional UPDATE on the row's current status."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backend.core.errors import ProviderUnavailable, StorageUnavailable
from backend.core.logs import bind_upload
from backend.storage.base import CloudStorageService, ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import jobs, quotas
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.selectors import get_upload, get_upload_for_owner, parse_upload_id
from backend.uploads.sequencer import sequencer_is_newer

logger = logging.getLogger(__name__)

_SETTLED_DELETABLE = (UploadStatus.UPLOADED, UploadStatus.FAILED)


#: How far back the sweep looks for deleted rows not checked yet (a scheduler that was down
#: catches up; beyond this the daily reconciliation removes what no live row accounts for).
RECHECK_LOOKBACK = timedelta(days=1)


def credentials_dead_at(row: MediaUpload) -> datetime:
    """When no upload instruction we issued for this row can write its key any more:
    `expires_at` is when the provider stops accepting them (Cloudinary: the signature's hour),
    plus a margin for clock skew and a request still in flight."""
    return row.expires_at + timedelta(seconds=settings.UPLOAD_RECHECK_MARGIN_SECONDS)


def _must_be_gone_q() -> Q:
    return Q(status=UploadStatus.DELETED) | Q(
        status=UploadStatus.FAILED, metadata__object_deleted=True
    )


def rechecks_due(*, now: datetime | None = None, limit: int = 1000) -> list[str]:
    """Ids of rows whose object was deleted while their instructions still worked, now that
    those are dead and no check has run yet (`metadata.rechecked_at`): the periodic sweep sends
    one `recheck_deleted` job for each. A range scan of the (status, expires_at) index."""
    now = now or timezone.now()
    dead_before = now - timedelta(seconds=settings.UPLOAD_RECHECK_MARGIN_SECONDS)
    rows = (
        MediaUpload.objects.filter(
            _must_be_gone_q(),
            expires_at__lte=dead_before,
            expires_at__gt=dead_before - RECHECK_LOOKBACK,
        )
        .exclude(metadata__has_key="rechecked_at")
        .order_by("expires_at")
        .values_list("id", flat=True)[:limit]
    )
    return [str(pk) for pk in rows]


def recheck_deleted(upload_id: object) -> MediaUpload:
    """The follow-up after a delete: remove an object recreated under a deleted (or failed and
    deleted) row's key by instructions issued before it (Cloudinary honours signed parameters
    for an hour, and once the asset is gone overwrite=false no longer stops them). The row never
    changes status: a deleted upload never comes back. Once the instructions are dead the check
    is recorded (`metadata.rechecked_at`) and not repeated; run earlier, it checks and leaves the
    row for the sweep. Raises ProviderUnavailable so the job retries."""
    row = get_upload(upload_id)
    if not MediaUpload.objects.filter(_must_be_gone_q(), pk=row.pk).exists():
        return row
    service = _service_for(row, "check")
    started = timezone.now()
    # Any version: a recreated object has a new one. One delivery read, no listing call.
    ref = ObjectRef(key=row.key, content_type=row.content_type)
    changes: dict[str, Any] = {}
    if service.inspect(ref).exists:
        result = service.delete_many([ref])
        if ref.key not in result.deleted:
            raise ProviderUnavailable(
                f"The provider did not delete the object: {result.failed.get(ref.key, 'unknown')}"
            )
        logger.warning(
            "upload %s: an object recreated at %s after the delete was removed", row.id, row.key
        )
        changes["recreated_removed_at"] = timezone.now().isoformat()
    if credentials_dead_at(row) <= started:
        changes["rechecked_at"] = started.isoformat()
    if changes:
        # Only metadata: the status stays what it is (deleted, or failed).
        row.metadata = row.metadata_with(**changes)
        MediaUpload.objects.filter(pk=row.pk).update(metadata=row.metadata)
    return row


def request_delete(*, owner: Any, upload_id: object) -> MediaUpload:
    """Mark the owner's upload `deleting` and enqueue the provider delete.

    Idempotent: `deleting` re-enqueues (a lost message heals), `deleted`/`expired`/`expiring`
    are returned unchanged (the object is gone or the cleanup is removing it)."""
    row = get_upload_for_owner(owner, upload_id)
    bind_upload(row.id)
    with transaction.atomic():
        if row.status == UploadStatus.PENDING:
            # Leaving pending releases the quota reservation: only when this UPDATE wins.
            now = timezone.now()
            exit_bytes = quotas.exit_quota_bytes(row)
            won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
                status=UploadStatus.DELETING, claimed_at=now, updated_at=now, quota_bytes=exit_bytes
            )
            if won:
                quotas.release_row(row, exit_bytes)
                row.status, row.claimed_at, row.updated_at = UploadStatus.DELETING, now, now
                row.quota_bytes = exit_bytes
            else:
                row.refresh_from_db()
        if row.status in _SETTLED_DELETABLE:
            now = timezone.now()
            won = MediaUpload.objects.filter(pk=row.pk, status__in=_SETTLED_DELETABLE).update(
                status=UploadStatus.DELETING, claimed_at=now, updated_at=now
            )
            if won:
                row.status, row.claimed_at, row.updated_at = UploadStatus.DELETING, now, now
            else:
                row.refresh_from_db()
        if row.status == UploadStatus.DELETING:
            jobs.enqueue_delete(row.pk)
    return row


def delete_failed_object(
    service: CloudStorageService, row: MediaUpload, ref: ObjectRef, *, what: str
) -> None:
    """The row was just made `failed` (with `row.metadata` as written): delete its object now
    (`metadata.object_deleted`), or leave that to the delete job, which retries until it is gone.
    `what` names the object in the log line."""
    try:
        deleted = service.delete(ref)
    except ProviderUnavailable:
        deleted = False
    if deleted:
        row.metadata = row.metadata_with(object_deleted=True)
        MediaUpload.objects.filter(pk=row.pk).update(metadata=row.metadata)
    else:
        logger.warning("upload %s: delete of %s deferred", row.id, what)
        jobs.enqueue_delete(row.pk)


def delete_at_provider(upload_id: object) -> MediaUpload:
    """Delete the object at the row's own provider; `deleting` rows become `deleted`.

    Idempotent (a missing object is success; a `deleted` row is returned as is). A `failed` row
    only loses its object. Raises ProviderUnavailable so the delete job retries."""
    row = get_upload(upload_id)
    if row.status not in (UploadStatus.DELETING, UploadStatus.FAILED):
        return row
    if row.status == UploadStatus.FAILED and (row.metadata or {}).get("object_deleted"):
        return row
    service = _service_for(row, "delete")
    ref = row.object_ref()
    if row.multipart_upload_id and row.confirmed_at is None:
        # A multipart upload never completed keeps its parts (and their storage cost) until it
        # is aborted; aborting one already completed or aborted is a no-op.
        service.abort_multipart_upload(ref, row.multipart_upload_id)
    result = service.delete_many([ref])
    if ref.key not in result.deleted:
        raise ProviderUnavailable(
            f"The provider did not delete the object: {result.failed.get(ref.key, 'unknown')}"
        )
    now = timezone.now()
    if row.status == UploadStatus.FAILED:
        MediaUpload.objects.filter(pk=row.pk).update(
            metadata=row.metadata_with(object_deleted=True), updated_at=now
        )
    else:
        MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.DELETING).update(
            status=UploadStatus.DELETED,
            metadata=row.metadata_with(deleted_at=now.isoformat()),
            updated_at=now,
        )
    row.refresh_from_db()
    logger.info("upload %s deleted at %s", row.id, row.provider)
    return row


def mark_deleted_by_provider(upload_id: object, *, sequencer: str = "") -> MediaUpload | None:
    """The provider reports the object gone (S3 ObjectRemoved, Cloudinary delete).

    `uploaded`/`deleting` rows become `deleted`; a stale event (older `sequencer` than the last
    one applied) changes nothing. Returns the row, or None when no such upload exists."""
    parsed = parse_upload_id(upload_id)
    if parsed is None:
        return None
    with transaction.atomic():
        row = MediaUpload.objects.select_for_update().filter(pk=parsed).first()
        if row is None:
            return None
        if sequencer and not sequencer_is_newer(sequencer, row.event_sequencer):
            return row
        now = timezone.now()
        changes: dict[str, Any] = {"updated_at": now}
        if sequencer:
            changes["event_sequencer"] = sequencer
        if row.status in (UploadStatus.UPLOADED, UploadStatus.DELETING):
            changes["status"] = UploadStatus.DELETED
            changes["metadata"] = row.metadata_with(
                deleted_at=now.isoformat(), deleted_by="provider"
            )
        elif row.status == UploadStatus.FAILED:
            changes["metadata"] = row.metadata_with(object_deleted=True)
        MediaUpload.objects.filter(pk=row.pk).update(**changes)
        for name, value in changes.items():
            setattr(row, name, value)
    return row


def _service_for(row: MediaUpload, doing: str) -> CloudStorageService:
    """The row's own provider; not configured (any more) → ProviderUnavailable, so the job
    retries later instead of failing the row."""
    try:
        return CloudStorageFactory.for_upload(row)
    except StorageUnavailable as exc:
        raise ProviderUnavailable(
            f"Provider {row.provider} is not configured; cannot {doing} yet.", retry_after=300
        ) from exc
