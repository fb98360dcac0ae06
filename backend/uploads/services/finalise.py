"""THE finalise path: client confirms, multipart completes and provider notifications end here.

Provider calls are never made while a row lock is held: verification runs first (one ranged
read: size, type and first bytes of the same stored version), then one conditional UPDATE
`WHERE status = 'pending'` decides who wins. A confirm that loses to the cleanup's claim gets
410 and leaves the row to the cleanup, so no row is ever `uploaded` with its object deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from backend.core import metrics
from backend.core.config import get_app_config
from backend.core.errors import Conflict, Gone, ProviderUnavailable, ValidationFailed
from backend.core.logs import bind_upload
from backend.storage import registry
from backend.storage.base import (
    CloudStorageService,
    ConfirmationRejected,
    ObjectRef,
    StoredObject,
)
from backend.storage.factory import CloudStorageFactory
from backend.uploads import quotas, sniff
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.selectors import get_upload, get_upload_for_owner
from backend.uploads.services.delete import delete_failed_object

logger = logging.getLogger(__name__)

#: Sources whose payload the caller has already authenticated with the provider's own
#: signature (each provider's `capabilities.notifications.source`: SNS message signature,
#: X-Cld-Signature); the client response check is skipped for them.
TRUSTED_SOURCES = registry.notification_sources()
# Provider facts copied from StoredObject.extra into metadata when present.
_EXTRA_METADATA_KEYS = ("width", "height", "format", "resource_type", "pages", "duration")
# Equivalent spellings a provider may report for a declared type.
_CONTENT_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


class VerificationFailed(ValidationFailed):
    """The stored object (or the client's proof of it) does not match what was declared."""

    status_code = 422
    code = "verification_failed"


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
    ref = row.object_ref()
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


def verification_problems(
    row: MediaUpload, stored: StoredObject, head: bytes, *, checksum: str | None = None
) -> list[str]:
    """What does not match between the row's declaration and the stored object (empty: all
    matches). Raises ProviderUnavailable when the provider's answer lacks size or type.

    `checksum`: the SHA-256 (hex) the provider computed over the stored object (`promote`),
    compared with a declared `checksum_sha256`."""
    max_size = get_app_config().max_upload_size
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
    stored_checksum = str(checksum or stored.extra.get("checksum_sha256") or "").lower()
    if row.checksum_sha256 and stored_checksum and stored_checksum != row.checksum_sha256:
        problems.append("stored SHA-256 differs from the declared checksum_sha256")
    return problems


def failure_metadata(row: MediaUpload, reason: str, problems: list[str]) -> dict[str, Any]:
    return row.metadata_with(
        failure_reason=reason, failure_reasons=problems, failed_at=timezone.now().isoformat()
    )


def _success_metadata(
    service: CloudStorageService,
    row: MediaUpload,
    ref: ObjectRef,
    stored: StoredObject,
    source: str,
    checksum: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "provider": service.name,
        "key": row.key,
        "url": stored.url,
        "bytes": stored.size,
        "content_type": _normalised_stored_type(stored),
        "etag": stored.etag,
        "checksum_sha256": checksum,
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
        **failure_metadata(row, reason, problems),
        "provider": service.name,
        "key": row.key,
    }
    exit_bytes = quotas.exit_quota_bytes(row)
    won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(
        status=UploadStatus.FAILED,
        metadata=metadata,
        quota_bytes=exit_bytes,
        updated_at=timezone.now(),
    )
    if not won:
        return MediaUpload.objects.get(pk=row.pk)
    quotas.release_row(row, exit_bytes)  # this UPDATE won the row's exit from pending
    row.quota_bytes = exit_bytes
    logger.warning("upload %s failed verification at %s: %s", row.id, row.provider, reason)
    row.status, row.metadata = UploadStatus.FAILED, metadata
    delete_failed_object(service, row, ref, what="the object that failed verification")
    return row


def _settled(current: MediaUpload) -> MediaUpload:
    """The row as another actor left it: uploaded by a concurrent finalise (its result), or
    failed / claimed by the cleanup (410 — it owns the object now and will delete it)."""
    if current.status == UploadStatus.UPLOADED:
        return current
    raise_for_state(current)
    raise Conflict("The upload changed state; retry.", details={"status": current.status})


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
    # What the client wrote (a staged key, where the provider stages) becomes the object at
    # the row's key, which no issued credential can write: what is verified next stays.
    promotion = service.promote(ref)
    # Size, type and first bytes from one read, so they describe the same stored bytes.
    stored, head = service.inspect_with_head(ref, sniff.SNIFF_LENGTH)
    if not stored.exists or head is None:
        raise Conflict(
            "The file has not arrived at the provider yet. Upload it, then confirm again.",
            code="not_uploaded_yet",
            details={"status": row.status},
        )
    problems = verification_problems(row, stored, head, checksum=promotion.checksum_sha256)
    if problems:
        # Failed by us (422), or a concurrent finalise won with what it saw: keep its verdict.
        return _settled(_reject(service, row, ref, problems))

    changes: dict[str, Any] = {
        "status": UploadStatus.UPLOADED,
        "metadata": _success_metadata(service, row, ref, stored, source, promotion.checksum_sha256),
        "stored_size": stored.size,
        "quota_bytes": stored.size,  # a sizeless upload's reservation trued up
        "confirmed_at": now,
        "updated_at": now,
    }
    if row.declared_size is None:
        changes["declared_size"] = stored.size  # not declared: what the provider holds
    if sequencer:
        changes["event_sequencer"] = sequencer
    won = MediaUpload.objects.filter(pk=row.pk, status=UploadStatus.PENDING).update(**changes)
    if not won:
        return _settled(MediaUpload.objects.get(pk=row.pk))
    quotas.release_row(row, stored.size or 0)  # this UPDATE won the row's exit from pending
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
    return _counted(get_upload(upload_id), payload or {}, source, sequencer)


def confirm_upload(*, owner: Any, upload_id: object, payload: Mapping[str, Any]) -> MediaUpload:
    """A client's confirm: owner check (someone else's upload is 404), then finalise."""
    row = get_upload_for_owner(owner, upload_id)
    return _counted(row, payload or {}, "client", "")


def _outcome(exc: Exception) -> str:
    if isinstance(exc, VerificationFailed):
        return "failed_verification"
    if isinstance(exc, Gone):
        return "gone"
    if isinstance(exc, Conflict) and exc.code == "not_uploaded_yet":
        return "not_uploaded_yet"
    if isinstance(exc, ProviderUnavailable):
        return "provider_unavailable"
    return "error"


def _counted(
    row: MediaUpload, payload: Mapping[str, Any], source: str, sequencer: str
) -> MediaUpload:
    """`_finalise_row` with the upload id on its log lines and its outcome counted."""
    bind_upload(row.id)
    already = row.status == UploadStatus.UPLOADED
    try:
        result = _finalise_row(row, payload, source, sequencer)
    except Exception as exc:
        metrics.CONFIRMS.labels(source, _outcome(exc)).inc()
        raise
    metrics.CONFIRMS.labels(source, "already_uploaded" if already else "uploaded").inc()
    return result
