"""Sign SNS messages in the test, the way SNS does: a local RSA key and a self-signed certificate.

The certificate reaches the code under test only through an injected fetcher that records every
URL it is asked for, so a test can prove that no fetch happened for a rejected message.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:upload-events"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-"
    "01d088a6f77103d0fe307c0069e40ed6.pem"
)

_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def _make_cert(key: rsa.RSAPrivateKey, *, not_after: datetime | None = None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class SnsSigner:
    """An SNS stand-in for signing: holds the key, serves the certificate, records fetches."""

    _key_cache: rsa.RSAPrivateKey | None = None

    def __init__(self, *, cert_url: str = CERT_URL, topic_arn: str = TOPIC_ARN) -> None:
        # One 2048-bit key per test session: generating it costs ~50 ms.
        if SnsSigner._key_cache is None:
            SnsSigner._key_cache = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = SnsSigner._key_cache
        self.cert_pem = _make_cert(self.key)
        self.cert_url = cert_url
        self.topic_arn = topic_arn
        self.fetched: list[str] = []

    def fetcher(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.cert_pem

    def string_to_sign(self, message: dict[str, Any]) -> bytes:
        out = ""
        for name in _SIGNED[message["Type"]]:
            if name in message:
                out += f"{name}\n{message[name]}\n"
        return out.encode()

    def sign(self, message: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(self.string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": message.get("SigningCertURL", self.cert_url),
        }

    def notification(
        self,
        message: str | dict[str, Any],
        *,
        version: str = "1",
        subject: str | None = "Amazon S3 Notification",
        timestamp: datetime | None = None,
        message_id: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": self.topic_arn,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": _iso(timestamp or datetime.now(UTC)),
            "SigningCertURL": self.cert_url,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }
        if subject is not None:
            body["Subject"] = subject
        body.update(overrides)
        return self.sign(body, version=version)

    def subscription_confirmation(
        self,
        *,
        token: str = "2336412f37fb687f5d51e6e2425f004ae",
        version: str = "1",
        kind: str = "SubscriptionConfirmation",
    ) -> dict[str, Any]:
        body = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": self.topic_arn,
            "Message": f"You have chosen to subscribe to the topic {self.topic_arn}.",
            "SubscribeURL": (
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={self.topic_arn}&Token={token}"
            ),
            "Timestamp": _iso(datetime.now(UTC)),
            "SigningCertURL": self.cert_url,
        }
        return self.sign(body, version=version)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def s3_event(
    key: str,
    *,
    event_name: str = "ObjectCreated:Post",
    sequencer: str = "0055AED6DCD90281E5",
    bucket: str = "test-bucket",
    size: int = 0,
    etag: str = "d41d8cd98f00b204e9800998ecf8427e",
) -> dict[str, Any]:
    """An S3 event notification body as S3 publishes it (key URL-encoded, + for spaces)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": datetime.now(UTC).isoformat(),
                "eventName": event_name,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": sequencer,
                    },
                },
            }
        ]
    }
