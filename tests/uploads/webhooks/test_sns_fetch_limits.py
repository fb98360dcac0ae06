"""Forged SNS messages cannot make us fetch certificates without bound (issue 11).

Every message passes the checks that need no network (allowed topic, well-formed certificate URL on
an SNS host, region, timestamp), each naming a certificate file of its own: the certificate host is
a local HTTP server (the SNS host's path, served from our port range) that counts the requests
really sent, through the production fetch (`fetch_certificate`: requests inside provider_call).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from django.core.cache import cache
from django.test import Client

from backend.uploads.webhooks import sns
from tests.conftest import free_port
from tests.uploads.webhooks.sns_signing import SnsSigner

S3_WEBHOOK = "/api/v1/webhooks/s3/"


class CertificateHost:
    """Answers 404 to every certificate path (the SNS host does not know forged files), and
    counts the requests."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.paths.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cert_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[CertificateHost]:
    host = CertificateHost()
    # The production fetch, sent to the local host at the SNS URL's path.
    monkeypatch.setattr(
        sns,
        "certificate_fetcher",
        lambda url: sns.fetch_certificate(host.url + urlsplit(url).path),
    )
    yield host
    host.stop()


def _forged_messages(count: int) -> list[dict[str, Any]]:
    messages = []
    for _ in range(count):
        url = (
            "https://sns.us-east-1.amazonaws.com/"
            f"SimpleNotificationService-{secrets.token_hex(16)}.pem"
        )
        messages.append(SnsSigner(cert_url=url).notification("{}"))
    return messages


def _post(client: Client, message: dict[str, Any]) -> Any:
    return client.post(
        S3_WEBHOOK,
        data=json.dumps(message),
        content_type="text/plain; charset=UTF-8",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=message.get("Type", ""),
    )


def _within_one_minute() -> None:
    """The cap counts per clock minute: start a burst well before the minute ends, so the
    burst is counted under one minute."""
    remaining = 60 - time.time() % 60
    if remaining < 10:
        time.sleep(remaining + 0.1)


def _send_forged(settings: Any, count: int, *, wait: bool = True) -> list[Any]:
    if wait:
        _within_one_minute()
    settings.SNS_TOPIC_ARNS = [SnsSigner().topic_arn]
    client = Client()
    return [_post(client, message) for message in _forged_messages(count)]


def test_twenty_forged_certificate_urls_cost_at_most_the_cap(
    db: None, settings: Any, cert_host: CertificateHost
) -> None:
    settings.SNS_CERT_FETCHES_PER_MINUTE = 5

    answers = _send_forged(settings, 20)

    assert len(cert_host.paths) == 5
    assert len(set(cert_host.paths)) == 5
    statuses = [answer.status_code for answer in answers]
    # Fetched and refused by the host: 403. Over the cap: 503 + Retry-After (SNS retries a
    # genuine message; nothing was fetched).
    assert statuses.count(403) == 5
    assert statuses.count(503) == 15
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert 1 <= int(refused["Retry-After"]) <= 60


def test_the_default_cap_bounds_twenty_forged_urls(
    db: None, settings: Any, cert_host: CertificateHost
) -> None:
    _send_forged(settings, 20)
    assert settings.SNS_CERT_FETCHES_PER_MINUTE == 10  # the shipped default
    assert len(cert_host.paths) == 10


def test_one_url_is_fetched_once_per_cooldown(
    db: None, settings: Any, cert_host: CertificateHost
) -> None:
    """The cool-down holds even where no failure was remembered (a fetch in flight in another
    process, or a cache entry dropped): the URL is not fetched again within it."""
    settings.SNS_TOPIC_ARNS = [SnsSigner().topic_arn]
    message = _forged_messages(1)[0]
    client = Client()

    first = _post(client, message)
    cache.delete(sns._cert_failure_key(message["SigningCertURL"]))  # forget the verdict
    second = _post(client, message)

    assert len(cert_host.paths) == 1
    assert (first.status_code, second.status_code) == (403, 503)


def test_the_limits_are_shared_through_redis(
    db: None, settings: Any, cert_host: CertificateHost, redis_url: str
) -> None:
    """With the production cache (Redis), the counter lives in Redis: fetches another process
    made this minute count against the cap here."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"sns-limits-{secrets.token_hex(4)}",
        }
    }
    settings.SNS_CERT_FETCHES_PER_MINUTE = 3
    try:
        _within_one_minute()  # both bursts below in one minute
        _send_forged(settings, 2, wait=False)
        assert len(cert_host.paths) == 2
        # Another process (its own connection) sees the same count, and its fetches add to it.
        other = redis.Redis.from_url(redis_url)
        keys = other.keys(f"{settings.CACHES['default']['KEY_PREFIX']}:*certfetches:*")
        assert len(keys) == 1
        assert int(other.get(keys[0]) or 0) == 2
        other.incr(keys[0])  # the other process fetched one more

        answers = _send_forged(settings, 5, wait=False)

        assert len(cert_host.paths) == 2  # the cap (3) was reached elsewhere
        assert {answer.status_code for answer in answers} == {503}
    finally:
        cache.clear()
