"""Settings for the test suite: the real settings module, read with test-friendly defaults.

Only defaults are set here; DATABASE_URL, REDIS_URL and friends given in the environment win
(that is how `.ci/run` points the same suite at PostgreSQL).
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DJANGO_ENV_FILE", "/nonexistent/.env")  # never read a developer's .env
# Tests use the in-memory stub broker; the real-Redis worker test builds its own broker.
os.environ["DRAMATIQ_BROKER_URL"] = ""
# Provider settings are given per test (override_settings); none by default.
for _name in (
    "CLOUDINARY_URL",
    "CLOUDINARY_CLOUD_NAME",
    "CLOUDINARY_API_KEY",
    "CLOUDINARY_API_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_REGION_NAME",
    "AWS_S3_ENDPOINT_URL",
    "CACHE_URL",
):
    os.environ.pop(_name, None)

from backend.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {
        "upload_create": "10000/hour",
        "upload_confirm": "10000/hour",
        "upload_part": "100000/hour",
    },
}
LOGGING = {**LOGGING, "root": {"handlers": ["console"], "level": "WARNING"}}  # noqa: F405
# Provider breakers live in this process's memory in tests (reset before every test by
# tests/conftest.py); the tests about shared state point them at their own Redis database.
PROVIDER_BREAKER_REDIS_URL = ""
# DRF's cache-based throttles in tests; tests/core/test_throttling.py points them at Redis.
THROTTLE_REDIS_URL = ""
# Quota counters in the database by default; tests/uploads/test_quotas.py runs both stores.
QUOTA_COUNTERS = "database"
# Concurrency tests run many threads against one provider on purpose; the limit's own tests
# set it explicitly.
PROVIDER_MAX_CONCURRENCY = 32
# The suite's real-HTTP tests (moto server, the Cloudinary stand-in, Chromium) share two loaded
# cores: a roomier provider deadline than production's 10 s keeps a slow emulator answer from
# becoming a 503. The fault tests set their own deadlines, and tests/faults runs gunicorn on the
# production default.
PROVIDER_DEADLINE_SECONDS = 25.0
