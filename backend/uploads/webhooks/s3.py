"""S3 event notifications through Amazon SNS: SNS verification, then S3 records as events.

The bucket publishes its ObjectCreated / ObjectRemoved events to an SNS topic, which POSTs them
here. The SNS message signature is checked first (`sns.verify_message`, AWS's documented steps);
SNS's own messages (subscription confirmation, unsubscribe) are answered without events; a
Notification's Message carries the S3 records.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
"""

from __future__ import annotations

import json
import logging
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from backend.storage.s3 import S3Service
from backend.uploads.sequencer import is_valid_sequencer
from backend.uploads.webhooks import sns
from backend.uploads.webhooks.base import Delivery, ProviderWebhookView, WebhookRejected
from backend.uploads.webhooks.events import Action, StorageEvent

logger = logging.getLogger(__name__)

PROVIDER = S3Service.name
assert S3Service.capabilities.notifications is not None  # declared by the service
SOURCE = S3Service.capabilities.notifications.source

#: SNS delivers at least once; a MessageId seen (and fully handled) before is done.
SNS_SEEN_SECONDS = 24 * 3600
#: What a refused SNS message learns: which check failed (e.g. that no topic is allow-listed, or
#: that a guessed TopicArn is not ours) is for our log, not for whoever posted it.
SNS_REFUSED_MESSAGE = "Not a valid SNS message for this endpoint."


class SnsWebhookView(ProviderWebhookView):
    provider = PROVIDER

    def validate_request(self, request: HttpRequest) -> Delivery:
        try:
            message = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected(
                400, "invalid_message", "The body is not an SNS message (JSON)."
            ) from None
        try:
            verified = sns.verify_message(message)
        except sns.SnsVerificationError as exc:
            raise WebhookRejected(
                403, "invalid_signature", SNS_REFUSED_MESSAGE, reason=exc.reason
            ) from None
        header_type = request.headers.get("X-Amz-Sns-Message-Type")
        if header_type and header_type != verified.type:
            raise WebhookRejected(
                400, "invalid_message", "x-amz-sns-message-type does not match Type."
            )
        return Delivery(verified, replay_id=verified.message_id, replay_seconds=SNS_SEEN_SECONDS)

    def handle(self, delivery: Delivery) -> JsonResponse | None:
        verified: sns.SnsMessage = delivery.content
        if verified.type == sns.SUBSCRIPTION_CONFIRMATION:
            try:
                arn = sns.confirm_subscription(verified.topic_arn, verified.token or "")
            except sns.SnsVerificationError as exc:
                raise WebhookRejected(400, "subscription_refused", exc.reason) from None
            logger.info("SNS subscription to %s confirmed: %s", verified.topic_arn, arn)
            return JsonResponse({"status": "confirmed", "subscription_arn": arn})
        if verified.type == sns.UNSUBSCRIBE_CONFIRMATION:
            logger.warning("SNS: this endpoint was unsubscribed from %s", verified.topic_arn)
            return JsonResponse({"status": "ok", "results": []})
        return None

    def parse_events(self, delivery: Delivery) -> list[StorageEvent]:
        return parse_s3_message(delivery.content.message) or []


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
        event = _record_to_event(record)
        if event is not None:
            events.append(event)
    return events


def _record_to_event(record: object) -> StorageEvent | None:
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
    size, etag = obj.get("size"), obj.get("eTag")
    return StorageEvent(
        provider=PROVIDER,
        action=action,
        # S3 URL-encodes keys in events, with "+" for a space.
        key=unquote_plus(raw_key),
        source=SOURCE,
        sequencer=sequencer if is_valid_sequencer(sequencer) else "",
        payload={
            "event_name": name,
            "event_time": record.get("eventTime"),
            "size": size,
            "etag": etag,
        },
        etag=str(etag) if etag else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        ignore="event from another bucket" if _foreign(bucket) else "",
    )


def _foreign(bucket: object) -> bool:
    ours = settings.AWS_STORAGE_BUCKET_NAME
    return isinstance(bucket, str) and bool(bucket and ours) and bucket != ours
