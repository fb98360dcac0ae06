"""Creating an upload: policy and quota checks, the server-generated key, the signed instructions.

The quota reservation (`backend.uploads.quotas.reserving`: in Redis sent before signing and
read after, with the request's throttle check; in the database one statement with the INSERT),
signing (local, no network), the row's INSERT. No transaction; a failure gives the reservation
back and leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse

from backend.core import metrics
from backend.core.config import AppConfigSnapshot, get_app_config
from backend.core.errors import ApplicationError, ValidationFailed
from backend.core.logs import bind_upload
from backend.core.sizes import human_size
from backend.core.throttling import DeferredThrottle
from backend.storage import registry
from backend.storage.base import CloudStorageService, ObjectRef, UploadInstructions
from backend.storage.factory import CloudStorageFactory
from backend.uploads import keys, quotas, sniff
from backend.uploads.models import MediaUpload, UploadStatus

logger = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class NotAuthenticated(ApplicationError):
    status_code = 401
    code = "not_authenticated"


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
            f"The file is {human_size(size)}; the largest accepted upload is "
            f"{human_size(max_size)}.",
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

    @property
    def quota_bytes(self) -> int:
        """What this upload counts against the daily bytes while pending: the declared size,
        or the policy maximum for a sizeless one (trued up when it leaves `pending`)."""
        return self.size if self.size is not None else self.config.max_upload_size

    @property
    def limits(self) -> quotas.Limits:
        return quotas.Limits(
            max_pending=self.config.max_pending_uploads_per_user,
            max_bytes_per_day=self.config.max_bytes_per_user_per_day,
        )

    def reservation(self, owner: Any) -> Any:
        """Context manager: the quota reservation around a provider call and the INSERT."""
        return quotas.reservation(owner.pk, self.quota_bytes, self.limits)


def validate_new_upload(
    *, owner: Any, filename: str, content_type: str, size: int | None, checksum_sha256: str | None
) -> NewUploadRequest:
    """Authentication and the AppConfig policy (type, size, checksum): what every kind of new
    upload (single request or multipart) goes through first; the caller then reserves the
    per-user quotas around its provider call and INSERT (`request.reservation(owner)`).

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


def pending_row(
    request: NewUploadRequest,
    owner: Any,
    upload_id: uuid.UUID,
    service: CloudStorageService,
    key: str,
    expires_at: datetime,
    **columns: Any,
) -> MediaUpload:
    """The (unsaved) `pending` row of a validated request, at `service`."""
    return MediaUpload.unsaved(
        owner,
        id=upload_id,
        provider=service.name,
        key=key,
        original_filename=request.display_name,
        content_type=request.content_type,
        declared_size=request.size,
        quota_bytes=request.quota_bytes,
        checksum_sha256=request.checksum_sha256,
        status=UploadStatus.PENDING,
        expires_at=expires_at,
        **columns,
    )


def insert_pending(
    request: NewUploadRequest,
    owner: Any,
    upload_id: uuid.UUID,
    service: CloudStorageService,
    key: str,
    expires_at: datetime,
    **columns: Any,
) -> MediaUpload:
    """INSERT the `pending` row of a validated request (plus kind-specific `columns`); the
    caller holds the quota reservation (`request.reservation(owner)`)."""
    row = pending_row(request, owner, upload_id, service, key, expires_at, **columns)
    row.save(force_insert=True)
    return row


def _needs_large_upload(service: CloudStorageService, size: int | None) -> bool:
    """Whether a declared size is above what one request to `service` carries: True when the
    provider's chunked protocol takes it; a 400 when it needs the multipart endpoint or the
    provider has no protocol for it."""
    caps = service.capabilities
    if size is None or size <= caps.max_single_upload:
        return False
    if caps.large_uploads == "chunked":
        limit = registry.max_upload_size(service.name)
        if limit is not None and size > limit:
            raise ValidationFailed(
                f"The file is {human_size(size)}; the storage account takes files of at most "
                f"{human_size(limit)}.",
                code="file_too_large",
                details={"size": size, "max_upload_size": limit},
            )
        return True
    details: dict[str, Any] = {
        "size": size,
        "max_single_upload": caps.max_single_upload,
        "large_uploads": caps.large_uploads,
    }
    if caps.large_uploads == "multipart":
        raise ValidationFailed(
            f"The file is {human_size(size)}; one upload request carries at most "
            f"{human_size(caps.max_single_upload)} at the active provider. Larger files go up as "
            "a multipart upload: POST /api/v1/uploads/multipart/.",
            code="multipart_required",
            details={**details, "endpoint": reverse("multipart-create")},
        )
    raise ValidationFailed(
        f"The file is {human_size(size)}; the active provider takes at most "
        f"{human_size(caps.max_single_upload)} per file.",
        code="file_too_large",
        details={**details, "max_upload_size": caps.max_single_upload},
    )


def create_upload(
    *,
    owner: Any,
    filename: str,
    content_type: str,
    size: int | None,
    checksum_sha256: str | None = None,
    throttle: DeferredThrottle | None = None,
) -> tuple[MediaUpload, UploadInstructions]:
    """Validate, reserve a key at the active provider and return the upload instructions.

    `size=None` (not declared) signs for anything up to the policy maximum; confirm then
    records the stored size. `throttle`: the request's deferred rate check, run with the quota
    reservation (the caller runs it alone if this raises before)."""
    request = validate_new_upload(
        owner=owner,
        filename=filename,
        content_type=content_type,
        size=size,
        checksum_sha256=checksum_sha256,
    )
    service = CloudStorageFactory.active()
    if request.checksum_sha256 and not service.capabilities.verifies_checksum:
        raise ValidationFailed(
            "checksum_sha256 cannot be verified at the active storage provider; send the upload "
            "without it (confirm still checks size, type and the stored bytes' first block).",
            code="checksum_not_supported",
            details={"verifies_checksum": False},
        )
    chunked = _needs_large_upload(service, request.size)
    upload_id = uuid.uuid4()
    upload_ref = str(upload_id)  # formatted once, for the log context and the log line
    bind_upload(upload_ref)
    key = new_key(owner, upload_id, request.display_name, request.content_type, service)
    expires_in = min(request.config.presign_expiry_seconds, settings.UPLOAD_MAX_PRESIGN_EXPIRY)
    ref = ObjectRef(
        key=key, content_type=request.content_type, checksum_sha256=request.checksum_sha256
    )
    # The reservation is sent first (with the request's deferred throttle check, in Redis), the
    # instructions signed (local, no provider round trip) while it is answered, then the row
    # inserted if it was admitted (backend.uploads.quotas.reserving); a failure gives it back.
    with quotas.reserving(owner.pk, request.quota_bytes, request.limits, throttle) as reservation:
        if chunked and request.size is not None:
            instructions = service.presign_chunked_upload(
                ref,
                size=request.size,
                expires_in=expires_in,
                notification_url=notification_url_for(service),
            )
        else:
            # max_size = the declared size: the provider then refuses anything else outright
            # (where it enforces policies), and confirm re-checks the stored size either way.
            limit = request.size if request.size is not None else request.config.max_upload_size
            instructions = service.presign_upload(
                ref,
                size=limit,
                max_size=limit,
                expires_in=expires_in,
                notification_url=notification_url_for(service),
            )
        row = pending_row(request, owner, upload_id, service, key, instructions.expires_at)
        reservation.insert(row)
    metrics.presigns(service.name, "single").inc()
    logger.info(
        "upload %s created at %s (%s, %s bytes)", upload_ref, row.provider, row.key, request.size
    )
    return row, instructions
