"""Amazon SNS message verification, following AWS's documented steps.

https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html

Every check that needs no network runs first (fields, signature version, certificate URL and
name, topic allow-list, certificate region = topic region, timestamp); only a message that passes
them all can make us fetch a signing certificate, only from an https URL on an SNS host, and a URL
that failed is not fetched again for a while. Fetches are limited in the shared cache (Redis in
production, so across processes): one per certificate URL per cool-down
(`SNS_CERT_FETCH_COOLDOWN_SECONDS`, an atomic add = SET NX with a TTL) and at most
`SNS_CERT_FETCHES_PER_MINUTE` in all (an atomic increment of a per-minute counter that expires):
forged messages naming ever new certificate files cost at most that many outbound requests.
Each fetch goes through `provider_call` (deadline, concurrency limit, breaker). Subscriptions
are confirmed through the SNS API with the token (`ConfirmSubscription`), never by fetching the
`SubscribeURL` the message names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.core.cache import cache

from backend.core.errors import ProviderUnavailable
from backend.storage import resilience
from backend.storage.calls import CallFault, provider_call
from backend.storage.s3 import aws_fault

logger = logging.getLogger(__name__)

#: The name SNS calls go by in `provider_call` (logs, errors, per-service hooks).
SNS = "sns"
#: Certificate fetches have their own guard: a certificate host that is slow or down must not
#: open the breaker of the SNS API calls (ConfirmSubscription), nor the other way round.
SNS_CERTIFICATES = "sns-certificates"
_TRANSIENT_CODES = frozenset({"Throttling", "ThrottlingException", "InternalError"})

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# AWS's string-to-sign: these fields, in this order, each as "Name\nvalue\n".
# Subject is part of it only when the message has one.
_SUBSCRIPTION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _SUBSCRIPTION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _SUBSCRIPTION_FIELDS,
}
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SHA1withRSA, SNS's historical default
    "2": hashes.SHA256,  # SHA256withRSA
}

# The allow-list, plus a region-shaped middle label: "sns.s3-website-us-east-1..." style
# hosts (S3 static-website endpoints, where anyone can name a bucket "sns") must never match.
_CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
# AWS's signing certificates are all named like this (32 lowercase hex digits), e.g.
# https://sns.us-east-1.amazonaws.com/SimpleNotificationService-<32 hex>.pem
_CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]{32}\.pem")
_MAX_URL_LENGTH = 1024

#: SNS retries a failed delivery for minutes, not hours; anything older is a replay.
MAX_MESSAGE_AGE_SECONDS = 3600
CERT_CACHE_SECONDS = 24 * 3600
#: A certificate URL that failed is not fetched again for this long (negative cache): a stream of
#: forged messages naming one URL costs one fetch, not one per message. A refusal by the host
#: (4xx) or content that is no certificate is remembered for minutes; a transient failure
#: (network, 5xx) for less than SNS's retry schedule (3 retries, 20 s apart, by default), so a
#: genuine message's later retries can still fetch the certificate once the host is back.
CERT_REFUSED_CACHE_SECONDS = 300
CERT_UNAVAILABLE_CACHE_SECONDS = 30
CERT_FETCH_TIMEOUT = (3.05, 5.0)
CERT_MAX_BYTES = 64 * 1024

CertificateFetcher = Callable[[str], bytes]


class SnsVerificationError(Exception):
    """The message is not a genuine, current SNS message for one of our topics (answer 4xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateUnavailable(ProviderUnavailable):
    """The signing certificate could not be fetched right now (answer 5xx: SNS retries)."""


@dataclass(frozen=True)
class SnsMessage:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subject: str | None = None
    token: str | None = None


# --- certificate URL ------------------------------------------------------------------------------


def check_signing_cert_url(url: object) -> str:
    """Return `url` if it is an https URL of an SNS signing certificate; raise otherwise.

    Checked on the raw string before any parsing leniency can help an attacker: no userinfo, no
    port, no backslash, no whitespace or control characters, no query or fragment, lowercase host.
    """
    if not isinstance(url, str) or not url:
        raise SnsVerificationError("SigningCertURL is missing")
    if len(url) > _MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise SnsVerificationError("SigningCertURL is not a plain URL")
    if any(ch in url for ch in "\\ @%?#;") or not url.startswith("https://"):
        raise SnsVerificationError("SigningCertURL must be a plain https URL")
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.query or parts.fragment:
        raise SnsVerificationError("SigningCertURL must be a plain https URL")
    # netloc, not hostname: hostname drops userinfo and ports and lowercases, hiding tricks.
    host = parts.netloc
    match = _CERT_HOST.fullmatch(host)
    region = host.split(".")[1] if match else ""
    china = bool(match and match.group(1))
    if not match or not _REGION.fullmatch(region) or china != region.startswith("cn-"):
        raise SnsVerificationError("SigningCertURL is not on an Amazon SNS host")
    if not _CERT_PATH.fullmatch(parts.path) or ".." in parts.path:
        raise SnsVerificationError("SigningCertURL does not name an SNS signing certificate")
    return url


def signing_cert_region(url: str) -> str:
    """The region of an already-checked SigningCertURL (`sns.<region>.amazonaws.com[.cn]`)."""
    return urlsplit(url).netloc.split(".")[1]


def _check_cert_region(cert_url: str, topic_arn: str) -> None:
    """SNS signs with a certificate of the topic's own region: anything else is not SNS."""
    if signing_cert_region(cert_url) != region_from_arn(topic_arn):
        raise SnsVerificationError("SigningCertURL is not in the TopicArn's region")


# --- certificate fetch and cache ------------------------------------------------------------------


def _certificate_fault(exc: BaseException) -> CallFault | None:
    """What a certificate download error means for `provider_call`: network errors are
    outages; our own verdicts (SnsVerificationError) propagate unchanged."""
    if isinstance(exc, requests.RequestException):
        return CallFault(type(exc).__name__, f"certificate fetch failed: {type(exc).__name__}")
    return None


def _download_certificate(url: str) -> bytes:
    with requests.get(url, timeout=CERT_FETCH_TIMEOUT, allow_redirects=False, stream=True) as r:
        if 400 <= r.status_code < 500:
            # The SNS host itself says there is no such certificate: not SNS's message,
            # and no retry will change that (answer 4xx, not 503).
            raise SnsVerificationError(
                f"The SNS host refused the signing certificate URL (HTTP {r.status_code})"
            )
        if r.status_code != 200:
            raise CertificateUnavailable(
                f"Fetching the SNS signing certificate answered HTTP {r.status_code}."
            )
        return bytes(r.raw.read(CERT_MAX_BYTES + 1, decode_content=True))


def fetch_certificate(url: str) -> bytes:
    """Download a signing certificate (TLS-verified, no redirects, bounded size), inside
    `provider_call`: the provider deadline bounds the whole download, body included."""
    try:
        with provider_call(
            SNS_CERTIFICATES, "fetch signing certificate", _certificate_fault, display_name="SNS"
        ) as run:
            body: bytes = run(_download_certificate, url)
    except CertificateUnavailable:
        raise
    except ProviderUnavailable as exc:
        raise CertificateUnavailable(
            "The SNS signing certificate could not be fetched.", retry_after=exc.retry_after
        ) from exc
    if len(body) > CERT_MAX_BYTES:
        raise SnsVerificationError("The signing certificate is implausibly large")
    return body


#: Replaced in tests by a fake; production fetches over HTTPS.
certificate_fetcher: CertificateFetcher = fetch_certificate


def _cert_cache_key(url: str) -> str:
    return "webhooks:sns:cert:" + hashlib.sha256(url.encode()).hexdigest()


def _cert_failure_key(url: str) -> str:
    return "webhooks:sns:certfail:" + hashlib.sha256(url.encode()).hexdigest()


def _cert_cooldown_key(url: str) -> str:
    return "webhooks:sns:certfetch:" + hashlib.sha256(url.encode()).hexdigest()


def _fetches_key(minute: int) -> str:
    return f"webhooks:sns:certfetches:{minute}"


def _claim_fetch(url: str) -> None:
    """Allow one fetch of `url` now, or raise CertificateUnavailable (answered 503: SNS delivers
    a genuine message again later). Both limits live in the shared cache, so they hold across
    processes: `add` is atomic (SET NX with a TTL in Redis), `incr` too (INCR)."""
    cooldown = max(1, settings.SNS_CERT_FETCH_COOLDOWN_SECONDS)
    if not cache.add(_cert_cooldown_key(url), 1, cooldown):
        raise CertificateUnavailable(
            "This signing certificate was fetched moments ago; not fetched again yet.",
            retry_after=cooldown,
        )
    now = time.time()
    counter = _fetches_key(int(now // 60))
    cache.add(counter, 0, 120)  # expires on its own once its minute is over
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, 120)
        count = 1
    if count > max(0, settings.SNS_CERT_FETCHES_PER_MINUTE):
        # Not this URL's fault: it may be fetched as soon as the minute is over.
        cache.delete(_cert_cooldown_key(url))
        logger.warning("SNS certificate fetch refused: more than %d this minute", count - 1)
        raise CertificateUnavailable(
            "Too many signing certificates fetched this minute; not fetched now.",
            retry_after=max(1, 60 - int(now % 60)),
        )


def _remember_failure(url: str, kind: str, reason: str, seconds: int) -> None:
    cache.set(_cert_failure_key(url), f"{kind}:{reason}", seconds)


def _raise_remembered_failure(url: str) -> None:
    remembered = cache.get(_cert_failure_key(url))
    if not isinstance(remembered, str):
        return
    kind, _, reason = remembered.partition(":")
    if kind == "unavailable":
        raise CertificateUnavailable(f"{reason} (failed recently; not fetched again yet)")
    raise SnsVerificationError(f"{reason} (failed recently; not fetched again yet)")


def load_certificate(url: str, fetcher: CertificateFetcher | None = None) -> x509.Certificate:
    """The certificate at an already-checked URL: from the cache, or fetched once.

    A URL that failed recently is not fetched again: the remembered failure is raised instead.
    """
    key = _cert_cache_key(url)
    pem = cache.get(key)
    fetched = False
    if not isinstance(pem, bytes):
        _raise_remembered_failure(url)
        _claim_fetch(url)
        try:
            pem = (fetcher or certificate_fetcher)(url)
        except SnsVerificationError as exc:
            _remember_failure(url, "refused", exc.reason, CERT_REFUSED_CACHE_SECONDS)
            raise
        except CertificateUnavailable as exc:
            _remember_failure(url, "unavailable", exc.message, CERT_UNAVAILABLE_CACHE_SECONDS)
            raise
        fetched = True
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        reason = "The signing certificate is not a PEM certificate"
        if fetched:
            _remember_failure(url, "refused", reason, CERT_REFUSED_CACHE_SECONDS)
        raise SnsVerificationError(reason) from exc
    if fetched:
        cache.set(key, pem, CERT_CACHE_SECONDS)
    return cert


# --- the message ----------------------------------------------------------------------------------


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """AWS's canonical string for `message` (which must carry a known `Type`)."""
    msg_type = message.get("Type")
    fields = _SIGNED_FIELDS.get(msg_type) if isinstance(msg_type, str) else None
    if fields is None:
        raise SnsVerificationError("Unknown SNS message Type")
    out = []
    for name in fields:
        value = message.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise SnsVerificationError(f"{name} is missing or not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def _parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SnsVerificationError("Timestamp is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise SnsVerificationError("Timestamp has no time zone")
    return parsed.astimezone(UTC)


def _check_timestamp(ts: datetime, now: datetime) -> None:
    age = (now - ts).total_seconds()
    if age > MAX_MESSAGE_AGE_SECONDS:
        raise SnsVerificationError("Timestamp is too old (replayed message?)")
    if -age > settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS:
        raise SnsVerificationError("Timestamp is in the future")


def _check_topic(topic_arn: str) -> None:
    allowed = list(settings.SNS_TOPIC_ARNS)
    if not allowed:
        logger.error(
            "SNS message for topic %s rejected: SNS_TOPIC_ARNS is empty, so no topic is "
            "accepted. Set SNS_TOPIC_ARNS to the ARN(s) of your bucket's event topic.",
            topic_arn,
        )
        raise SnsVerificationError("No SNS topic is accepted by this service (SNS_TOPIC_ARNS)")
    if topic_arn not in allowed:
        raise SnsVerificationError("TopicArn is not one of ours")


def _verify_signature(
    cert: x509.Certificate, signature: bytes, data: bytes, version: str, now: datetime
) -> None:
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise SnsVerificationError("The signing certificate is not valid at this time")
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SnsVerificationError("The signing certificate does not hold an RSA key")
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), _HASHES[version]())
    except InvalidSignature as exc:
        raise SnsVerificationError("Signature does not verify") from exc


def verify_message(
    message: object,
    *,
    fetcher: CertificateFetcher | None = None,
    now: datetime | None = None,
) -> SnsMessage:
    """Verify a parsed SNS message body; return it typed, or raise SnsVerificationError.

    Raises CertificateUnavailable when the certificate cannot be fetched right now.
    """
    if not isinstance(message, Mapping):
        raise SnsVerificationError("The body is not an SNS message")
    msg_type = message.get("Type")
    if not isinstance(msg_type, str) or msg_type not in _SIGNED_FIELDS:
        raise SnsVerificationError("Unknown SNS message Type")
    version = message.get("SignatureVersion")
    if not isinstance(version, str) or version not in _HASHES:
        raise SnsVerificationError("SignatureVersion must be 1 or 2")
    cert_url = check_signing_cert_url(message.get("SigningCertURL"))
    data = string_to_sign(message)  # also proves every signed field is a string
    _check_topic(message["TopicArn"])
    _check_cert_region(cert_url, message["TopicArn"])
    current = now or datetime.now(UTC)
    timestamp = _parse_timestamp(message["Timestamp"])
    _check_timestamp(timestamp, current)
    raw_signature = message.get("Signature")
    if not isinstance(raw_signature, str) or not raw_signature:
        raise SnsVerificationError("Signature is missing")
    try:
        signature = base64.b64decode(raw_signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsVerificationError("Signature is not base64") from exc
    cert = load_certificate(cert_url, fetcher)
    _verify_signature(cert, signature, data, str(version), current)
    return SnsMessage(
        type=str(msg_type),
        message_id=message["MessageId"],
        topic_arn=message["TopicArn"],
        message=message["Message"],
        timestamp=timestamp,
        subject=message.get("Subject"),
        token=message.get("Token"),
    )


# --- subscription confirmation --------------------------------------------------------------------

_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def region_from_arn(topic_arn: str) -> str:
    parts = topic_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "sns" or not _REGION.fullmatch(parts[3]):
        raise SnsVerificationError("TopicArn is not an SNS topic ARN")
    return parts[3]


def _sns_client(region: str) -> Any:
    # One client per region and process: building one costs milliseconds, a Session far more.
    key = (region, settings.AWS_ACCESS_KEY_ID)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = boto3.client(
                "sns",
                region_name=region,
                # Empty settings -> None: boto3's default chain (instance role, env) applies.
                aws_access_key_id=settings.AWS_ACCESS_KEY_ID or None,
                aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY or None,
                aws_session_token=settings.AWS_SESSION_TOKEN or None,
                # Timeouts and attempts that fit the provider deadline (resilience.budget).
                config=Config(**resilience.botocore_timeouts(resilience.budget())),
            )
            _clients[key] = client
        return client


def reset_clients() -> None:
    """Drop cached SNS clients (tests that change credentials or start a mock)."""
    with _clients_lock:
        _clients.clear()


def confirm_subscription(topic_arn: str, token: str) -> str:
    """Confirm a subscription through the SNS API; return the subscription ARN.

    AuthenticateOnUnsubscribe stops anyone holding the UnsubscribeURL from removing us. SNS
    refusing the token is the sender's problem (SnsVerificationError, 4xx); SNS failing or out
    of reach is ours (ProviderUnavailable, 5xx: SNS delivers the confirmation again)."""
    client = _sns_client(region_from_arn(topic_arn))
    with provider_call(SNS, "ConfirmSubscription", aws_fault, display_name="SNS") as run:
        try:
            response = run(
                client.confirm_subscription,
                TopicArn=topic_arn,
                Token=token,
                AuthenticateOnUnsubscribe="true",
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status < 500 and code not in _TRANSIENT_CODES:
                raise SnsVerificationError(
                    f"SNS refused the subscription confirmation ({code})"
                ) from exc
            raise
    return str(response.get("SubscriptionArn", ""))
