"""Cloudinary notification verification (the webhook side; the algorithm is the provider's).

Cloudinary signs `raw body + X-Cld-Timestamp + api_secret` (SHA-1 or SHA-256 per account); the
check runs on the exact bytes received, before anything is parsed, because re-serialised JSON
(key order, spacing, escapes) would not hash the same.
https://cloudinary.com/documentation/notifications#verifying_notification_signatures
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


class NotificationRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedNotification:
    body: dict[str, Any]
    replay_key: str


def verify_notification(
    body: bytes, timestamp: str | None, signature: str | None, *, now: int | None = None
) -> VerifiedNotification:
    """Verify a delivery and only then parse it. Raises NotificationRejected (answer 401).

    StorageUnavailable (Cloudinary not configured) propagates: that is our fault, not the sender's.
    """
    from backend.storage.factory import CloudStorageFactory

    if not timestamp or not signature:
        raise NotificationRejected("X-Cld-Timestamp and X-Cld-Signature are required")
    current = int(time.time()) if now is None else now
    service = CloudStorageFactory.for_provider("cloudinary")
    verify = getattr(service, "verify_notification", None)
    if verify is None:  # pragma: no cover - the Cloudinary service always has it
        raise NotificationRejected("Cloudinary notifications cannot be verified")
    # The service checks the timestamp window (WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS, both
    # directions) before hashing, then the signature in constant time: the one place for both.
    if not verify(body, timestamp, signature, now=current):
        raise NotificationRejected(
            "X-Cld-Signature does not match the body, or X-Cld-Timestamp is outside the window"
        )
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise NotificationRejected("The notification body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise NotificationRejected("The notification body is not a JSON object")
    digest = hashlib.sha256(f"{timestamp}:{signature}".encode()).hexdigest()
    return VerifiedNotification(body=parsed, replay_key="webhooks:cld:seen:" + digest)


def already_processed(notification: VerifiedNotification) -> bool:
    return cache.get(notification.replay_key) is not None


def remember_processed(notification: VerifiedNotification) -> None:
    # Kept for the whole window in which the same signature would still be accepted.
    cache.set(notification.replay_key, 1, 2 * settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS + 60)
