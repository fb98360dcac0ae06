"""The password endpoint's throttle cannot be dodged with a forged X-Forwarded-For."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.uploads.api.views import TokenObtainThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture
def tight_throttle():
    original = TokenObtainThrottle.THROTTLE_RATES
    TokenObtainThrottle.THROTTLE_RATES = {"auth_token": "2/minute"}
    yield
    TokenObtainThrottle.THROTTLE_RATES = original


def test_forged_forwarded_for_does_not_reset_the_throttle(tight_throttle) -> None:
    get_user_model().objects.create_user("victim", password="right-password-123")
    anon = APIClient()
    statuses = [
        anon.post(
            "/api/v1/auth/token/",
            {"username": "victim", "password": f"guess-{i}"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i}",  # a new "client address" every time
        ).status_code
        for i in range(5)
    ]
    assert statuses == [400, 400, 429, 429, 429]
    assert not Token.objects.exists()


def test_behind_one_proxy_the_forwarded_address_is_the_client(tight_throttle, settings) -> None:
    """With DJANGO_NUM_PROXIES=1 the last X-Forwarded-For hop (set by our load balancer) is
    the client, so two real clients behind the balancer get separate budgets."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    from rest_framework.settings import api_settings

    api_settings.reload()
    try:
        anon = APIClient()

        def attempt(client_ip: str) -> int:
            return anon.post(
                "/api/v1/auth/token/",
                {"username": "nobody", "password": "x"},
                format="json",
                HTTP_X_FORWARDED_FOR=f"198.51.100.7, {client_ip}",
            ).status_code

        assert [attempt("192.0.2.1") for _ in range(3)] == [400, 400, 429]
        assert attempt("192.0.2.2") == 400
    finally:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 0}
        api_settings.reload()
