"""Provider events in one shape, and what each one does to our rows.

Both webhooks (Cloudinary notifications, S3 events through SNS) reduce a verified delivery to
`StorageEvent`s and hand them to `apply_event`, which only calls the media upload service for
state changes (`finalise_upload`, `mark_deleted_by_provider`): the same exactly-once, idempotent
path a client confirm takes.

An event we cannot or must not act on (unknown key, foreign prefix or bucket, stale sequencer, a
row already past the point the event refers to) is an `ignored` outcome, answered 200: telling the
provider to retry would only repeat the same verdict. A failure that may pass (database or
provider down, object not visible yet) raises `RetryableEventError`, answered 5xx so the provider
delivers again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

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
from backend.uploads.sequencer import is_valid_sequencer, sequencer_is_newer

logger = logging.getLogger(__name__)

Action = Literal["created", "removed"]

SOURCE_CLOUDINARY = "cloudinary_webhook"
SOURCE_S3 = "s3_event"


@dataclass(frozen=True)
class StorageEvent:
    provider: str
    action: Action
    key: str
    source: str
    sequencer: str = ""
    # Provider facts from the (already authenticated) delivery, passed to finalise as payload.
    payload: dict[str, Any] = field(default_factory=dict)
    bucket: str | None = None


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


# --- S3 (through SNS) ----------------------------------------------------------------------------


def parse_s3_message(message: str) -> list[StorageEvent] | None:
    """The S3 events in an SNS Notification's Message; None for s3:TestEvent or non-S3 content."""
    try:
        body = json.loads(message)
    except ValueError:
        logger.warning("SNS notification ignored: its Message is not JSON")
        return None
    if not isinstance(body, dict):
        return None
    if body.get("Event") == "s3:TestEvent":
        logger.info("S3 test event received for bucket %s", body.get("Bucket"))
        return None
    records = body.get("Records")
    if not isinstance(records, list):
        logger.warning("SNS notification ignored: no S3 Records in its Message")
        return None
    events = []
    for record in records:
        event = _s3_record_to_event(record)
        if event is not None:
            events.append(event)
    return events


def _s3_record_to_event(record: object) -> StorageEvent | None:
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        return None
    name = str(record.get("eventName", ""))
    if name.startswith("ObjectCreated:"):
        action: Action = "created"
    elif name.startswith("ObjectRemoved:"):
        action = "removed"
    else:
        return None  # restore, replication, lifecycle transition...: not ours to act on
    s3 = record.get("s3")
    s3 = s3 if isinstance(s3, dict) else {}
    obj = s3.get("object")
    obj = obj if isinstance(obj, dict) else {}
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        return None
    bucket_info = s3.get("bucket")
    bucket = bucket_info.get("name") if isinstance(bucket_info, dict) else None
    sequencer = str(obj.get("sequencer") or "")
    return StorageEvent(
        provider="s3",
        action=action,
        # S3 URL-encodes keys in events, with "+" for a space.
        key=unquote_plus(raw_key),
        source=SOURCE_S3,
        sequencer=sequencer if is_valid_sequencer(sequencer) else "",
        payload={
            "event_name": name,
            "event_time": record.get("eventTime"),
            "size": obj.get("size"),
            "etag": obj.get("eTag"),
        },
        bucket=bucket if isinstance(bucket, str) else None,
    )


# --- Cloudinary ----------------------------------------------------------------------------------

_CLOUDINARY_PAYLOAD_FIELDS = (
    "public_id",
    "version",
    "version_id",
    "asset_id",
    "resource_type",
    "type",
    "format",
    "bytes",
    "width",
    "height",
    "etag",
    "secure_url",
    "url",
    "created_at",
)


def parse_cloudinary_notification(body: Mapping[str, Any]) -> list[StorageEvent]:
    kind = body.get("notification_type")
    if kind == "upload":
        public_id = body.get("public_id")
        if not isinstance(public_id, str) or not public_id:
            return []
        payload = {k: body[k] for k in _CLOUDINARY_PAYLOAD_FIELDS if k in body}
        return [
            StorageEvent("cloudinary", "created", public_id, SOURCE_CLOUDINARY, payload=payload)
        ]
    if kind == "delete":
        resources = body.get("resources")
        if not isinstance(resources, list):
            resources = [body]  # single-resource shape
        events = []
        for resource in resources:
            public_id = resource.get("public_id") if isinstance(resource, dict) else None
            if isinstance(public_id, str) and public_id:
                events.append(StorageEvent("cloudinary", "removed", public_id, SOURCE_CLOUDINARY))
        return events
    logger.info("Cloudinary notification of type %r ignored", kind)
    return []


# --- applying an event ---------------------------------------------------------------------------


def _ignored(event: StorageEvent, reason: str, upload_id: str | None = None) -> EventOutcome:
    logger.info("%s %s event for %s ignored: %s", event.provider, event.action, event.key, reason)
    return EventOutcome(event.key, event.action, "ignored", reason, upload_id)


def _under_our_prefix(key: str) -> bool:
    prefix = settings.UPLOAD_KEY_PREFIX.strip("/")
    return not prefix or key.startswith(prefix + "/")


def apply_event(event: StorageEvent) -> EventOutcome:
    """Apply one verified provider event. Raises RetryableEventError when a retry may succeed."""
    from backend.uploads import selectors, services

    if not _under_our_prefix(event.key):
        return _ignored(event, "key outside UPLOAD_KEY_PREFIX")
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    if event.provider == "s3" and event.bucket and bucket and event.bucket != bucket:
        return _ignored(event, "event from another bucket")
    try:
        row = selectors.get_upload_by_key(event.provider, event.key)
    except DatabaseError as exc:
        raise RetryableEventError("The database is not available.") from exc
    if row is None:
        return _ignored(event, "no upload with this key")
    upload_id = str(row.id)
    # A cheap early exit; the services repeat this comparison under the row lock.
    if event.sequencer and not sequencer_is_newer(event.sequencer, row.event_sequencer):
        return _ignored(event, "older or repeated sequencer", upload_id)

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
        if marked is None or getattr(marked, "status", None) != "deleted":
            return _ignored(event, "row not changed by the delete", upload_id)
        return EventOutcome(event.key, event.action, "deleted", upload_id=upload_id)
    except (ValidationFailed, Gone, NotFound) as exc:
        # The verdict is recorded (row failed) or the row is past this event: nothing to retry.
        return _ignored(event, f"{exc.code}: {exc.message}", upload_id)
    except Conflict as exc:
        if _still_pending(row.id):
            # Not visible at the provider yet: let the provider deliver again later.
            raise RetryableEventError(exc.message, details={"upload_id": upload_id}) from exc
        return _ignored(event, f"{exc.code}: {exc.message}", upload_id)
    except ServiceUnavailable:
        raise
    except DatabaseError as exc:
        raise RetryableEventError("The database is not available.") from exc
    except ApplicationError as exc:
        return _ignored(event, f"{exc.code}: {exc.message}", upload_id)


def _normalised_etag(value: object) -> str:
    return str(value).strip().strip('"').lower() if value else ""


def _replaced_after_confirm(event: StorageEvent, row: Any) -> bool:
    """An S3 write to the key of an `uploaded` row whose ETag or size is not the confirmed one."""
    from backend.uploads.models import UploadStatus

    if event.provider != "s3" or getattr(row, "status", None) != UploadStatus.UPLOADED:
        return False
    confirmed = row.metadata or {}
    etag, known_etag = event.payload.get("etag"), confirmed.get("etag")
    if etag and known_etag and _normalised_etag(etag) != _normalised_etag(known_etag):
        return True
    size, known_size = event.payload.get("size"), confirmed.get("bytes")
    return (
        isinstance(size, int)
        and not isinstance(size, bool)
        and isinstance(known_size, int)
        and size != known_size
    )


def _reverify(event: StorageEvent, row: Any) -> EventOutcome:
    from backend.uploads import services
    from backend.uploads.models import UploadStatus

    upload_id = str(row.id)
    checked = services.reverify_uploaded(row.id, sequencer=event.sequencer)
    if checked.status == UploadStatus.FAILED:
        reason = str((checked.metadata or {}).get("failure_reason", ""))
        return EventOutcome(event.key, event.action, "failed", reason, upload_id)
    return EventOutcome(event.key, event.action, "finalised", upload_id=upload_id)


def _still_pending(upload_id: Any) -> bool:
    from backend.uploads.models import MediaUpload, UploadStatus

    status = MediaUpload.objects.filter(pk=upload_id).values_list("status", flat=True).first()
    return status == UploadStatus.PENDING
