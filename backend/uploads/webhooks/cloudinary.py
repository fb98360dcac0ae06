"""Cloudinary notifications: the signature check, then the notification as events.

Cloudinary signs `raw body + X-Cld-Timestamp + api_secret` (SHA-1 or SHA-256 per account); the
service checks it (`verify_notification_request`: timestamp window both ways, constant-time
compare) on the exact bytes received, before anything is parsed, because re-serialised JSON
(key order, spacing, escapes) would not hash the same.
https://cloudinary.com/documentation/notifications#verifying_notification_signatures
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from backend.storage.base import NotificationRejected
from backend.storage.cloudinary import CloudinaryService
from backend.storage.factory import CloudStorageFactory
from backend.uploads.webhooks.base import Delivery, ProviderWebhookView, WebhookRejected
from backend.uploads.webhooks.events import StorageEvent

logger = logging.getLogger(__name__)

PROVIDER = CloudinaryService.name
assert CloudinaryService.capabilities.notifications is not None  # declared by the service
SOURCE = CloudinaryService.capabilities.notifications.source

# Facts of an upload notification passed on to finalise (already authenticated).
_PAYLOAD_FIELDS = (
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


class CloudinaryWebhookView(ProviderWebhookView):
    provider = PROVIDER

    def validate_request(self, request: HttpRequest) -> Delivery:
        """401 unless the signature verifies; StorageUnavailable (Cloudinary not configured)
        propagates as a 503: that is our fault, not the sender's."""
        service = CloudStorageFactory.for_provider(PROVIDER)
        try:
            service.verify_notification_request(request.body, request.headers)
            content = json.loads(request.body)
            if not isinstance(content, dict):
                raise NotificationRejected("The notification body is not a JSON object")
        except ValueError:
            raise WebhookRejected(
                401, "invalid_signature", "The notification body is not JSON"
            ) from None
        except NotificationRejected as exc:
            raise WebhookRejected(401, "invalid_signature", exc.reason) from None
        signed = f"{request.headers['X-Cld-Timestamp']}:{request.headers['X-Cld-Signature']}"
        return Delivery(
            content=content,
            replay_id=hashlib.sha256(signed.encode()).hexdigest(),
            # The whole window in which the same signature would still be accepted.
            replay_seconds=2 * settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS + 60,
        )

    def parse_events(self, delivery: Delivery) -> list[StorageEvent]:
        return parse_cloudinary_notification(delivery.content)


def parse_cloudinary_notification(body: Mapping[str, Any]) -> list[StorageEvent]:
    kind = body.get("notification_type")
    if kind == "upload":
        public_id = body.get("public_id")
        if not isinstance(public_id, str) or not public_id:
            return []
        payload = {k: body[k] for k in _PAYLOAD_FIELDS if k in body}
        # No etag/size: signed with overwrite=false, an upload cannot replace a stored asset.
        return [StorageEvent(PROVIDER, "created", public_id, SOURCE, payload=payload)]
    if kind == "delete":
        resources = body.get("resources")
        if not isinstance(resources, list):
            resources = [body]  # single-resource shape
        events = []
        for resource in resources:
            public_id = resource.get("public_id") if isinstance(resource, dict) else None
            if isinstance(public_id, str) and public_id:
                events.append(StorageEvent(PROVIDER, "removed", public_id, SOURCE))
        return events
    logger.info("Cloudinary notification of type %r ignored", kind)
    return []
