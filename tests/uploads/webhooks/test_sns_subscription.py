"""Subscription handshake: confirmed through the SNS API (moto), never via SubscribeURL."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from django.test import Client, override_settings

from backend.uploads.webhooks import sns
from tests.uploads.webhooks.conftest import S3_WEBHOOK
from tests.uploads.webhooks.sns_signing import TOPIC_ARN, SnsSigner


@pytest.fixture
def sns_topic() -> Iterator[Any]:
    from moto import mock_aws

    with (
        mock_aws(),
        override_settings(
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN=""
        ),
    ):
        sns.reset_clients()
        client = boto3.client("sns", region_name="us-east-1")
        arn = client.create_topic(Name="upload-events")["TopicArn"]
        assert arn == TOPIC_ARN
        try:
            yield client
        finally:
            sns.reset_clients()


@pytest.fixture
def no_outbound_http(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) any HTTP request made with requests or urllib."""
    attempts: list[str] = []

    def refuse_requests(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        attempts.append(url)
        raise AssertionError(f"unexpected outbound request to {url}")

    def refuse_urlopen(url: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(str(getattr(url, "full_url", url)))
        raise AssertionError("unexpected urlopen")

    monkeypatch.setattr(requests.Session, "request", refuse_requests)
    monkeypatch.setattr(urllib.request, "urlopen", refuse_urlopen)
    return attempts


def _post(client: Client, message: dict[str, Any]) -> Any:
    return client.post(
        S3_WEBHOOK,
        data=json.dumps(message),
        content_type="text/plain; charset=UTF-8",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=message["Type"],
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_subscription_is_confirmed_through_the_sns_api(
    sns_topic: Any,
    signer: SnsSigner,
    no_outbound_http: list[str],
    webhook_client: Client,
    version: str,
) -> None:
    message = signer.subscription_confirmation(version=version)

    response = _post(webhook_client, message)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "confirmed"
    # moto answers ConfirmSubscription with a subscription ARN under the topic.
    assert body["subscription_arn"].startswith(TOPIC_ARN + ":")
    assert no_outbound_http == []  # SubscribeURL was never fetched
    assert signer.fetched == [signer.cert_url]


def test_confirmation_for_a_topic_sns_does_not_know_is_refused(
    sns_topic: Any, signer: SnsSigner, no_outbound_http: list[str], webhook_client: Client
) -> None:
    sns_topic.delete_topic(TopicArn=TOPIC_ARN)

    response = _post(webhook_client, signer.subscription_confirmation())

    # The call really reached SNS (moto), which refused: a 4xx, nothing fetched.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "subscription_refused"
    assert no_outbound_http == []


def test_forged_confirmation_never_reaches_sns(
    sns_topic: Any, signer: SnsSigner, no_outbound_http: list[str], webhook_client: Client
) -> None:
    message = signer.subscription_confirmation()
    forged = {**message, "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription"}
    assert _post(webhook_client, forged).status_code == 403
    other_topic = {**message, "TopicArn": "arn:aws:sns:us-east-1:123456789012:other"}
    assert _post(webhook_client, other_topic).status_code == 403
    assert no_outbound_http == []


def test_unsubscribe_confirmation_is_logged_not_acted_on(
    signer: SnsSigner,
    no_outbound_http: list[str],
    webhook_client: Client,
    caplog: pytest.LogCaptureFixture,
    db: None,
) -> None:
    message = signer.subscription_confirmation(kind="UnsubscribeConfirmation")
    response = _post(webhook_client, message)
    assert response.status_code == 200
    assert "unsubscribed" in caplog.text
    assert no_outbound_http == []


def test_sns_unreachable_is_a_retryable_error(
    signer: SnsSigner, webhook_client: Client, db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.config

    # A real connection failure: the SNS client is pointed at a closed loopback port.
    def client_to_nowhere(region: str) -> Any:
        return boto3.client(
            "sns",
            region_name=region,
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
        )

    monkeypatch.setattr(sns, "_sns_client", client_to_nowhere)
    response = _post(webhook_client, signer.subscription_confirmation())
    assert response.status_code == 503
    assert response.has_header("Retry-After")
