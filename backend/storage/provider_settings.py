"""Provider settings resolved from Django settings into small frozen dataclasses, and checked.

The services, the factory and the config service all read provider configuration through
here, so "what counts as configured" is decided in one place: `check_s3_settings` and
`check_cloudinary_settings` name every missing or malformed variable (never a value); the
provider registry hands them to the factory and the config service. The dataclasses are hashable:
the factory keys its cached service instances by them, so a settings change (tests use
override_settings) yields a new service instead of a stale one. Secrets are excluded from
`repr` so a dataclass that ends up in a log line or a traceback does not leak them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from django.conf import settings

CLOUDINARY_API_BASE = "https://api.cloudinary.com"
CLOUDINARY_DELIVERY_BASE = "https://res.cloudinary.com"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    region: str
    endpoint_url: str
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    upload_acl: str = ""

    @classmethod
    def from_django(cls) -> S3Settings:
        return cls(
            bucket=settings.AWS_STORAGE_BUCKET_NAME.strip(),
            region=settings.AWS_S3_REGION_NAME.strip(),
            endpoint_url=settings.AWS_S3_ENDPOINT_URL.strip().rstrip("/"),
            access_key_id=settings.AWS_ACCESS_KEY_ID.strip(),
            secret_access_key=settings.AWS_SECRET_ACCESS_KEY.strip(),
            session_token=settings.AWS_SESSION_TOKEN.strip(),
            upload_acl=settings.AWS_S3_UPLOAD_ACL.strip(),
        )


@dataclass(frozen=True)
class CloudinaryUrlParts:
    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)


def parse_cloudinary_url(url: str) -> CloudinaryUrlParts | None:
    """`cloudinary://<api_key>:<api_secret>@<cloud_name>` -> its parts; None when malformed."""
    try:
        parsed = urlparse(url.strip())
    except ValueError:
        return None
    if parsed.scheme != "cloudinary" or not parsed.hostname:
        return None
    if not parsed.username or not parsed.password:
        return None
    # hostname is lower-cased by urlparse; cloud names are case-sensitive, so slice netloc.
    cloud_name = parsed.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
    return CloudinaryUrlParts(
        cloud_name=cloud_name,
        api_key=unquote(parsed.username),
        api_secret=unquote(parsed.password),
    )


@dataclass(frozen=True)
class CloudinarySettings:
    cloud_name: str
    api_key: str
    api_secret: str = field(repr=False)
    signature_algorithm: str = "sha1"
    upload_prefix: str = ""
    delivery_prefix: str = ""

    @property
    def api_base(self) -> str:
        return self.upload_prefix or CLOUDINARY_API_BASE

    @property
    def delivery_base(self) -> str:
        return self.delivery_prefix or CLOUDINARY_DELIVERY_BASE

    @classmethod
    def from_django(cls) -> CloudinarySettings:
        # The three explicit variables win over the matching part of CLOUDINARY_URL.
        parts = parse_cloudinary_url(settings.CLOUDINARY_URL) if settings.CLOUDINARY_URL else None
        return cls(
            cloud_name=settings.CLOUDINARY_CLOUD_NAME.strip()
            or (parts.cloud_name if parts else ""),
            api_key=settings.CLOUDINARY_API_KEY.strip() or (parts.api_key if parts else ""),
            api_secret=settings.CLOUDINARY_API_SECRET.strip()
            or (parts.api_secret if parts else ""),
            signature_algorithm=settings.CLOUDINARY_SIGNATURE_ALGORITHM.strip().lower() or "sha1",
            upload_prefix=settings.CLOUDINARY_UPLOAD_PREFIX.strip().rstrip("/"),
            delivery_prefix=settings.CLOUDINARY_DELIVERY_PREFIX.strip().rstrip("/"),
        )


# --- checks ---------------------------------------------------------------------------------

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
class SettingsCheck:
    """What is wrong with one provider's settings: variable names and sentences, no values."""

    #: Variables that must be set and are not.
    missing: list[str]
    #: Every missing or malformed setting, as a sentence naming the variable.
    problems: list[str]
    #: Facts worth showing that are not problems (e.g. "using the default credential chain").
    notes: list[str]


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


def check_cloudinary_settings() -> SettingsCheck:
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
    return SettingsCheck(missing, problems, notes)


def check_s3_settings() -> SettingsCheck:
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
    return SettingsCheck(missing, problems, notes)
