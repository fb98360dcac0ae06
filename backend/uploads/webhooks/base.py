"""The webhook view every provider's endpoint is: validate the request, parse events, apply.

`ProviderWebhookView.post` runs the same steps for every provider, in the manner of
django-anymail's webhook views; a provider module supplies the provider-specific ones:

1. `validate_request(request) -> Delivery`: authenticate the raw delivery (before anything
   parses it) and name its replay identity; raise `WebhookRejected` for one that is not genuine.
2. `handle(delivery)`: a delivery that is not about objects (SNS subscription messages) is
   answered here; the default lets every delivery through to the events.
3. The replay guard, shared by every provider: a delivery seen and fully handled before is
   answered `duplicate` and changes nothing (providers deliver at least once, and a captured
   delivery can be posted again while its signature still verifies).
4. `parse_events(delivery)`: the delivery as `StorageEvent`s; `apply(event)` applies each one
   through the media upload service (`events.apply_event`).

Answers: 200 once handled (including "nothing to do"), 4xx for a delivery that is not genuine or
not well-formed (retrying cannot help), 5xx when processing failed and a retry may succeed
(database or provider down): providers retry non-2xx answers. Plain Django views, not DRF: no
session/CSRF/auth machinery applies to a provider's POST, and the body must be read as raw bytes
before anything parses it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from backend.core import metrics
from backend.core.errors import ServiceUnavailable, error_body
from backend.uploads.webhooks.events import EventOutcome, StorageEvent, apply_event

logger = logging.getLogger(__name__)

#: What an anonymous caller learns from a 503: nothing about our configuration or state (which
#: variables are missing, which dependency is down). The details go to the server log only.
UNAVAILABLE_CODE = "temporarily_unavailable"
UNAVAILABLE_MESSAGE = "Temporarily unavailable; retry later."
DEFAULT_RETRY_AFTER = 30


class WebhookRejected(Exception):
    """The delivery is refused with a 4xx: `status`, `code` and `message` go to the sender,
    `reason` (which may say more, e.g. which check failed) to our log only."""

    def __init__(self, status: int, code: str, message: str, *, reason: str = "") -> None:
        super().__init__(reason or message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or message


@dataclass(frozen=True)
class Delivery:
    """An authenticated delivery: its parsed content and its replay identity."""

    content: Any
    #: The same delivery arriving again has the same id (signature, message id ...).
    replay_id: str
    #: How long the same delivery could still be accepted (the guard remembers it that long).
    replay_seconds: int


def reject(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def temporarily_unavailable(retry_after: int = DEFAULT_RETRY_AFTER) -> JsonResponse:
    response = JsonResponse(error_body(UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE), status=503)
    response["Retry-After"] = str(retry_after)
    return response


def _unavailable(exc: ServiceUnavailable) -> JsonResponse:
    logger.warning("webhook answered 503 (%s): %s %s", exc.code, exc.message, exc.details or "")
    return temporarily_unavailable(exc.retry_after)


def _result(response: JsonResponse) -> str:
    """The delivery's result label (metrics.WEBHOOK_RESULTS) from the answer given."""
    if response.status_code == 503:
        return "unavailable"
    if response.status_code >= 400:
        return "rejected"
    try:
        status = json.loads(response.content).get("status")
    except ValueError:
        status = None
    return "duplicate" if status == "duplicate" else "ok"


@method_decorator(csrf_exempt, name="dispatch")
class ProviderWebhookView(View):
    """One provider's webhook endpoint (routed as `webhooks:<provider>`)."""

    #: The storage provider's name (as its service declares it).
    provider: ClassVar[str]
    http_method_names = ["post"]

    # --- what a provider module supplies ----------------------------------------------------
    def validate_request(self, request: HttpRequest) -> Delivery:
        raise NotImplementedError

    def handle(self, delivery: Delivery) -> JsonResponse | None:
        return None

    def parse_events(self, delivery: Delivery) -> list[StorageEvent]:
        raise NotImplementedError

    def apply(self, event: StorageEvent) -> EventOutcome:
        return apply_event(event)

    # --- the steps, the same for every provider ----------------------------------------------
    def post(self, request: HttpRequest) -> JsonResponse:
        response = self._deliver(request)
        metrics.WEBHOOKS.labels(self.provider, _result(response)).inc()
        return response

    def _deliver(self, request: HttpRequest) -> JsonResponse:
        try:
            delivery = self.validate_request(request)
        except WebhookRejected as exc:
            return self._rejected(exc)
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        try:
            answer = self.handle(delivery)
            if answer is not None:
                return answer
            replay_key = f"webhooks:seen:{self.provider}:{delivery.replay_id}"
            if cache.get(replay_key) is not None:
                return JsonResponse({"status": "duplicate", "results": []})
            results = [self.apply(event).as_dict() for event in self.parse_events(delivery)]
        except WebhookRejected as exc:
            return self._rejected(exc)
        except ServiceUnavailable as exc:
            return _unavailable(exc)
        except DatabaseError:
            logger.exception("%s notification failed on the database", self.provider)
            return temporarily_unavailable()
        cache.set(replay_key, 1, delivery.replay_seconds)
        return JsonResponse({"status": "ok", "results": results})

    def _rejected(self, exc: WebhookRejected) -> JsonResponse:
        logger.warning("%s notification rejected: %s", self.provider, exc.reason)
        return reject(exc.status, exc.code, exc.message)
