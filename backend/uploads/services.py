"""The media upload service: the only code that writes `MediaUpload`.

State machine (every transition is a conditional UPDATE on the current status, so two actors
racing on one row can never both win):

    pending --finalise ok--> uploaded --request_delete--> deleting --delete_at_provider--> deleted
    pending --mismatch-----> failed   (object deleted at the provider)
    pending --cleanup claim-> expiring -> expired       (backend.uploads.cleanup)

Provider calls are never made while a row lock is held: verification runs first, then one
conditional UPDATE decides who wins. A confirm that loses to the cleanup's claim gets 410 and
leaves the row to the cleanup, so no row is ever `uploaded` with its object deleted.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from backend.core.config import AppConfigSnapshot, get_app_config
from backend.core.errors import (
    ApplicationError,
    Conflict,
    Gone,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    StorageUnavailable,
    ValidationFailed,
)
from backend.storage.base import (
    CloudStorageService,
    ConfirmationRejected,
    ObjectRef,
    StoredObject,
    UploadInstructions,
)
from backend.storage.factory import CloudStorageFactory
from backend.uploads import keys, sniff
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.selectors import get_upload_for_owner, parse_upload_id

logger = logging.getLogger(__name__)

#: Sources whose payload the caller has already authenticated with the provider's own
#: signature (SNS message signature, X-Cld-Signature); the client response check is skipped.
TRUSTED_SOURCES = frozenset({"cloudinary_webhook", "s3_event"})
DOWNLOAD_URL_EXPIRY = 300
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Provider facts copied from StoredObject.extra into metadata when present.
_EXTRA_METADATA_KEYS = ("width", "height", "format", "resource_type", "pages", "duration")
# Equivalent spellings a provider may report for a declared type.
_CONTENT_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


class NotAuthenticated(ApplicationError):
    status_code = 401
    code = "not_authenticated"


class VerificationFailed(ValidationFailed):
    """The stored object (or the client's proof of it) does not match what was declared."""

    status_code = 422
    code = "verification_failed"


# --- create -----------------------------------------------------------------------------------


def _validate_content_type(raw: str, allowed: tuple[str, ...]) -> str:
    content_type = sniff.normalise_content_type(raw or "")
    if not content_type or "/" not in content_type:
        raise ValidationFailed(
            "content_type must be a MIME type such as image/png.",
            code="invalid_content_type",
            details={"allowed_content_types": list(allowed)},
        )
    if content_type not in allowed:
        raise ValidationFailed(
            f"Content type {content_type} is not allowed.",
            code="content_type_not_allowed",
            details={"content_type": content_type, "allowed_content_types": list(allowed)},
        )
    return content_type


def _validate_size(size: object, max_size: int) -> int | None:
    if size is None:
        return None  # not declared: bounded by max_size at the provider and at finalise
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValidationFailed(
            "size must be a whole number of bytes, at least 1.",
            code="invalid_size",
            details={"min_size": 1, "max_upload_size": max_size},
        )
    if size > max_size:
        raise ValidationFailed(
            f"The file is {size} bytes; the largest accepted upload is {max_size} bytes.",
            code="file_too_large",
            details={"size": size, "max_upload_size": max_size},
        )
    return size


def _validate_checksum(checksum: str | None) -> str:
    if checksum in (None, ""):
        return ""
    value = str(checksum).strip().lower()
    if not _SHA256_HEX.match(value):
        raise ValidationFailed(
            "checksum_sha256 must be 64 hexadecimal characters (a SHA-256 digest).",
            code="invalid_checksum",
        )
    return value


def _check_quota(owner: Any, size: int, max_pending: int, max_bytes_per_day: int) -> None:
    """One aggregate query. A soft limit: two requests racing can overshoot by one upload,
    which throttling bounds; a lock here would cost a query on every create."""
    now = timezone.now()
    usage = MediaUpload.objects.filter(owner_id=owner.pk).aggregate(
        pending=Count("id", filter=Q(status=UploadStatus.PENDING, expires_at__gt=now)),
        declared=Sum("declared_size", filter=Q(created_at__gte=now - timedelta(hours=24))),
    )
    pending = int(usage["pending"] or 0)
    declared = int(usage["declared"] or 0)
    if pending >= max_pending:
        raise QuotaExceeded(
            f"You have {pending} unconfirmed uploads; at most {max_pending} may be pending at "
            "once. Confirm or delete some, or wait for them to expire.",
            code="too_many_pending_uploads",
            details={"pending": pending, "max_pending_uploads": max_pending},
        )
    if declared + size > max_bytes_per_day:
        raise QuotaExceeded(
            f"This upload of {size} bytes would bring your last 24 hours to {declared + size} "
            f"bytes; the limit is {max_bytes_per_day} bytes.",
            code="daily_quota_exceeded",
            details={
                "used_bytes_24h": declared,
                "requested_bytes": size,
                "max_bytes_per_day": max_bytes_per_day,
            },
        )


def notification_url_for(service: CloudStorageService) -> str | None:
    """The webhook URL signed into each upload, for a provider that takes one
    (`capabilities.notifications.per_upload_url`): PUBLIC_BASE_URL + the route named
    `webhooks:<provider>`. None for other providers, or when PUBLIC_BASE_URL is unset.

    The provider must reach this URL from the internet, so a guess (e.g. from the current
    request's Host header, which a client controls) is never used."""
    notifications = service.capabilities.notifications
    base = (settings.PUBLIC_BASE_URL or "").rstrip("/")
    if notifications is None or not notifications.per_upload_url or not base:
        return None
    return base + reverse(f"webhooks:{service.name}")


@dataclass(frozen=True)
class NewUploadRequest:
    """A create request that passed validation and the quota check."""

    config: AppConfigSnapshot
    content_type: str
    size: int | None
    checksum_sha256: str
    display_name: str


def validate_new_upload(
    *, owner: Any, filename: str, content_type: str, size: int | None, checksum_sha256: str | None
) -> NewUploadRequest:
    """Authentication, the AppConfig policy (type, size, checksum) and the per-user quotas:
    what every kind of new upload (single request or multipart) goes through first.

    `size=None`: the client cannot tell the size (Uppy through Companion's contract). The
    upload is then bounded by the policy maximum, and the size is taken from the provider
    before verification; the daily quota counts it from then on."""
    if owner is None or not getattr(owner, "pk", None):
        raise NotAuthenticated("Authentication required.")
    config = get_app_config()
    content_type = _validate_content_type(content_type, config.allowed_content_types)
    size = _validate_size(size, config.max_upload_size)
    checksum = _validate_checksum(checksum_sha256)
    display_name = keys.sanitise_filename(filename)
    _check_quota(
        owner, size or 0, config.max_pending_uploads_per_user, config.max_bytes_per_user_per_day
    )
    return NewUploadRequest(config, content_type, size, checksum, display_name)


def new_key(
    owner: Any,
    upload_id: uuid.UUID,
    display_name: str,
    content_type: str,
    service: CloudStorageService,
) -> str:
    return keys.build_key(
        owner_id=owner.pk,
        upload_id=upload_id,
        display_name=display_name,
        content_type=content_type,
        capabilities=service.capabilities,
    )


def create_upload(
    *,
    owner: Any,
    filename: str,
    content_type: str,
    size: int | None,
    checksum_sha256: str | None = None,
) -> tuple[MediaUpload, UploadInstructions]:
    """Validate, reserve a key at the active provider and return the upload instructions.

    Signing happens before the INSERT: a provider failure leaves nothing behind, and no
    transaction is needed (two queries: the quota aggregate and the INSERT). `size=None`
    (not declared) signs for anything up to the policy maximum; confirm then records the
    stored size."""
    request = validate_new_upload(
        owner=owner,
        filename=filename,
        content_type=content_type,
        size=size,
        checksum_sha256=checksum_sha256,
    )
    config, content_type, size = request.config, request.content_type, request.size
    display_name, checksum = request.display_name, request.checksum_sha256
    service = CloudStorageFactory.active()
    upload_id = uuid.uuid4()
    key = new_key(owner, upload_id, display_name, content_type, service)
    expires_in = min(config.presign_expiry_seconds, settings.UPLOAD_MAX_PRESIGN_EXPIRY)
    # max_size = the declared size: the provider then refuses anything else outright (where it
    # enforces policies), and confirm re-checks the stored size either way.
    limit = size if size is not None else config.max_upload_size
    instructions = service.presign_upload(
        ObjectRef(key=key, content_type=content_type),
        size=limit,
        max_size=limit,
        expires_in=expires_in,
        notification_url=notification_url_for(service),
    )
    row = MediaUpload.objects.create(
        id=upload_id,
        owner=owner,
        provider=service.name,
        key=key,
        original_filename=display_name,
        content_type=content_type,
        declared_size=size,
        checksum_sha256=checksum,
        status=UploadStatus.PENDING,
        expires_at=instructions.expires_at,
    )
    logger.info("upload %s created at %s (%s, %s bytes)", row.id, row.provider, row.key, size)
    return row, instructions


# --- confirm / finalise -----------------------------------------------------------------------


def object_ref(row: MediaUpload | Mapping[str, Any], version: str | None = None) -> ObjectRef:
    """Where a row's object lives at its provider. `row` may also be a `.values()` dict with
    key, content_type and metadata (the cleanup streams those)."""
    if isinstance(row, MediaUpload):
        key, content_type, metadata = row.key, row.content_type, row.metadata
    else:
        key, content_type, metadata = row["key"], row["content_type"], row["metadata"]
    version = version or (metadata or {}).get("version")
    return ObjectRef(key=key, content_type=content_type, version=str(version) if version else None)


def raise_for_state(row: MediaUpload) -> None:
    """Refuse to finalise a row that is no longer pending (uploaded is handled by the caller)."""
    if row.status == UploadStatus.FAILED:
        meta = row.metadata or {}
        raise VerificationFailed(
            f"Upload verification failed: {meta.get('failure_reason', 'unknown reason')}",
            details={
                "reasons": meta.get("failure_reasons", []),
                "status": row.status,
            },
        )
    if row.status in (UploadStatus.EXPIRING, UploadStatus.EXPIRED):
        raise Gone(
            "This upload expired before it was confirmed; request a new upload.",
            code="expired",
            details={"status": row.status},
        )
    if row.status in (UploadStatus.DELETING, UploadStatus.DELETED):
        raise Gone("This upload has been deleted.", code="deleted", details={"status": row.status})


def _verify_payload(
    service: CloudStorageService, row: MediaUpload, payload: Mapping[str, Any], source: str
) -> ObjectRef:
    ref = object_ref(row)
    if source in TRUSTED_SOURCES:
        # The webhook layer checked the provider's signature on the whole message.
        version = payload.get("version")
        return replace(ref, version=str(version)) if version else ref
    try:
        return service.verify_confirmation(ref, payload)
    except ConfirmationRejected as exc:
        # The client's proof is bad, not (necessarily) the object: the row stays pending so
        # the provider's own notification or a correct confirm can still finalise it.
        raise VerificationFailed(
            f"The confirmation payload does not verify: {exc.reason}",
            details={"reasons": [exc.reason], "status": row.status},
        ) from None


def _normalised_stored_type(stored: StoredObject) -> str | None:
    if not stored.content_type:
        return None
    value = sniff.normalise_content_type(stored.content_type)
    return _CONTENT_TYPE_ALIASES.get(value, value)


def _verification_problems(
    row: MediaUpload, stored: StoredObject, head: bytes, max_size: int
) -> list[str]:
    stored_type = _normalised_stored_type(stored)
    if stored.size is None or stored_type is None:
        # A provider answer without these facts is a provider fault, not the client's: never
        # destroy an upload over it. The row stays pending; the cleanup removes it if this lasts.
        raise ProviderUnavailable(
            f"{row.provider} did not report the stored object's size and content type.",
            details={"provider": row.provider},
        )
    problems: list[str] = []
    if row.declared_size is not None and stored.size != row.declared_size:
        problems.append(f"stored size {stored.size} bytes != declared {row.declared_size} bytes")
    if stored.size > max_size:
        problems.append(f"stored size {stored.size} bytes exceeds the limit of {max_size} bytes")
    declared_type = _CONTENT_TYPE_ALIASES.get(row.content_type, row.content_type)
    if stored_type != declared_type:
        problems.append(f"stored content type {stored_type} != declared {row.content_type}")
    sniffed = sniff.mismatch_reason(row.content_type, head)
    if sniffed:
        problems.append(sniffed)
    stored_checksum = str(stored.extra.get("checksum_sha256") or "").lower()
    if row.checksum_sha256 and stored_checksum and stored_checksum != row.checksum_sha256:
        problems.append("stored SHA-256 differs from the declared checksum_sha256")
    return problems


def _success_metadata(
    service: CloudStorageService,
    row: MediaUpload,
    ref: ObjectRef,
    stored: StoredObject,
    source: str,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "provider": service.name,
        "key": row.key,
        "url": stored.url,
        "bytes": stored.size,
        "content_type": _normalised_stored_type(stored),
        "etag": stored.etag,
        "version": stored.version or ref.version,
        "verified_by": source,
    }
    for name in _EXTRA_METADATA_KEYS:
        if stored.extra.get(name) is not None:
            metadata[name] = stored.extra[name]
    return {k: v for k, v in metadata.items() if v is not None}


def _reject(
    service: CloudStorageService, row: MediaUpload, ref: ObjectRef, problems: list[str]
) -> MediaUpload:
    """Claim pending -> failed, then delete the object. Claim first: if another finalise won
    meanwhile (row uploaded), this one must not delete an object a row now points at."""
    reason = "; ".join(problems)
    metadata = {
        **(row.metadata or {}),
        "provider": service.name,
        "key": row.key,
        "failure_reason": reason,
        "failure_reasons": problems,
        "failed_at": timezone.now().isoformat(),
    }
    won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
        status=UploadStatus.FAILED, metadata=metadata, updated_at=timezone.now()
    )
    if not won:
        return MediaUpload.objects.get(pk=row.pk)
    logger.warning("upload %s failed verification at %s: %s", row.id, row.provider, reason)
    try:
        deleted = service.delete(ref)
    except ProviderUnavailable:
        deleted = False
    if deleted:
        metadata = {**metadata, "object_deleted": True}
        MediaUpload.objects.filter(pk=row.pk).update(metadata=metadata)
    else:
        # The row is already failed; the delete job retries until the object is gone.
        logger.warning("upload %s: delete after failed verification deferred", row.id)
        enqueue_delete(row.pk)
    row.status, row.metadata = UploadStatus.FAILED, metadata
    return row


def _finalise_row(
    row: MediaUpload, payload: Mapping[str, Any], source: str, sequencer: str
) -> MediaUpload:
    if row.status == UploadStatus.UPLOADED:
        return row
    raise_for_state(row)
    now = timezone.now()
    confirm_deadline = row.expires_at + timedelta(seconds=settings.UPLOAD_ORPHAN_GRACE_SECONDS)
    if source not in TRUSTED_SOURCES and confirm_deadline <= now:
        # A large upload that started before expires_at may finish after it, so a client
        # confirm is honoured through the orphan grace period (the window in which the cleanup
        # leaves the row alone). Past it, the row belongs to the cleanup job. A provider
        # notification is honoured until the claim: it proves the upload started in time.
        raise Gone(
            "The upload instructions expired before this confirm; request a new upload.",
            code="expired",
            details={
                "expires_at": row.expires_at.isoformat(),
                "confirm_deadline": confirm_deadline.isoformat(),
            },
        )
    service = CloudStorageFactory.for_upload(row)
    ref = _verify_payload(service, row, payload, source)
    # Size, type and first bytes from one read, so they describe the same stored bytes.
    stored, head = service.inspect_with_head(ref, sniff.SNIFF_LENGTH)
    if not stored.exists or head is None:
        raise Conflict(
            "The file has not arrived at the provider yet. Upload it, then confirm again.",
            code="not_uploaded_yet",
            details={"status": row.status},
        )
    problems = _verification_problems(row, stored, head, get_app_config().max_upload_size)
    if problems:
        current = _reject(service, row, ref, problems)
        if current.status == UploadStatus.UPLOADED:
            return current  # a concurrent finalise won with what it saw; keep its verdict
        raise_for_state(current)
        raise Conflict("The upload changed state; retry.", details={"status": current.status})

    metadata = _success_metadata(service, row, ref, stored, source)
    changes: dict[str, Any] = {
        "status": UploadStatus.UPLOADED,
        "metadata": metadata,
        "stored_size": stored.size,
        "confirmed_at": now,
        "updated_at": now,
    }
    if row.declared_size is None:
        changes["declared_size"] = stored.size  # not declared: what the provider holds
    if sequencer:
        changes["event_sequencer"] = sequencer
    won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(**changes)
    if not won:
        # Someone else moved the row first: a concurrent finalise (return its result) or the
        # cleanup's claim (410 — it owns the object now and will delete it).
        current = MediaUpload.objects.get(pk=row.pk)
        if current.status == UploadStatus.UPLOADED:
            return current
        raise_for_state(current)
        raise Conflict("The upload changed state; retry.", details={"status": current.status})
    for name, value in changes.items():
        setattr(row, name, value)
    logger.info("upload %s finalised (%s, via %s)", row.id, row.provider, source)
    return row


def finalise_upload(
    upload_id: object,
    *,
    payload: Mapping[str, Any] | None = None,
    source: str = "client",
    sequencer: str = "",
) -> MediaUpload:
    """THE finalise path for client confirms and provider webhooks (see the module docstring).

    Exactly once and idempotent: an uploaded row is returned as is; a failed row raises the same
    422 again. `source` other than "client" means the caller authenticated `payload` with the
    provider's signature. Raises Conflict (not there yet), Gone (expired/deleted),
    VerificationFailed (422), ProviderUnavailable (503; the row stays pending)."""
    parsed = parse_upload_id(upload_id)
    row = MediaUpload.objects.filter(pk=parsed).first() if parsed else None
    if row is None:
        raise NotFound("No upload with this id.")
    return _finalise_row(row, payload or {}, source, sequencer)


def confirm_upload(*, owner: Any, upload_id: object, payload: Mapping[str, Any]) -> MediaUpload:
    """A client's confirm: owner check (someone else's upload is 404), then finalise."""
    row = get_upload_for_owner(owner, upload_id)
    return _finalise_row(row, payload or {}, "client", "")


# --- delete -----------------------------------------------------------------------------------


def enqueue_delete(upload_id: uuid.UUID) -> None:
    from backend.uploads import tasks  # lazy: tasks imports this module's callers

    transaction.on_commit(lambda: tasks.delete_upload.send(str(upload_id)))


_DELETABLE = (UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.FAILED)


def request_delete(*, owner: Any, upload_id: object) -> MediaUpload:
    """Mark the owner's upload `deleting` and enqueue the provider delete.

    Idempotent: `deleting` re-enqueues (a lost message heals), `deleted`/`expired`/`expiring`
    are returned unchanged (the object is gone or the cleanup is removing it)."""
    row = get_upload_for_owner(owner, upload_id)
    with transaction.atomic():
        if row.status in _DELETABLE:
            now = timezone.now()
            won = MediaUpload.objects.filter(pk=row.pk, status__in=_DELETABLE).update(
                status=UploadStatus.DELETING, claimed_at=now, updated_at=now
            )
            if won:
                row.status, row.claimed_at, row.updated_at = UploadStatus.DELETING, now, now
            else:
                row.refresh_from_db()
        if row.status == UploadStatus.DELETING:
            enqueue_delete(row.pk)
    return row


def delete_at_provider(upload_id: object) -> MediaUpload:
    """Delete the object at the row's own provider; `deleting` rows become `deleted`.

    Idempotent (a missing object is success; a `deleted` row is returned as is). A `failed` row
    only loses its object. Raises ProviderUnavailable so the delete job retries."""
    parsed = parse_upload_id(upload_id)
    row = MediaUpload.objects.filter(pk=parsed).first() if parsed else None
    if row is None:
        raise NotFound("No upload with this id.")
    if row.status not in (UploadStatus.DELETING, UploadStatus.FAILED):
        return row
    if row.status == UploadStatus.FAILED and (row.metadata or {}).get("object_deleted"):
        return row
    try:
        service = CloudStorageFactory.for_upload(row)
    except StorageUnavailable as exc:
        raise ProviderUnavailable(
            f"Provider {row.provider} is not configured; cannot delete yet.", retry_after=300
        ) from exc
    ref = object_ref(row)
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
        metadata = {**(row.metadata or {}), "object_deleted": True}
        MediaUpload.objects.filter(pk=row.pk).update(metadata=metadata, updated_at=now)
    else:
        metadata = {**(row.metadata or {}), "deleted_at": now.isoformat()}
        MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.DELETING).update(
            status=UploadStatus.DELETED, metadata=metadata, updated_at=now
        )
    row.refresh_from_db()
    logger.info("upload %s deleted at %s", row.id, row.provider)
    return row


def mark_deleted_by_provider(upload_id: object, *, sequencer: str = "") -> MediaUpload | None:
    """The provider reports the object gone (S3 ObjectRemoved, Cloudinary delete).

    `uploaded`/`deleting` rows become `deleted`; a stale event (older `sequencer` than the last
    one applied) changes nothing. Returns the row, or None when no such upload exists."""
    from backend.uploads.webhooks.sequencer import sequencer_is_newer

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
            changes["metadata"] = {
                **(row.metadata or {}),
                "deleted_at": now.isoformat(),
                "deleted_by": "provider",
            }
        elif row.status == UploadStatus.FAILED:
            changes["metadata"] = {**(row.metadata or {}), "object_deleted": True}
        MediaUpload.objects.filter(pk=row.pk).update(**changes)
        for name, value in changes.items():
            setattr(row, name, value)
    return row


# --- reads the API needs ----------------------------------------------------------------------


def download_url_for(row: MediaUpload, *, expires_in: int = DOWNLOAD_URL_EXPIRY) -> str | None:
    """A short-lived URL for an uploaded object, or None (not uploaded / provider gone)."""
    if row.status != UploadStatus.UPLOADED:
        return None
    try:
        service = CloudStorageFactory.for_upload(row)
        return service.download_url(object_ref(row), expires_in=expires_in)
    except (StorageUnavailable, ProviderUnavailable):
        logger.warning("no download URL for upload %s: provider %s unusable", row.id, row.provider)
        return None


# --- replaced after confirm -------------------------------------------------------------------


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
    from backend.uploads.webhooks.sequencer import sequencer_is_newer

    parsed = parse_upload_id(upload_id)
    row = MediaUpload.objects.filter(pk=parsed).first() if parsed else None
    if row is None:
        raise NotFound("No upload with this id.")
    if row.status != UploadStatus.UPLOADED:
        return row
    if sequencer and not sequencer_is_newer(sequencer, row.event_sequencer):
        return row
    service = CloudStorageFactory.for_upload(row)
    ref = object_ref(row)
    stored, head = service.inspect_with_head(ref, sniff.SNIFF_LENGTH)
    if not stored.exists or head is None:
        return row  # gone: the provider's removal event marks the row
    confirmed = row.metadata or {}
    unchanged = stored.etag == confirmed.get("etag") and stored.size == confirmed.get("bytes")
    problems: list[str] = []
    if not unchanged:
        problems = _verification_problems(row, stored, head, get_app_config().max_upload_size)
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
            changes["status"] = UploadStatus.FAILED
            changes["metadata"] = {
                **(current.metadata or {}),
                "failure_reason": "object replaced after confirm: " + "; ".join(problems),
                "failure_reasons": problems,
                "failed_at": now.isoformat(),
            }
        elif not unchanged:
            changes["metadata"] = {
                **(current.metadata or {}),
                "etag": stored.etag,
                "bytes": stored.size,
                "reverified_at": now.isoformat(),
            }
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
        try:
            deleted = service.delete(ref)
        except ProviderUnavailable:
            deleted = False
        if deleted:
            current.metadata = {**current.metadata, "object_deleted": True}
            MediaUpload.objects.filter(pk=current.pk).update(metadata=current.metadata)
        else:
            logger.warning("upload %s: delete of the replaced object deferred", current.id)
            enqueue_delete(current.pk)
    elif not unchanged:
        logger.info("upload %s re-verified after its object was replaced", current.id)
    return current
