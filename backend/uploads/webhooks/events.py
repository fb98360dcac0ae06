"""Provider events in one shape, and what each one does to our rows.

Every provider's webhook (one module each in this package) reduces a verified delivery to
`StorageEvent`s and hands them to `apply_event`, which only calls the media upload service for
state changes (`finalise_upload`, `mark_deleted_by_provider`, `reverify_uploaded`): the same
exactly-once, idempotent path a client confirm takes.

An event we cannot or must not act on (unknown key, foreign prefix or bucket, stale sequencer, a
row already past the point the event refers to) is an `ignored` outcome, answered 200: telling the
provider to retry would only repeat the same verdict. A failure that may pass (database or
provider down, object not visible yet) raises `RetryableEventError`, answered 5xx so the provider
delivers again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings
from django.db import DatabaseError

from backend.core.errors import (
    ApplicationError,
    Conflict,
    Gone,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from backend.uploads import selectors, services
from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.sequencer import sequencer_is_newer

logger = logging.getLogger(__name__)

Action = Literal["created", "removed"]


@dataclass(frozen=True)
class StorageEvent:
    provider: str
    action: Action
    key: str
    #: Who authenticated it: the provider's `capabilities.notifications.source`.
    source: str
    #: Orders events on one key (S3's `sequencer`); empty when the provider gives none.
    sequencer: str = ""
    # Provider facts from the (already authenticated) delivery, passed to finalise as payload.
    payload: dict[str, Any] = field(default_factory=dict)
    #: The facts of the write a "created" event reports, when the provider's event carries
    #: them (S3 records do): other facts on an `uploaded` row mean its object was replaced.
    etag: str | None = None
    size: int | None = None
    #: Set by the parser for an event it knows must not be applied (answered as ignored).
    ignore: str = ""


@dataclass(frozen=True)
class EventOutcome:
    key: str
    action: str
    result: str  # "finalised", "failed" (replaced after confirm), "deleted", "ignored"
    reason: str = ""
    upload_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "result": self.result,
            "reason": self.reason,
            "upload_id": self.upload_id,
        }


class RetryableEventError(ServiceUnavailable):
    """Processing failed in a way a later delivery may not: answer 5xx so the provider retries."""

    code = "webhook_retry"


# --- applying an event ---------------------------------------------------------------------------


def ignored(event: StorageEvent, reason: str, upload_id: str | None = None) -> EventOutcome:
    logger.info("%s %s event for %s ignored: %s", event.provider, event.action, event.key, reason)
    return EventOutcome(event.key, event.action, "ignored", reason, upload_id)


def _under_our_prefix(key: str) -> bool:
    prefix = settings.UPLOAD_KEY_PREFIX.strip("/")
    return not prefix or key.startswith(prefix + "/")


def apply_event(event: StorageEvent) -> EventOutcome:
    """Apply one verified provider event. Raises RetryableEventError when a retry may succeed."""
    if not _under_our_prefix(event.key):
        return ignored(event, "key outside UPLOAD_KEY_PREFIX")
    if event.ignore:
        return ignored(event, event.ignore)
    try:
        row = selectors.get_upload_by_key(event.provider, event.key)
    except DatabaseError as exc:
        raise RetryableEventError("The database is not available.") from exc
    if row is None:
        return ignored(event, "no upload with this key")
    upload_id = str(row.id)
    # A cheap early exit; the services repeat this comparison under the row lock.
    if event.sequencer and not sequencer_is_newer(event.sequencer, row.event_sequencer):
        return ignored(event, "older or repeated sequencer", upload_id)

    try:
        if event.action == "created":
            finalised = services.finalise_upload(
                row.id, payload=event.payload, source=event.source, sequencer=event.sequencer
            )
            if _replaced_after_confirm(event, finalised):
                # Already uploaded (before this event, or by a confirm that won the race with
                # it) with other facts than this write: the object was replaced after it was
                # verified. Check it again; the sequencer keeps older writes from counting.
                return _reverify(event, finalised)
            return EventOutcome(event.key, event.action, "finalised", upload_id=upload_id)
        marked = services.mark_deleted_by_provider(row.id, sequencer=event.sequencer)
        if marked is None or marked.status != UploadStatus.DELETED:
            return ignored(event, "row not changed by the delete", upload_id)
        return EventOutcome(event.key, event.action, "deleted", upload_id=upload_id)
    except (ValidationFailed, Gone, NotFound) as exc:
        # The verdict is recorded (row failed) or the row is past this event: nothing to retry.
        return ignored(event, f"{exc.code}: {exc.message}", upload_id)
    except Conflict as exc:
        if _still_pending(row.id):
            # Not visible at the provider yet: let the provider deliver again later.
            raise RetryableEventError(exc.message, details={"upload_id": upload_id}) from exc
        return ignored(event, f"{exc.code}: {exc.message}", upload_id)
    except ServiceUnavailable:
        raise
    except DatabaseError as exc:
        raise RetryableEventError("The database is not available.") from exc
    except ApplicationError as exc:
        return ignored(event, f"{exc.code}: {exc.message}", upload_id)


def _normalised_etag(value: object) -> str:
    return str(value).strip().strip('"').lower() if value else ""


def _replaced_after_confirm(event: StorageEvent, row: MediaUpload) -> bool:
    """A write to the key of an `uploaded` row whose ETag or size is not the confirmed one."""
    if row.status != UploadStatus.UPLOADED:
        return False
    confirmed = row.metadata or {}
    known_etag, known_size = confirmed.get("etag"), confirmed.get("bytes")
    if event.etag and known_etag and _normalised_etag(event.etag) != _normalised_etag(known_etag):
        return True
    return event.size is not None and isinstance(known_size, int) and event.size != known_size


def _reverify(event: StorageEvent, row: MediaUpload) -> EventOutcome:
    upload_id = str(row.id)
    checked = services.reverify_uploaded(row.id, sequencer=event.sequencer)
    if checked.status == UploadStatus.FAILED:
        reason = str((checked.metadata or {}).get("failure_reason", ""))
        return EventOutcome(event.key, event.action, "failed", reason, upload_id)
    return EventOutcome(event.key, event.action, "finalised", upload_id=upload_id)


def _still_pending(upload_id: Any) -> bool:
    status = MediaUpload.objects.filter(pk=upload_id).values_list("status", flat=True).first()
    return status == UploadStatus.PENDING
