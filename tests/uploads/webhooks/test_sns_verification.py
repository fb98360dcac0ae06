"""SNS message verification: AWS's documented steps, with signatures made here in the test."""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from freezegun import freeze_time

from backend.uploads.webhooks import sns
from tests.uploads.webhooks.sns_signing import CERT_URL, TOPIC_ARN, SnsSigner, _make_cert, s3_event


@pytest.fixture(autouse=True)
def _topics(settings: Any) -> None:
    settings.SNS_TOPIC_ARNS = [TOPIC_ARN]
    settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = 600


@pytest.fixture
def signer() -> SnsSigner:
    return SnsSigner()


def _verify(signer: SnsSigner, message: Any, **kwargs: Any) -> sns.SnsMessage:
    return sns.verify_message(message, fetcher=signer.fetcher, **kwargs)


@pytest.mark.parametrize("version", ["1", "2"])
def test_genuine_notification_verifies(signer: SnsSigner, version: str) -> None:
    message = signer.notification(s3_event("uploads/1/a/x.png"), version=version)
    verified = _verify(signer, message)
    assert verified.type == "Notification"
    assert verified.topic_arn == TOPIC_ARN
    assert json.loads(verified.message)["Records"][0]["s3"]["object"]["key"] == "uploads/1/a/x.png"
    assert signer.fetched == [CERT_URL]


@pytest.mark.parametrize("version", ["1", "2"])
def test_subscription_messages_verify(signer: SnsSigner, version: str) -> None:
    for kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        verified = _verify(signer, signer.subscription_confirmation(version=version, kind=kind))
        assert verified.type == kind
        assert verified.token == "2336412f37fb687f5d51e6e2425f004ae"


def test_notification_without_subject_verifies(signer: SnsSigner) -> None:
    message = signer.notification("{}", subject=None)
    assert "Subject" not in message
    assert _verify(signer, message).subject is None


def test_certificate_is_fetched_once_and_cached_by_url(signer: SnsSigner) -> None:
    for _ in range(3):
        _verify(signer, signer.notification("{}"))
    assert signer.fetched == [CERT_URL]
    other_url = "https://sns.us-east-1.amazonaws.com/" + CERT_NAME + ".pem"  # a rotated cert
    _verify(signer, signer.notification("{}", SigningCertURL=other_url))
    assert signer.fetched == [CERT_URL, other_url]


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("field", ["Message", "MessageId", "Subject", "Timestamp", "TopicArn"])
def test_any_changed_byte_of_a_signed_field_is_rejected(
    signer: SnsSigner, settings: Any, version: str, field: str
) -> None:
    now = datetime.now(UTC)
    message = signer.notification(
        s3_event("uploads/1/a/x.png"), version=version, timestamp=now - timedelta(seconds=30)
    )
    value = message[field]
    settings.SNS_TOPIC_ARNS = [TOPIC_ARN, TOPIC_ARN[:-1] + chr(ord(TOPIC_ARN[-1]) ^ 1)]
    positions = sorted({0, len(value) // 2, len(value) - 1})
    for pos in positions:
        for replacement in {chr(ord(value[pos]) ^ 1), "Z" if value[pos] != "Z" else "Y"}:
            tampered = dict(message)
            tampered[field] = value[:pos] + replacement + value[pos + 1 :]
            with pytest.raises(sns.SnsVerificationError):
                _verify(signer, tampered)


def test_every_byte_of_the_signature_matters(signer: SnsSigner) -> None:
    message = signer.notification("{}", version="2")
    raw = bytearray(base64.b64decode(message["Signature"]))
    assert len(raw) == 256
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        tampered = {**message, "Signature": base64.b64encode(bytes(flipped)).decode()}
        with pytest.raises(sns.SnsVerificationError, match="does not verify"):
            _verify(signer, tampered)
    _verify(signer, message)  # and the untouched one still passes


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!!", "AAAA", None, 12345],
)
def test_malformed_signatures_are_rejected(signer: SnsSigner, signature: Any) -> None:
    message = {**signer.notification("{}"), "Signature": signature}
    with pytest.raises(sns.SnsVerificationError):
        _verify(signer, message)


def test_adding_or_removing_subject_breaks_the_signature(signer: SnsSigner) -> None:
    with_subject = signer.notification("{}", subject="hello")
    without = {k: v for k, v in with_subject.items() if k != "Subject"}
    with pytest.raises(sns.SnsVerificationError):
        _verify(signer, without)
    no_subject = signer.notification("{}", subject=None)
    with pytest.raises(sns.SnsVerificationError):
        _verify(signer, {**no_subject, "Subject": ""})


def test_signature_version_must_match_the_algorithm(signer: SnsSigner) -> None:
    v1 = signer.notification("{}", version="1")
    with pytest.raises(sns.SnsVerificationError):
        _verify(signer, {**v1, "SignatureVersion": "2"})
    signer.fetched.clear()
    for bad in ("3", "0", 1, None, ""):
        with pytest.raises(sns.SnsVerificationError, match="SignatureVersion"):
            _verify(signer, {**v1, "SignatureVersion": bad})
    assert signer.fetched == []


def test_type_cannot_be_switched(signer: SnsSigner) -> None:
    message = signer.notification("{}")
    for other in ("SubscriptionConfirmation", "UnsubscribeConfirmation", "Other", None):
        with pytest.raises(sns.SnsVerificationError):
            _verify(signer, {**message, "Type": other})


def test_old_and_future_timestamps_are_rejected_before_any_fetch(signer: SnsSigner) -> None:
    now = datetime.now(UTC)
    for when in (now - timedelta(hours=1, seconds=5), now + timedelta(seconds=660)):
        with pytest.raises(sns.SnsVerificationError, match="Timestamp"):
            _verify(signer, signer.notification("{}", timestamp=when))
    assert signer.fetched == []
    # inside the window on both sides
    _verify(signer, signer.notification("{}", timestamp=now - timedelta(minutes=50)))
    _verify(signer, signer.notification("{}", timestamp=now + timedelta(seconds=300)))


def test_unparseable_timestamp_is_rejected(signer: SnsSigner) -> None:
    for bad in ("yesterday", "2024-01-01T00:00:00", ""):
        with pytest.raises(sns.SnsVerificationError, match="Timestamp"):
            _verify(signer, signer.notification("{}", Timestamp=bad))
    assert signer.fetched == []


def test_unknown_topic_is_rejected_before_any_fetch(signer: SnsSigner) -> None:
    foreign = SnsSigner(topic_arn="arn:aws:sns:us-east-1:999999999999:someone-else")
    with pytest.raises(sns.SnsVerificationError, match="TopicArn"):
        sns.verify_message(foreign.notification("{}"), fetcher=foreign.fetcher)
    assert foreign.fetched == []


def test_empty_topic_allow_list_rejects_everything_loudly(
    signer: SnsSigner, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.SNS_TOPIC_ARNS = []
    with caplog.at_level(logging.ERROR), pytest.raises(sns.SnsVerificationError):
        _verify(signer, signer.notification("{}"))
    assert "SNS_TOPIC_ARNS is empty" in caplog.text
    assert signer.fetched == []


@pytest.mark.parametrize(
    "field", ["Message", "MessageId", "Timestamp", "TopicArn", "Type", "SigningCertURL"]
)
def test_missing_or_non_string_fields_are_rejected(signer: SnsSigner, field: str) -> None:
    message = signer.notification("{}")
    for broken in ({k: v for k, v in message.items() if k != field}, {**message, field: ["x"]}):
        with pytest.raises(sns.SnsVerificationError):
            _verify(signer, broken)


@pytest.mark.parametrize("body", [None, [], "string", 42])
def test_non_object_bodies_are_rejected(signer: SnsSigner, body: Any) -> None:
    with pytest.raises(sns.SnsVerificationError):
        _verify(signer, body)
    assert signer.fetched == []


#: A certificate name of AWS's form (32 lowercase hex digits).
CERT_NAME = "SimpleNotificationService-" + "0123456789abcdef" * 2


def _n(url: str) -> str:
    return url.replace("SimpleNotificationService-{NAME}", CERT_NAME)


HOSTILE_CERT_URLS = [
    _n(url)
    for url in [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "HTTPS://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-{NAME}.pem",
        "https://evil.com@sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com\\@evil.com/SimpleNotificationService-{NAME}.pem",
        "https://evil.com\\sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://evilsns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns-us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com.cn.evil.com/SimpleNotificationService-{NAME}.pem",
        "https://s3.amazonaws.com/sns/SimpleNotificationService-{NAME}.pem",
        "https://sns.s3.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.s3-website-us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.s3-external-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://bucket.s3.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.txt",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem?x=.pem",
        "https://sns.us-east-1.amazonaws.com/cert.pem#frag",
        "https://sns.us-east-1.amazonaws.com/../evil.pem",
        "https://sns.us-east-1.amazonaws.com/%2e%2e/evil.pem",
        "https://sns.us-east-1.amazonaws.com /SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem\n",
        "https://sns.us-east-1.amazonaws.com\t/SimpleNotificationService-{NAME}.pem",
        # Cyrillic a
        "https://sns.us-east-1.amazon\u0430ws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com.",
        "https://sns.us-east-1.amazonaws.com",
        "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-{NAME}.pem",
        "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-{NAME}.pem",
        "https://[::1]/SimpleNotificationService-{NAME}.pem",
        "https://127.0.0.1/SimpleNotificationService-{NAME}.pem",
        "file:///etc/ssl/cert.pem",
        "//sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "https:/sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem",
        "",
        # the path: only AWS's certificate names
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/x/SimpleNotificationService-{NAME}.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{NAME}.pem.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "A" * 32 + ".pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "a" * 31 + ".pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "a" * 33 + ".pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-" + "g" * 32 + ".pem",
        "https://sns.us-east-1.amazonaws.com//SimpleNotificationService-{NAME}.pem",
    ]
]


def test_hostile_table_is_large_enough() -> None:
    assert len(set(HOSTILE_CERT_URLS)) >= 15


@pytest.mark.parametrize("url", HOSTILE_CERT_URLS)
def test_hostile_certificate_urls_are_rejected_without_any_fetch(
    signer: SnsSigner, url: str
) -> None:
    with pytest.raises(sns.SnsVerificationError, match="SigningCertURL"):
        sns.check_signing_cert_url(url)
    # Also when the whole message is otherwise perfectly signed.
    hostile = SnsSigner(cert_url=url)
    with pytest.raises(sns.SnsVerificationError, match="SigningCertURL"):
        sns.verify_message(hostile.notification("{}"), fetcher=hostile.fetcher)
    assert hostile.fetched == []


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        _n("https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-{NAME}.pem"),
        _n("https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-{NAME}.pem"),
        _n("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-{NAME}.pem"),
        _n("https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-{NAME}.pem"),
    ],
)
def test_genuine_certificate_urls_are_accepted(url: str) -> None:
    assert sns.check_signing_cert_url(url) == url


def test_certificate_of_another_key_is_rejected(signer: SnsSigner) -> None:
    message = signer.notification("{}")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(sns.SnsVerificationError, match="does not verify"):
        sns.verify_message(message, fetcher=lambda url: _make_cert(other_key))


def test_expired_certificate_is_rejected(signer: SnsSigner) -> None:
    message = signer.notification("{}")
    expired = _make_cert(signer.key, not_after=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(sns.SnsVerificationError, match="not valid"):
        sns.verify_message(message, fetcher=lambda url: expired)


def test_garbage_certificate_is_rejected_and_not_fetched_again(signer: SnsSigner) -> None:
    message = signer.notification("{}")
    served: list[str] = []

    def garbage(url: str) -> bytes:
        served.append(url)
        return b"<html>not a cert</html>"

    for _ in range(3):
        with pytest.raises(sns.SnsVerificationError, match="PEM"):
            sns.verify_message(message, fetcher=garbage)
    assert served == [CERT_URL]  # remembered as failed: no refetch for a while
    assert not isinstance(cache.get(sns._cert_cache_key(CERT_URL)), bytes)
    later = datetime.now(UTC) + timedelta(seconds=sns.CERT_REFUSED_CACHE_SECONDS + 1)
    with freeze_time(later):
        _verify(signer, signer.notification("{}"))  # once the failure is forgotten: fetched
    assert signer.fetched == [CERT_URL]


def test_string_to_sign_follows_aws_order() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "id-1",
        "TopicArn": TOPIC_ARN,
        "Subject": "s",
        "Message": "m",
        "Timestamp": "2024-01-01T00:00:00.000Z",
        "UnsubscribeURL": "ignored",
        "SignatureVersion": "1",
    }
    assert (
        sns.string_to_sign(message)
        == (
            f"Message\nm\nMessageId\nid-1\nSubject\ns\nTimestamp\n2024-01-01T00:00:00.000Z\n"
            f"TopicArn\n{TOPIC_ARN}\nType\nNotification\n"
        ).encode()
    )
    confirmation = {
        **message,
        "Type": "SubscriptionConfirmation",
        "Token": "t",
        "SubscribeURL": "u",
    }
    assert (
        sns.string_to_sign(confirmation)
        == (
            "Message\nm\nMessageId\nid-1\nSubscribeURL\nu\nTimestamp\n2024-01-01T00:00:00.000Z\n"
            f"Token\nt\nTopicArn\n{TOPIC_ARN}\nType\nSubscriptionConfirmation\n"
        ).encode()
    )


def test_region_from_topic_arn() -> None:
    assert sns.region_from_arn(TOPIC_ARN) == "us-east-1"
    assert sns.region_from_arn("arn:aws-cn:sns:cn-north-1:1:t") == "cn-north-1"
    for bad in ("arn:aws:s3:::bucket", "topic", "arn:aws:sns:../x:1:t"):
        with pytest.raises(sns.SnsVerificationError):
            sns.region_from_arn(bad)


# --- the real fetcher, against a loopback HTTP server ---------------------------------------------


class _CertHandler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b"no"))
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", "/cert.pem")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cert_server(signer: SnsSigner) -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler)
    _CertHandler.routes = {
        "/cert.pem": (200, signer.cert_pem),
        "/huge.pem": (200, b"x" * (sns.CERT_MAX_BYTES + 10)),
        "/redirect.pem": (302, b""),
        "/forbidden.pem": (403, b"<Error><Code>AccessDenied</Code></Error>"),
        "/broken.pem": (500, b"oops"),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_certificate_reads_a_bounded_body(cert_server: str, signer: SnsSigner) -> None:
    assert sns.fetch_certificate(cert_server + "/cert.pem") == signer.cert_pem
    with pytest.raises(sns.SnsVerificationError, match="large"):
        sns.fetch_certificate(cert_server + "/huge.pem")


def test_fetch_certificate_4xx_is_a_refusal_not_a_retry(cert_server: str) -> None:
    with pytest.raises(sns.SnsVerificationError, match="HTTP 404"):
        sns.fetch_certificate(cert_server + "/missing.pem")
    with pytest.raises(sns.SnsVerificationError, match="HTTP 403"):
        sns.fetch_certificate(cert_server + "/forbidden.pem")


def test_fetch_certificate_failures_are_retryable(cert_server: str) -> None:
    with pytest.raises(sns.CertificateUnavailable, match="500"):
        sns.fetch_certificate(cert_server + "/broken.pem")
    with pytest.raises(sns.CertificateUnavailable, match="302"):
        sns.fetch_certificate(cert_server + "/redirect.pem")  # redirects are not followed
    port = cert_server.rsplit(":", 1)[1]
    with pytest.raises(sns.CertificateUnavailable):
        sns.fetch_certificate(f"http://127.0.0.1:1/{port}.pem")


# --- forged messages with an allow-listed TopicArn: no fetch, or one at most ----------------------


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-1.amazonaws.com/" + CERT_NAME + ".pem",
        "https://sns.us-east-2.amazonaws.com/" + CERT_NAME + ".pem",
        "https://sns.cn-north-1.amazonaws.com.cn/" + CERT_NAME + ".pem",
    ],
)
def test_certificate_from_another_region_than_the_topic_is_never_fetched(
    signer: SnsSigner, cert_url: str
) -> None:
    forged = SnsSigner(cert_url=cert_url)  # TopicArn is ours (us-east-1), perfectly signed
    with pytest.raises(sns.SnsVerificationError, match="region"):
        sns.verify_message(forged.notification("{}"), fetcher=forged.fetcher)
    with pytest.raises(sns.SnsVerificationError, match="region"):
        sns.verify_message(forged.subscription_confirmation(), fetcher=forged.fetcher)
    assert forged.fetched == []


def test_certificate_of_the_topics_region_is_fetched(settings: Any) -> None:
    topic = "arn:aws:sns:eu-west-1:123456789012:upload-events"
    settings.SNS_TOPIC_ARNS = [topic]
    url = "https://sns.eu-west-1.amazonaws.com/" + CERT_NAME + ".pem"
    signer = SnsSigner(cert_url=url, topic_arn=topic)
    assert sns.verify_message(signer.notification("{}"), fetcher=signer.fetcher).topic_arn == topic
    assert signer.fetched == [url]


@pytest.mark.parametrize(
    "path",
    [
        "/SimpleNotificationService-abc.pem",
        "/attacker-chosen.pem",
        "/SimpleNotificationService-" + "0" * 31 + ".pem",
        "/SimpleNotificationService-" + "F" * 32 + ".pem",
        "/sub/SimpleNotificationService-" + "0" * 32 + ".pem",
    ],
)
def test_certificate_path_not_of_aws_form_is_never_fetched(signer: SnsSigner, path: str) -> None:
    forged = SnsSigner(cert_url="https://sns.us-east-1.amazonaws.com" + path)
    with pytest.raises(sns.SnsVerificationError, match="SigningCertURL"):
        sns.verify_message(forged.notification("{}"), fetcher=forged.fetcher)
    assert forged.fetched == []


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (sns.CertificateUnavailable("HTTP 503 from the SNS host"), sns.CertificateUnavailable),
        (sns.SnsVerificationError("The SNS host refused (HTTP 404)"), sns.SnsVerificationError),
    ],
)
def test_a_failing_certificate_url_is_fetched_once(
    signer: SnsSigner, failure: Exception, raised: type[Exception]
) -> None:
    attempts: list[str] = []

    def failing(url: str) -> bytes:
        attempts.append(url)
        raise failure

    for _ in range(5):
        with pytest.raises(raised):
            sns.verify_message(signer.notification("{}"), fetcher=failing)
    assert attempts == [CERT_URL]
    other = "https://sns.us-east-1.amazonaws.com/" + CERT_NAME + ".pem"
    with pytest.raises(raised):
        sns.verify_message(signer.notification("{}", SigningCertURL=other), fetcher=failing)
    assert attempts == [CERT_URL, other]  # remembered per URL


def test_a_transient_failure_is_forgotten_sooner_than_a_refusal(signer: SnsSigner) -> None:
    assert sns.CERT_UNAVAILABLE_CACHE_SECONDS < sns.CERT_REFUSED_CACHE_SECONDS <= 600

    def unavailable(url: str) -> bytes:
        raise sns.CertificateUnavailable("timeout")

    with pytest.raises(sns.CertificateUnavailable):
        sns.verify_message(signer.notification("{}"), fetcher=unavailable)
    with freeze_time(datetime.now(UTC) + timedelta(seconds=sns.CERT_UNAVAILABLE_CACHE_SECONDS + 1)):
        _verify(signer, signer.notification("{}"))
    assert signer.fetched == [CERT_URL]
