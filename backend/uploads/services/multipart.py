"""Multipart uploads (providers whose `capabilities.large_uploads` is "multipart": S3).

The server keeps the part state: it starts the multipart upload at the provider, records the
provider's UploadId and the part size it chose (within the provider's part bounds) on the
`MediaUpload` row, signs parts on demand (part numbers 1..part_count only), lists what the
provider holds, and completes through the SAME verified finalise path as a single-request
confirm (`finalise.finalise_upload`): size, type and first bytes are checked at the provider, a
mismatch deletes the object and fails the row.

Provider calls happen before any row change, so a provider fault (ProviderUnavailable, 503)
leaves the row as it was. Only `create_multipart_upload` and `abort_multipart_upload` write rows
here, plus the size of an upload started without one (`_record_listed_size`); finalising
stays in `finalise`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.core import metrics
from backend.core.config import get_app_config
from backend.core.errors import Conflict, Gone, ServiceUnavailable, ValidationFailed
from backend.core.logs import bind_upload
from backend.core.sizes import human_size
from backend.storage import registry
from backend.storage.base import (
    CloudStorageService,
    CompletedPart,
    MultipartRejected,
    ObjectRef,
    PartInstructions,
    ProviderCapabilities,
    UploadedPart,
)
from backend.storage.factory import CloudStorageFactory
from backend.uploads import jobs, quotas
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.services.create import insert_pending, new_key, validate_new_upload
from backend.uploads.services.finalise import finalise_upload, raise_for_state

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Part URLs one request may ask for (Uppy asks for one at a time; apps may batch).
MAX_PARTS_PER_SIGN_REQUEST = 100


def choose_part_size(size: int, capabilities: ProviderCapabilities) -> int:
    """The smallest whole number of MiB, at least the provider's minimum part size, that fits
    `size` into the provider's maximum number of parts (S3: 5 MiB, 10 000 parts)."""
    min_size = capabilities.min_part_size or MiB
    max_parts = capabilities.max_parts
    needed = max(min_size, math.ceil(size / max_parts)) if max_parts else min_size
    part_size = math.ceil(needed / MiB) * MiB
    max_size = capabilities.max_part_size or part_size
    if part_size > max_size:
        raise ValidationFailed(
            f"A file of {size} bytes does not fit into {max_parts} parts of at most "
            f"{max_size} bytes.",
            code="file_too_large",
            details={"size": size, "max_parts": max_parts, "max_part_size": max_size},
        )
    return part_size


def size_declared(row: MediaUpload) -> bool:
    """False for an upload started without a size (Uppy): its parts are not length-bound and
    its size comes from the provider's part list at complete."""
    return row.multipart_part_size is not None


def part_count(row: MediaUpload) -> int:
    """Parts of a declared size; without one, the most parts of at least the provider's minimum
    part size (S3: 5 MiB, for every part but the last) that the policy maximum allows."""
    if not size_declared(row) or row.declared_size is None:
        return max(1, math.ceil(get_app_config().max_upload_size / _min_part_size(row)))
    return max(1, math.ceil(row.declared_size / _part_size(row)))


def _part_size(row: MediaUpload) -> int:
    return int(row.multipart_part_size or row.declared_size or 1)


def _min_part_size(row: MediaUpload) -> int:
    provider = registry.get(row.provider)
    return (provider.capabilities.min_part_size if provider else None) or MiB


def part_length(row: MediaUpload, part_number: int) -> int | None:
    """The exact byte count of part `part_number`: `part_size`, the remainder for the last;
    None when the size was not declared (the client chooses its part size)."""
    if not size_declared(row) or row.declared_size is None:
        return None
    part_size = _part_size(row)
    if part_number < part_count(row):
        return part_size
    return max(1, row.declared_size - (part_count(row) - 1) * part_size)


# --- create -----------------------------------------------------------------------------------


def create_multipart_upload(
    *, owner: Any, filename: str, content_type: str, size: int | None
) -> MediaUpload:
    """Validate like `create_upload` (policy, quotas, server-generated key), then start a
    multipart upload at the active provider, which must support it (S3). The row records the
    UploadId and the part size; it stays `pending` until complete.

    `size=None` (Uppy does not send it): no part size is chosen and part URLs are not bound
    to a length; part numbers stay within what the policy maximum allows, and complete
    checks the provider's own part list against that maximum before assembling."""
    request = validate_new_upload(
        owner=owner, filename=filename, content_type=content_type, size=size, checksum_sha256=None
    )
    service = CloudStorageFactory.active()
    if not service.supports_multipart:
        refusal = service.multipart_not_supported()
        refusal.details["multipart_providers"] = registry.names_with_large_uploads("multipart")
        raise refusal
    part_size = (
        None if request.size is None else choose_part_size(request.size, service.capabilities)
    )
    upload_id = uuid.uuid4()
    bind_upload(upload_id)
    key = new_key(owner, upload_id, request.display_name, request.content_type, service)
    ref = ObjectRef(key=key, content_type=request.content_type)
    with request.reservation(owner):
        session = service.create_multipart_upload(ref)
        expires_at = timezone.now() + timedelta(seconds=settings.UPLOAD_MULTIPART_EXPIRY_SECONDS)
        try:
            row = insert_pending(
                request,
                owner,
                upload_id,
                service,
                key,
                expires_at,
                multipart_upload_id=session.upload_id,
                multipart_part_size=part_size,
            )
        except Exception:
            # No row will ever point at this multipart upload: free it now (reconcile later).
            with contextlib.suppress(ServiceUnavailable):
                service.abort_multipart_upload(ref, session.upload_id)
            raise
    metrics.presigns(service.name, "multipart").inc()
    logger.info(
        "multipart upload %s created at %s (%s, %s bytes, parts of %s)",
        row.id,
        row.provider,
        row.key,
        row.declared_size,
        part_size,
    )
    return row


# --- parts ------------------------------------------------------------------------------------


def require_open(row: MediaUpload) -> None:
    """The row must be a pending multipart upload still within its time."""
    if not row.multipart_upload_id:
        raise Conflict(
            "This upload is not a multipart upload; upload it as instructed at creation.",
            code="not_multipart",
            details={"status": row.status},
        )
    if row.status == UploadStatus.UPLOADED:
        raise Conflict(
            "This multipart upload is already complete.",
            code="multipart_completed",
            details={"status": row.status},
        )
    raise_for_state(row)
    deadline = row.expires_at + timedelta(seconds=settings.UPLOAD_ORPHAN_GRACE_SECONDS)
    if deadline <= timezone.now():
        raise Gone(
            "This multipart upload expired; start a new upload.",
            code="expired",
            details={"expires_at": row.expires_at.isoformat()},
        )


def _check_part_numbers(row: MediaUpload, numbers: Sequence[int], *, all_required: bool) -> None:
    count = part_count(row)
    details = {"part_count": count, "part_size": row.multipart_part_size}
    bad = sorted({n for n in numbers if not 1 <= n <= count})
    if bad:
        raise ValidationFailed(
            f"Part numbers must be between 1 and {count} for this upload; got {bad[:10]}.",
            code="invalid_part_number",
            details={**details, "invalid": bad[:100]},
        )
    if len(set(numbers)) != len(numbers):
        raise ValidationFailed(
            "Each part number may appear only once.", code="invalid_part_number", details=details
        )
    if all_required and size_declared(row) and len(numbers) != count:
        missing = sorted(set(range(1, count + 1)) - set(numbers))
        raise ValidationFailed(
            f"Complete needs every part 1..{count}; missing {missing[:10]}.",
            code="missing_parts",
            details={**details, "missing": missing[:100]},
        )


def sign_parts(row: MediaUpload, part_numbers: Sequence[int]) -> list[PartInstructions]:
    """Presigned PUT URLs for the given parts (signing is local: no provider round trip).

    Each URL is bound to its part's exact length (`part_length`): the provider refuses a PUT of
    any other size, so no part can hold more than the declared file allows."""
    require_open(row)
    if not part_numbers or len(part_numbers) > MAX_PARTS_PER_SIGN_REQUEST:
        raise ValidationFailed(
            f"Ask for 1 to {MAX_PARTS_PER_SIGN_REQUEST} part numbers per request.",
            code="invalid_part_number",
            details={"part_count": part_count(row), "max_per_request": MAX_PARTS_PER_SIGN_REQUEST},
        )
    _check_part_numbers(row, part_numbers, all_required=False)
    service = CloudStorageFactory.for_upload(row)
    config = get_app_config()
    expires_in = min(config.presign_expiry_seconds, settings.UPLOAD_MAX_PRESIGN_EXPIRY)
    ref = row.object_ref()
    return [
        service.presign_upload_part(
            ref,
            row.multipart_upload_id,
            n,
            expires_in=expires_in,
            content_length=part_length(row, n),
        )
        for n in part_numbers
    ]


def _gone(row: MediaUpload) -> Gone:
    return Gone(
        "The provider no longer has this multipart upload (aborted or expired); start a new "
        "upload.",
        code="multipart_upload_gone",
        details={"status": row.status},
    )


def list_parts(row: MediaUpload) -> list[UploadedPart]:
    """The parts the provider holds (S3 ListParts, every page): what a resuming client skips."""
    require_open(row)
    service = CloudStorageFactory.for_upload(row)
    try:
        return service.list_parts(row.object_ref(), row.multipart_upload_id)
    except MultipartRejected as exc:
        if exc.kind == "upload_gone":
            raise _gone(row) from None
        raise _rejected(service, exc) from None


def _rejected(service: CloudStorageService, exc: MultipartRejected) -> ValidationFailed:
    return ValidationFailed(
        f"{service.display_name} refused to complete the upload ({exc.code}). {exc.advice}",
        code=exc.kind,
        details={"provider_code": exc.code, "status": UploadStatus.PENDING},
    )


# --- complete / abort -------------------------------------------------------------------------


def complete_multipart_upload(row: MediaUpload, parts: Sequence[CompletedPart]) -> MediaUpload:
    """CompleteMultipartUpload at the provider, then the verified finalise (as confirm).

    Idempotent: an uploaded row is returned as is, and a retried complete whose first attempt
    reached S3 (NoSuchUpload now) goes on to finalise the assembled object. A refusal by S3
    (wrong ETag, part too small) is a 400 and leaves the row pending."""
    bind_upload(row.id)
    if row.status == UploadStatus.UPLOADED:
        return row
    require_open(row)
    ordered = sorted(parts, key=lambda p: p.part_number)
    _check_part_numbers(row, [p.part_number for p in ordered], all_required=True)
    service = CloudStorageFactory.for_upload(row)
    if not size_declared(row):
        _record_listed_size(row, service, ordered)
    try:
        service.complete_multipart_upload(row.object_ref(), row.multipart_upload_id, ordered)
    except MultipartRejected as exc:
        if exc.kind != "upload_gone":
            raise _rejected(service, exc) from None
        if not service.inspect(row.object_ref()).exists:
            raise _gone(row) from None
    return finalise_upload(row.pk, source="client")


def _record_listed_size(
    row: MediaUpload, service: CloudStorageService, parts: Sequence[CompletedPart]
) -> None:
    """Size of an upload started without one, from the provider's own part list (ListParts):
    the sum of the listed parts it holds with those ETags. Refused above the policy maximum,
    before anything is assembled; recorded as the declared size so that finalise compares the
    assembled object with what was uploaded."""
    try:
        held = {
            p.part_number: p for p in service.list_parts(row.object_ref(), row.multipart_upload_id)
        }
    except MultipartRejected as exc:
        if exc.kind == "upload_gone":
            return  # completed by an earlier attempt (its size is recorded), or gone: see below
        raise _rejected(service, exc) from None
    missing = [
        p.part_number
        for p in parts
        if p.part_number not in held or held[p.part_number].etag.strip('"') != p.etag.strip('"')
    ]
    if missing:
        not_held = MultipartRejected(
            "InvalidPart",
            f"parts not held: {missing[:10]}",
            advice=f"{service.display_name} does not hold every listed part with the given ETag. "
            "Upload the missing parts again (GET the parts list for the ETags it holds), then "
            "complete again.",
        )
        raise _rejected(service, not_held)
    total = sum(held[p.part_number].size for p in parts)
    limit = get_app_config().max_upload_size
    if total > limit:
        raise ValidationFailed(
            f"The uploaded parts add up to {human_size(total)}; the largest accepted upload is "
            f"{human_size(limit)}.",
            code="file_too_large",
            details={"size": total, "max_upload_size": limit},
        )
    MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
        declared_size=total, updated_at=timezone.now()
    )
    row.refresh_from_db(fields=["declared_size"])


def abort_multipart_upload(row: MediaUpload) -> MediaUpload:
    """AbortMultipartUpload at the provider, then mark the row `deleted` ("aborted by client").

    Idempotent: a row no longer pending is returned unchanged (uploaded: 409, use DELETE on the
    upload instead). If a complete raced this abort and won, the row stays uploaded (409)."""
    if row.status == UploadStatus.UPLOADED:
        raise Conflict(
            "This multipart upload is already complete; delete the upload instead.",
            code="multipart_completed",
            details={"status": row.status},
        )
    if not row.multipart_upload_id:
        raise Conflict("This upload is not a multipart upload.", code="not_multipart")
    if row.status != UploadStatus.PENDING:
        return row
    service = CloudStorageFactory.for_upload(row)
    service.abort_multipart_upload(row.object_ref(), row.multipart_upload_id)
    now = timezone.now()
    exit_bytes = quotas.exit_quota_bytes(row)
    won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
        status=UploadStatus.DELETED,
        metadata=row.metadata_with(deleted_at=now.isoformat(), deleted_reason="aborted by client"),
        quota_bytes=exit_bytes,
        updated_at=now,
    )
    if won:
        quotas.release_row(row, exit_bytes)
        _remove_assembled_object(row)
    row.refresh_from_db()
    if not won and row.status == UploadStatus.UPLOADED:
        raise Conflict(
            "This multipart upload completed before the abort; delete the upload instead.",
            code="multipart_completed",
            details={"status": row.status},
        )
    logger.info("multipart upload %s aborted by client", row.id)
    return row


def _remove_assembled_object(row: MediaUpload) -> None:
    """After an abort won the row: delete the object if a racing complete assembled it.

    S3 answers NoSuchUpload to the abort when a complete got there first, and that complete's
    finalise then finds the row `deleted` (410): without this the object would stay, owned by a
    deleted row. If the provider cannot be reached now, the row goes to `deleting` and the
    delete job removes the object (as `delete.request_delete`)."""
    service = CloudStorageFactory.for_upload(row)
    ref = row.object_ref()
    try:
        if not service.inspect(ref).exists:
            return
        logger.warning(
            "multipart upload %s: a complete raced the abort; deleting %s", row.id, row.key
        )
        if service.delete(ref):
            return
    except ServiceUnavailable as exc:
        logger.warning("multipart upload %s: delete after abort deferred: %s", row.id, exc.message)
    now = timezone.now()
    with transaction.atomic():
        moved = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.DELETED).update(
            status=UploadStatus.DELETING, claimed_at=now, updated_at=now
        )
        if moved:
            jobs.enqueue_delete(row.pk)
