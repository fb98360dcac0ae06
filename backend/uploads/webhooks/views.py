"""Webhook endpoints: verify, reduce to events, apply through the services, answer.

Answers: 200 once handled (including "nothing to do"), 4xx for a delivery that is not genuine or
not well-formed (retrying cannot help), 5xx when processing failed and a retry may succeed
(database or provider down): both Cloudinary and SNS retry non-2xx answers.
Plain Django views, not DRF: no session/CSRF/auth machinery applies to a provider's POST, and
the body must be read as raw bytes before anything parses it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from backend.core.errors import ServiceUnavailable, error_body
from backend.uploads.webhooks import cloudinary, events, sns

logger = logging.getLogger(__name__)

SNS_SEEN_SECONDS = 24 * 3600


#: What an anonymous caller learns from a 503: nothing about our configuration or state (which
#: variables are missing, which dependency is down). The details go to the server log only.
UNAVAILABLE_CODE = "temporarily_unavailable"
UNAVAILABLE_MESSAGE = "Temporarily unavailable; retry later."
#: Same for a refused SNS message: which check failed (e.g. that no topic is allow-listed, or
#: that a guessed TopicArn is not ours) is for our log, not for whoever posted it.
SNS_REFUSED_MESSAGE = "Not a valid SNS message for this endpoint."
DEFAULT_RETRY_AFTER = 30


def _reject(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def _temporarily_unavailable(retry_after: int = DEFAULT_RETRY_AFTER) -> JsonResponse:
    response = JsonResponse(error_body(UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE), status=503)
    response["Retry-After"] = str(retry_after)
    return response


def _unavailable(exc: ServiceUnavailable) -> JsonResponse:
    logger.warning("webhook answered 503 (%s): %s %s", exc.code, exc.message, exc.details or "")
    return _temporarily_unavailable(exc.retry_after)


def _apply_all(found: list[events.StorageEvent]) -> list[dict[str, Any]]:
    return [events.apply_event(event).as_dict() for event in found]


@method_decorator(csrf_exempt, name="dispatch")
class CloudinaryWebhookView(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            verified = cloudinary.verify_notification(
                request.body,
                request.headers.get("X-Cld-Timestamp"),
                request.headers.get("X-Cld-Signature"),
            )
        except cloudinary.NotificationRejected as exc:
            logger.warning("Cloudinary notification rejected: %s", exc.reason)
            return _reject(401, "invalid_signature", exc.reason)
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        if cloudinary.already_processed(verified):
            return JsonResponse({"status": "duplicate", "results": []})
        try:
            results = _apply_all(events.parse_cloudinary_notification(verified.body))
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        except DatabaseError:
            logger.exception("Cloudinary notification failed on the database")
            return _temporarily_unavailable()
        cloudinary.remember_processed(verified)
        return JsonResponse({"status": "ok", "results": results})


@method_decorator(csrf_exempt, name="dispatch")
class SnsWebhookView(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            message = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _reject(400, "invalid_message", "The body is not an SNS message (JSON).")
        try:
            verified = sns.verify_message(message)
        except sns.SnsVerificationError as exc:
            logger.warning("SNS message rejected: %s", exc.reason)
            return _reject(403, "invalid_signature", SNS_REFUSED_MESSAGE)
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        header_type = request.headers.get("X-Amz-Sns-Message-Type")
        if header_type and header_type != verified.type:
            return _reject(400, "invalid_message", "x-amz-sns-message-type does not match Type.")
        try:
            if verified.type == sns.SUBSCRIPTION_CONFIRMATION:
                return self._confirm(verified)
            if verified.type == sns.UNSUBSCRIBE_CONFIRMATION:
                logger.warning("SNS: this endpoint was unsubscribed from %s", verified.topic_arn)
                return JsonResponse({"status": "ok", "results": []})
            return self._notification(verified)
        except sns.SnsVerificationError as exc:
            logger.warning("SNS message refused: %s", exc.reason)
            return _reject(400, "subscription_refused", exc.reason)
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        except DatabaseError:
            logger.exception("SNS notification failed on the database")
            return _temporarily_unavailable()

    def _confirm(self, verified: sns.SnsMessage) -> JsonResponse:
        subscription_arn = sns.confirm_subscription(verified.topic_arn, verified.token or "")
        logger.info("SNS subscription to %s confirmed: %s", verified.topic_arn, subscription_arn)
        return JsonResponse({"status": "confirmed", "subscription_arn": subscription_arn})

    def _notification(self, verified: sns.SnsMessage) -> JsonResponse:
        # SNS delivers at least once: a MessageId seen (and fully handled) before is done.
        seen_key = f"webhooks:sns:seen:{verified.message_id}"
        if cache.get(seen_key) is not None:
            return JsonResponse({"status": "duplicate", "results": []})
        found = events.parse_s3_message(verified.message)
        results = _apply_all(found) if found else []
        cache.set(seen_key, 1, SNS_SEEN_SECONDS)
        return JsonResponse({"status": "ok", "results": results})
