"""Django settings: every value comes from the environment (django-environ), `.env` if present.

This is the one place configuration is read; no other module touches `os.environ`.
In production mode (DJANGO_DEBUG off) a missing secret key, broker URL or provider secret is a
startup error (see `_production_checks`), never a silent fallback to development behaviour.
"""

from __future__ import annotations

import logging as _logging
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_env_file = Path(env.str("DJANGO_ENV_FILE", default="") or str(BASE_DIR / ".env"))
if _env_file.is_file():
    env.read_env(_env_file, overwrite=False)


def _str(name: str, default: str = "") -> str:
    """An environment value; empty (as in a copied .env.example line) counts as unset."""
    value = env.str(name, default="").strip()
    return value or default


def _int(name: str, default: int) -> int:
    value = env.str(name, default="").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}.") from None


def _float(name: str, default: float) -> float:
    value = env.str(name, default="").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {value!r}.") from None


def _list(name: str, default: list[str]) -> list[str]:
    value = [item.strip() for item in env.list(name, default=[]) if item.strip()]
    return value or default


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = _str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. It is required when DJANGO_DEBUG is off "
            "(production mode). Generate one with: python -c "
            "'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = _list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Public base URL of this service (https://uploads.example.com). Used to build webhook URLs
# handed to providers (Cloudinary notification_url). Empty: no notification_url is sent.
PUBLIC_BASE_URL = _str("PUBLIC_BASE_URL", "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_dramatiq",
    "dramatiq_crontab",
    "backend.core",
    "backend.storage",
    "backend.uploads",
    "backend.demo",
]

MIDDLEWARE = [
    # First: the request id (X-Request-ID) on every log line and on every response.
    "backend.core.logs.RequestIdMiddleware",
    # A database or cache outage answers 503 + Retry-After (JSON under /api/), never a 500.
    "backend.core.middleware.DependencyErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's, Swagger UI's and the widget's static files from gunicorn in
    # production (collected by `manage.py collectstatic`); no separate static server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"
ASGI_APPLICATION = "backend.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# A pool sized to the threads of one gunicorn worker (each thread holds one connection at most).
GUNICORN_THREADS_FOR_POOL = _int("GUNICORN_THREADS", 4)
DATABASES = {
    "default": env.db_url_config(_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A busy timeout so a worker thread and a request do not fail at once on the file lock.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # libpq waits forever for a server that never answers the TCP handshake (a black-holed
    # host): bound it, so a dead database costs a request this long, never a worker thread.
    # libpq's minimum is 2 s. An explicit ?connect_timeout= in DATABASE_URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", _int("DATABASE_CONNECT_TIMEOUT", 3)
    )
    if env.bool("DATABASE_POOL", default=False):
        # psycopg's connection pool (Django >= 5.1), one per process: connections are
        # returned to it after each request. Django requires CONN_MAX_AGE = 0 with a pool.
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": _int("DATABASE_POOL_MIN_SIZE", 1),
            "max_size": _int("DATABASE_POOL_MAX_SIZE", GUNICORN_THREADS_FOR_POOL),
            "timeout": _float("DATABASE_POOL_TIMEOUT", 10.0),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0
if "pool" not in DATABASES["default"].get("OPTIONS", {}):
    # Persistent connections by default: opening a PostgreSQL connection per request costs
    # more than the request itself. A connection is checked before reuse (a restarted
    # database costs one failed check, never a failed request). DATABASE_CONN_MAX_AGE=0
    # closes after every request; an explicit ?conn_max_age= in DATABASE_URL wins.
    DATABASES["default"].setdefault("CONN_MAX_AGE", _int("DATABASE_CONN_MAX_AGE", 600))
    DATABASES["default"].setdefault(
        "CONN_HEALTH_CHECKS", env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = _str("REDIS_URL", "")
# The AppConfig cache must be shared between processes in production (Redis): a provider
# switch made in one process is then seen by all on their next read.
CACHES = {
    "default": env.cache_url_config(_str("CACHE_URL", REDIS_URL or "locmemcache://upload-broker")),
}
# django-environ lower-cases every query option for Django's own Redis backend, including the
# top-level ones Django only reads in upper case (`?key_prefix=` would be ignored).
for _option in ("key_prefix", "timeout", "version"):
    if _option in CACHES["default"]:
        CACHES["default"][_option.upper()] = CACHES["default"].pop(_option)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
LOGIN_URL = "/admin/login/"

# --- Security defaults -------------------------------------------------------------------------
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
    else None
)
# Off by default so a first deploy over plain HTTP (or behind a proxy that already redirects)
# is not locked out; turn both on once the site is HTTPS-only (`manage.py check --deploy`).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = _int("DJANGO_SECURE_HSTS_SECONDS", 0)
CORS_ALLOWED_ORIGINS = _list("CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/api/.*$"

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The API takes JSON bodies only (what the schema documents; forms cannot carry its lists).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # DRF's JSON output, encoded with orjson (backend/core/renderers.py); then DRF's browsable API.
    "DEFAULT_RENDERER_CLASSES": [
        "backend.core.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.core.errors.api_exception_handler",
    # How many proxies in front of us append to X-Forwarded-For (1 behind one load balancer).
    # 0 means "use the socket address": a client-sent X-Forwarded-For cannot dodge throttles.
    "NUM_PROXIES": _int("DJANGO_NUM_PROXIES", 0),
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "upload_create": _str("THROTTLE_UPLOAD_CREATE", "120/hour"),
        "upload_confirm": _str("THROTTLE_UPLOAD_CONFIRM", "240/hour"),
        # Signing multipart parts: one request per part (Uppy signs parts one at a time).
        "upload_part": _str("THROTTLE_UPLOAD_PART", "20000/hour"),
        # Password attempts at POST /api/v1/auth/token/, per client IP.
        "auth_token": _str("THROTTLE_AUTH_TOKEN", "20/minute"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Upload broker API",
    "DESCRIPTION": "Presigned direct uploads to Cloudinary or S3. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "backend.uploads.api.schema_hooks.complete_responses",
    ],
    # Several serializers share these choice sets ("method"): one named enum each.
    "ENUM_NAME_OVERRIDES": {
        "UploadMethodEnum": ["POST", "PUT"],
        "S3RequestMethodEnum": ["GET", "PUT", "POST", "DELETE"],
    },
    # The schema and Swagger UI need a logged-in user (session or token) unless API_DOCS_PUBLIC=1.
    "SERVE_PERMISSIONS": [
        "rest_framework.permissions.AllowAny"
        if env.bool("API_DOCS_PUBLIC", default=False)
        else "rest_framework.permissions.IsAuthenticated"
    ],
}

# Where the throttles keep their sliding windows (backend/core/throttling.py): one round trip
# per check. Empty: DRF's cache-based throttle (development and tests).
THROTTLE_REDIS_URL = _str("THROTTLE_REDIS_URL", REDIS_URL)
THROTTLE_KEY_PREFIX = _str("THROTTLE_KEY_PREFIX", "upload-broker:")
THROTTLE_REDIS_TIMEOUT_SECONDS = _float("THROTTLE_REDIS_TIMEOUT_SECONDS", 2.0)

# Where the per-user quota counters live (backend/uploads/quotas.py): `redis` (on
# THROTTLE_REDIS_URL; a create's quota and throttle then take one round trip, and the database
# only the row's INSERT) or `database` (one counter row per user). Either is exact; both are
# re-derived from the rows by the cleanup job.
QUOTA_COUNTERS = _str("QUOTA_COUNTERS", "redis" if THROTTLE_REDIS_URL else "database")
if QUOTA_COUNTERS not in ("redis", "database"):
    raise ImproperlyConfigured(f"QUOTA_COUNTERS must be redis or database, got {QUOTA_COUNTERS!r}.")
if QUOTA_COUNTERS == "redis" and not THROTTLE_REDIS_URL:
    raise ImproperlyConfigured(
        "QUOTA_COUNTERS=redis needs THROTTLE_REDIS_URL (or REDIS_URL): the counters live there."
    )

# --- Storage providers -------------------------------------------------------------------------
# Cloudinary: either the three variables or CLOUDINARY_URL=cloudinary://key:secret@cloud_name
CLOUDINARY_URL = _str("CLOUDINARY_URL", "")
CLOUDINARY_CLOUD_NAME = _str("CLOUDINARY_CLOUD_NAME", "")
CLOUDINARY_API_KEY = _str("CLOUDINARY_API_KEY", "")
CLOUDINARY_API_SECRET = _str("CLOUDINARY_API_SECRET", "")
# sha1 (Cloudinary's default) or sha256, as set in the Cloudinary account's security settings.
CLOUDINARY_SIGNATURE_ALGORITHM = _str("CLOUDINARY_SIGNATURE_ALGORITHM", "sha1")
# Base URL of the upload API; only changed to point at a local stand-in (demo, tests).
CLOUDINARY_UPLOAD_PREFIX = _str("CLOUDINARY_UPLOAD_PREFIX", "")
# Base URL of the delivery CDN (res.cloudinary.com); only changed for a local stand-in.
CLOUDINARY_DELIVERY_PREFIX = _str("CLOUDINARY_DELIVERY_PREFIX", "")
# The account's largest file in bytes (its plan's upload limit, shown in the Cloudinary console):
# the admin accepts a maximum upload size up to this with Cloudinary active; files above 100 MB
# go up in chunks. Default 2 GB.
CLOUDINARY_MAX_FILE_SIZE = _int("CLOUDINARY_MAX_FILE_SIZE", 2_000_000_000)

AWS_ACCESS_KEY_ID = _str("AWS_ACCESS_KEY_ID", "")
AWS_SECRET_ACCESS_KEY = _str("AWS_SECRET_ACCESS_KEY", "")
AWS_SESSION_TOKEN = _str("AWS_SESSION_TOKEN", "")
AWS_STORAGE_BUCKET_NAME = _str("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_REGION_NAME = _str("AWS_S3_REGION_NAME", "")
AWS_S3_ENDPOINT_URL = _str("AWS_S3_ENDPOINT_URL", "")
# Optional canned ACL for uploads. Empty (the default) sends no ACL: objects stay private.
AWS_S3_UPLOAD_ACL = _str("AWS_S3_UPLOAD_ACL", "")
# Every key we issue lives under this prefix (also what reconciliation scans).
UPLOAD_KEY_PREFIX = _str("UPLOAD_KEY_PREFIX", "uploads").strip("/")
# Hard ceiling on presign expiry whatever AppConfig says (seconds).
UPLOAD_MAX_PRESIGN_EXPIRY = 900
# How long an S3 multipart upload may take from create to complete (parts are signed on demand,
# each URL for at most UPLOAD_MAX_PRESIGN_EXPIRY); past it + the orphan grace the cleanup aborts it.
UPLOAD_MULTIPART_EXPIRY_SECONDS = _int("UPLOAD_MULTIPART_EXPIRY_SECONDS", 24 * 3600)

# --- Provider faults (backend/storage/resilience.py, docs/operations.md) -----------------------
# The web server's worker timeout and threads, read here too (gunicorn.conf.py reads the same
# variables with the same defaults): provider deadlines must stay inside a worker's life, and
# the per-provider concurrency limit is a share of a process's threads.
GUNICORN_TIMEOUT = _int("GUNICORN_TIMEOUT", 30)
GUNICORN_THREADS = _int("GUNICORN_THREADS", 4)
# Wall-clock bound of one provider operation (connect + reads + retries together). The SDK
# timeouts are derived from it (resilience.budget()).
PROVIDER_DEADLINE_SECONDS = _float("PROVIDER_DEADLINE_SECONDS", 10.0)
# Provider calls in flight at once per provider and per process; more answer 503 at once.
PROVIDER_MAX_CONCURRENCY = _int("PROVIDER_MAX_CONCURRENCY", max(1, GUNICORN_THREADS // 2))
# Consecutive failures (timeouts, connection errors, 5xx, throttling) that open a provider's
# circuit breaker, and how long it then stays open before one trial call may go through.
PROVIDER_BREAKER_FAILURES = _int("PROVIDER_BREAKER_FAILURES", 5)
PROVIDER_BREAKER_COOLDOWN_SECONDS = _int("PROVIDER_BREAKER_COOLDOWN_SECONDS", 30)
# Where breaker state lives, shared by every process (empty: per process, development only).
PROVIDER_BREAKER_REDIS_URL = _str("PROVIDER_BREAKER_REDIS_URL", REDIS_URL)
PROVIDER_BREAKER_KEY_PREFIX = _str("PROVIDER_BREAKER_KEY_PREFIX", "upload-broker:breaker")


def _fault_checks() -> None:
    """Refuse bounds that cannot hold (in every mode: a wrong bound is a wrong bound)."""
    problems = []
    if PROVIDER_DEADLINE_SECONDS < 1:
        problems.append(f"PROVIDER_DEADLINE_SECONDS is {PROVIDER_DEADLINE_SECONDS}; at least 1.")
    if PROVIDER_DEADLINE_SECONDS >= GUNICORN_TIMEOUT:
        problems.append(
            f"PROVIDER_DEADLINE_SECONDS ({PROVIDER_DEADLINE_SECONDS:g}) must be below "
            f"GUNICORN_TIMEOUT ({GUNICORN_TIMEOUT}): a provider call would outlive the worker, "
            "which gunicorn kills with an HTML 500 and no Retry-After."
        )
    for name, value in (
        ("PROVIDER_MAX_CONCURRENCY", PROVIDER_MAX_CONCURRENCY),
        ("PROVIDER_BREAKER_FAILURES", PROVIDER_BREAKER_FAILURES),
        ("PROVIDER_BREAKER_COOLDOWN_SECONDS", PROVIDER_BREAKER_COOLDOWN_SECONDS),
    ):
        if value < 1:
            problems.append(f"{name} is {value}; at least 1.")
    if problems:
        raise ImproperlyConfigured("Fault bounds refused:\n- " + "\n- ".join(problems))


_fault_checks()

# --- Background jobs (Dramatiq) ---------------------------------------------------------------
# Always set explicitly: django-dramatiq's defaults name a middleware dramatiq 2.x no longer has.
DRAMATIQ_BROKER_URL = _str("DRAMATIQ_BROKER_URL", REDIS_URL)
_DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]
if DRAMATIQ_BROKER_URL.startswith(("amqp://", "amqps://")):
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": DRAMATIQ_BROKER_URL},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
elif DRAMATIQ_BROKER_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {"url": DRAMATIQ_BROKER_URL},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
else:
    # Development only (refused in production below): jobs run in-process on a stub broker
    # with a worker thread started by the uploads app.
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
DRAMATIQ_RUN_INPROCESS_WORKER = env.bool("DRAMATIQ_RUN_INPROCESS_WORKER", default=False)
DRAMATIQ_TASKS_DATABASE = "default"
# dramatiq-crontab holds its "one scheduler fires" lock in Redis.
_SCHEDULER_LOCK_URL = REDIS_URL or (
    DRAMATIQ_BROKER_URL if DRAMATIQ_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
DRAMATIQ_CRONTAB = {"REDIS_URL": _SCHEDULER_LOCK_URL or None}

# Cleanup policy (seconds unless named otherwise)
UPLOAD_ORPHAN_GRACE_SECONDS = _int("UPLOAD_ORPHAN_GRACE_SECONDS", 3600)
UPLOAD_RECONCILE_GRACE_SECONDS = _int("UPLOAD_RECONCILE_GRACE_SECONDS", 86400)
# After a delete, the key is checked again (and a recreated object removed) by the
# `recheck_deleted` sweep once this long has passed since the upload's instructions stopped
# working (`expires_at`): clock skew and a request in flight.
UPLOAD_RECHECK_MARGIN_SECONDS = _int("UPLOAD_RECHECK_MARGIN_SECONDS", 120)
UPLOAD_SCHEDULES = {
    "expire_orphans": _str("SCHEDULE_EXPIRE_ORPHANS", "*/10 * * * *"),
    "reconcile": _str("SCHEDULE_RECONCILE", "17 3 * * *"),
    "recheck_deleted": _str("SCHEDULE_RECHECK_DELETED", "*/5 * * * *"),
}

# --- Webhooks ----------------------------------------------------------------------------------
WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = _int("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", 600)
SNS_TOPIC_ARNS = _list("SNS_TOPIC_ARNS", [])
# Signing-certificate fetches, counted in the shared cache (Redis in production, so every
# process shares the count): one fetch per certificate URL per cool-down, and at most this many
# fetches of certificates not in the cache per minute in all. A real topic needs one
# certificate per region, cached for a day; forged messages naming new URLs hit the cap.
SNS_CERT_FETCH_COOLDOWN_SECONDS = _int("SNS_CERT_FETCH_COOLDOWN_SECONDS", 30)
SNS_CERT_FETCHES_PER_MINUTE = _int("SNS_CERT_FETCHES_PER_MINUTE", 10)

# --- Observability: logs and metrics (backend/core/logs.py, backend/core/metrics.py) -----------
# plain (one line of text) or json (one JSON object per line, python-json-logger). Both carry the
# request id and the upload id (docs/operations.md "Logs").
LOG_FORMAT = _str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}.")
# Lines below WARNING are written in batches, every LOG_BATCH_SECONDS, by a writer thread
# (backend.core.logs.BatchingStreamHandler: off the request path); warnings and errors at once.
# 0: every line at once, from the thread that logs it.
LOG_BATCH_SECONDS = _float("LOG_BATCH_SECONDS", 0.1)
if not 0 <= LOG_BATCH_SECONDS <= 5:
    raise ImproperlyConfigured(f"LOG_BATCH_SECONDS must be 0 to 5, got {LOG_BATCH_SECONDS}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "backend.core.logs.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "backend.core.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s "
            "[request_id=%(request_id)s upload_id=%(upload_id)s] %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(upload_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        },
    },
    "handlers": {
        "console": {
            "class": "backend.core.logs.BatchingStreamHandler",
            "interval": LOG_BATCH_SECONDS,
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": _str("LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
# No format above shows a caller's file, line or function (nor do gunicorn's or Dramatiq's):
# the logging HOWTO's "Optimization" switch skips finding them for every record (a frame walk
# and a line-table lookup, about a tenth of a presign's log line). Its other switches (thread,
# process) stay on: gunicorn's error log shows the pid, Dramatiq's the pid and thread name.
_logging._srcfile = None
# GET /metrics (Prometheus text format) answers a scrape that sends
# `Authorization: Bearer <METRICS_TOKEN>`, or comes from one of METRICS_ALLOWED_NETWORKS
# (comma-separated CIDRs, matched against the socket address). Neither set: 403 to everyone.
METRICS_TOKEN = _str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = _list("METRICS_ALLOWED_NETWORKS", [])
try:
    import ipaddress as _ipaddress

    for _network in METRICS_ALLOWED_NETWORKS:
        _ipaddress.ip_network(_network, strict=False)
except ValueError as _exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_exc}") from None
# Jobs log with the request id of the request that enqueued them (backend.core.logs).
DRAMATIQ_BROKER["MIDDLEWARE"] = [*DRAMATIQ_BROKER["MIDDLEWARE"], "backend.core.logs.JobLogContext"]
# --- end of observability settings -------------------------------------------------------------


def _production_checks() -> None:
    """In production mode, refuse to start on configuration that would silently degrade."""
    problems = []
    if not DRAMATIQ_BROKER_URL:
        problems.append(
            "REDIS_URL (or DRAMATIQ_BROKER_URL) is not set: background jobs need a real broker "
            "in production; the in-process stub broker is for development only."
        )
    if DRAMATIQ_RUN_INPROCESS_WORKER:
        problems.append("DRAMATIQ_RUN_INPROCESS_WORKER is development only.")
    if DRAMATIQ_BROKER_URL and not _SCHEDULER_LOCK_URL:
        problems.append(
            "REDIS_URL is not set: the scheduler's single-instance lock lives in Redis "
            "(needed when the broker is RabbitMQ)."
        )
    if CACHES["default"]["BACKEND"].endswith(("locmem.LocMemCache", "dummy.DummyCache")):
        problems.append(
            "The cache is process-local (set REDIS_URL or CACHE_URL): a provider switch made "
            "in the admin would not reach the other processes."
        )
    cloudinary_ok = bool(CLOUDINARY_URL) or all(
        (CLOUDINARY_CLOUD_NAME, CLOUDINARY_API_KEY, CLOUDINARY_API_SECRET)
    )
    s3_ok = all((AWS_STORAGE_BUCKET_NAME, AWS_S3_REGION_NAME or AWS_S3_ENDPOINT_URL))
    if not (cloudinary_ok or s3_ok):
        problems.append(
            "No storage provider is configured: set CLOUDINARY_URL (or CLOUDINARY_CLOUD_NAME, "
            "CLOUDINARY_API_KEY, CLOUDINARY_API_SECRET) and/or AWS_STORAGE_BUCKET_NAME with "
            "AWS_S3_REGION_NAME."
        )
    if problems:
        raise ImproperlyConfigured("Production settings refused:\n- " + "\n- ".join(problems))


if not DEBUG:
    _production_checks()
