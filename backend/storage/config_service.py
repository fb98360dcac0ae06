"""`CloudStorageConfigService`: is a provider configured, what is missing or malformed, is it up.

Used by the factory (configured or not), the AppConfig admin (refuse switching to an incomplete
provider) and the `setup_cloud_storage` command (status report, live probe). It names variables,
never their values.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from django.conf import settings

from backend.storage.base import ProbeResult
from backend.storage.provider_settings import (
    CloudinarySettings,
    S3Settings,
    parse_cloudinary_url,
)

PROVIDERS: tuple[str, ...] = ("cloudinary", "s3")
SIGNATURE_ALGORITHMS = frozenset({"sha1", "sha256"})

# AWS bucket naming rules (general purpose buckets).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# us-east-1, eu-central-2, us-gov-west-1, ap-southeast-4, cn-north-1 ...
_AWS_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# Custom endpoints (MinIO, R2 "auto", Backblaze ...) use their own region names.
_ANY_REGION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CLOUD_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

CLOUDINARY_URL_HINT = "or set CLOUDINARY_URL=cloudinary://<api_key>:<api_secret>@<cloud_name>"


@dataclass(frozen=True)
class ProviderStatus:
    provider: str
    configured: bool
    problems: list[str]
    probe: ProbeResult | None = None
    #: Facts worth showing that are not problems (e.g. "using the default credential chain").
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Configured, and the live probe (when one ran) succeeded."""
        return self.configured and (self.probe is None or self.probe.ok)


def _is_http_url(value: str) -> bool:
    try:
        parsed = urlparse(value)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def bucket_name_problems(name: str) -> list[str]:
    problems = []
    if not _BUCKET_RE.match(name):
        problems.append(
            f"AWS_STORAGE_BUCKET_NAME {name!r} is not a valid bucket name: 3-63 characters, "
            "lowercase letters, digits, dots and hyphens, starting and ending with a letter "
            "or digit"
        )
    if ".." in name:
        problems.append("AWS_STORAGE_BUCKET_NAME must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        problems.append("AWS_STORAGE_BUCKET_NAME must not be formatted as an IP address")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        problems.append("AWS_STORAGE_BUCKET_NAME uses a prefix or suffix reserved by AWS")
    return problems


class CloudStorageConfigService:
    """Stateless checks over the current Django settings."""

    @staticmethod
    def _validate(provider: str) -> tuple[list[str], list[str], list[str]]:
        """(missing variable names, human-readable problems, notes)."""
        if provider == "cloudinary":
            return _cloudinary_checks()
        if provider == "s3":
            return _s3_checks()
        return [], [f"Unknown storage provider {provider!r}; expected one of {PROVIDERS}"], []

    @classmethod
    def missing(cls, provider: str) -> list[str]:
        return cls._validate(provider)[0]

    @classmethod
    def problems(cls, provider: str) -> list[str]:
        """Missing and malformed settings, each as a sentence naming the variable."""
        return cls._validate(provider)[1]

    @classmethod
    def is_configured(cls, provider: str) -> bool:
        return not cls.problems(provider)

    @classmethod
    def check(cls, provider: str, live: bool = False) -> ProviderStatus:
        _missing, problems, notes = cls._validate(provider)
        probe = None
        if live and not problems:
            from backend.storage.factory import CloudStorageFactory

            probe = CloudStorageFactory.for_provider(provider).probe()
        return ProviderStatus(
            provider=provider,
            configured=not problems,
            problems=problems,
            probe=probe,
            notes=notes,
        )

    @classmethod
    def status_report(cls, live: bool = False) -> list[ProviderStatus]:
        return [cls.check(provider, live=live) for provider in PROVIDERS]


def _cloudinary_checks() -> tuple[list[str], list[str], list[str]]:
    missing: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    if settings.CLOUDINARY_URL and parse_cloudinary_url(settings.CLOUDINARY_URL) is None:
        problems.append(
            "CLOUDINARY_URL is malformed: expected cloudinary://<api_key>:<api_secret>@<cloud_name>"
        )
    cfg = CloudinarySettings.from_django()
    for variable, value in (
        ("CLOUDINARY_CLOUD_NAME", cfg.cloud_name),
        ("CLOUDINARY_API_KEY", cfg.api_key),
        ("CLOUDINARY_API_SECRET", cfg.api_secret),
    ):
        if not value:
            missing.append(variable)
            problems.append(f"{variable} is not set ({CLOUDINARY_URL_HINT})")
    if cfg.cloud_name and not _CLOUD_NAME_RE.match(cfg.cloud_name):
        problems.append("CLOUDINARY_CLOUD_NAME is malformed: letters, digits, '-' and '_' only")
    if cfg.signature_algorithm not in SIGNATURE_ALGORITHMS:
        problems.append(
            f"CLOUDINARY_SIGNATURE_ALGORITHM must be one of sha1, sha256 "
            f"(got {cfg.signature_algorithm!r})"
        )
    for variable, value in (
        ("CLOUDINARY_UPLOAD_PREFIX", cfg.upload_prefix),
        ("CLOUDINARY_DELIVERY_PREFIX", cfg.delivery_prefix),
    ):
        if value and not _is_http_url(value):
            problems.append(f"{variable} must be an http(s) URL")
        elif value:
            notes.append(f"{variable} points at {value} (not Cloudinary's own host)")
    return missing, problems, notes


def _s3_checks() -> tuple[list[str], list[str], list[str]]:
    missing: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    cfg = S3Settings.from_django()
    if not cfg.bucket:
        missing.append("AWS_STORAGE_BUCKET_NAME")
        problems.append("AWS_STORAGE_BUCKET_NAME is not set")
    else:
        problems.extend(bucket_name_problems(cfg.bucket))
    if cfg.endpoint_url:
        if not _is_http_url(cfg.endpoint_url):
            problems.append("AWS_S3_ENDPOINT_URL must be an http(s) URL")
        else:
            notes.append(f"AWS_S3_ENDPOINT_URL points at {cfg.endpoint_url} (S3-compatible store)")
        if cfg.region and not _ANY_REGION_RE.match(cfg.region):
            problems.append(f"AWS_S3_REGION_NAME {cfg.region!r} is malformed")
    elif not cfg.region:
        missing.append("AWS_S3_REGION_NAME")
        problems.append("AWS_S3_REGION_NAME is not set (needed unless AWS_S3_ENDPOINT_URL is set)")
    elif not _AWS_REGION_RE.match(cfg.region):
        problems.append(
            f"AWS_S3_REGION_NAME {cfg.region!r} is not an AWS region name (e.g. eu-west-1)"
        )
    if cfg.access_key_id and not cfg.secret_access_key:
        missing.append("AWS_SECRET_ACCESS_KEY")
        problems.append("AWS_SECRET_ACCESS_KEY is not set while AWS_ACCESS_KEY_ID is")
    elif cfg.secret_access_key and not cfg.access_key_id:
        missing.append("AWS_ACCESS_KEY_ID")
        problems.append("AWS_ACCESS_KEY_ID is not set while AWS_SECRET_ACCESS_KEY is")
    elif not cfg.access_key_id:
        notes.append(
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set: using the default credential chain "
            "(instance or task role, AWS_PROFILE ...)"
        )
    if cfg.session_token and not cfg.access_key_id:
        problems.append("AWS_SESSION_TOKEN is set without AWS_ACCESS_KEY_ID")
    if cfg.upload_acl and cfg.upload_acl in ("public-read", "public-read-write"):
        notes.append(f"AWS_S3_UPLOAD_ACL={cfg.upload_acl}: uploaded objects are public")
    return missing, problems, notes
