from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from backend.uploads.webhooks import sns
from tests.uploads.webhooks.sns_signing import TOPIC_ARN, SnsSigner

S3_WEBHOOK = "/api/v1/webhooks/s3/"
CLOUDINARY_WEBHOOK = "/api/v1/webhooks/cloudinary/"


@pytest.fixture
def signer(settings: Any, monkeypatch: pytest.MonkeyPatch) -> SnsSigner:
    """SNS signing in the test; the certificate is served by the signer's recording fetcher."""
    settings.SNS_TOPIC_ARNS = [TOPIC_ARN]
    settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = 600
    signer = SnsSigner()
    monkeypatch.setattr(sns, "certificate_fetcher", signer.fetcher)
    return signer


@pytest.fixture
def user(db: None) -> Any:
    return get_user_model().objects.create_user("uploader", password="pw-not-used-123")


@pytest.fixture
def webhook_client() -> Client:
    # enforce_csrf_checks: the provider sends no CSRF token, so the endpoints must be exempt.
    return Client(enforce_csrf_checks=True)
