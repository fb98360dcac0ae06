"""Public URLs of our webhook endpoints, as handed to providers."""

from __future__ import annotations

from django.conf import settings

CLOUDINARY_WEBHOOK_PATH = "/api/v1/webhooks/cloudinary/"


def cloudinary_notification_url() -> str | None:
    """The `notification_url` to sign into Cloudinary uploads; None when PUBLIC_BASE_URL is unset.

    Cloudinary must reach this URL from the internet, so a guess (e.g. from the current request's
    Host header, which a client controls) is never used.
    """
    base = (settings.PUBLIC_BASE_URL or "").rstrip("/")
    if not base:
        return None
    return base + CLOUDINARY_WEBHOOK_PATH
