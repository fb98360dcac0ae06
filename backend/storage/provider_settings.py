"""Provider settings resolved from Django settings into small frozen dataclasses.

The services, the factory and the config service all read provider configuration through
here, so "what counts as configured" is decided in one place. The dataclasses are hashable:
the factory keys its cached service instances by them, so a settings change (tests use
override_settings) yields a new service instead of a stale one. Secrets are excluded from
`repr` so a dataclass that ends up in a log line or a traceback does not leak them.
"""

from __future__ import annotations

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
