"""Production settings refuse to start on configuration that would silently degrade."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLEAN_ENV_NAMES = (
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "REDIS_URL",
    "DRAMATIQ_BROKER_URL",
    "CLOUDINARY_URL",
    "CLOUDINARY_CLOUD_NAME",
    "CLOUDINARY_API_KEY",
    "CLOUDINARY_API_SECRET",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_REGION_NAME",
    "AWS_S3_ENDPOINT_URL",
    "DATABASE_URL",
)


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_NAMES}
    base.update(
        DJANGO_SETTINGS_MODULE="backend.settings",
        DJANGO_ENV_FILE="/nonexistent/.env",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION_OK = {
    "DJANGO_SECRET_KEY": "x" * 50,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "AWS_STORAGE_BUCKET_NAME": "uploads",
    "AWS_S3_REGION_NAME": "eu-west-1",
}


def test_production_with_everything_set_starts() -> None:
    result = load_settings(**PRODUCTION_OK)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY is not set"),
        ("REDIS_URL", "REDIS_URL (or DRAMATIQ_BROKER_URL) is not set"),
        ("AWS_STORAGE_BUCKET_NAME", "No storage provider is configured"),
    ],
)
def test_production_refuses_missing_configuration(missing: str, message: str) -> None:
    env = {k: v for k, v in PRODUCTION_OK.items() if k != missing}
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_refuses_in_process_worker() -> None:
    result = load_settings(**PRODUCTION_OK, DRAMATIQ_RUN_INPROCESS_WORKER="1")
    assert result.returncode != 0
    assert "DRAMATIQ_RUN_INPROCESS_WORKER is development only" in result.stderr


def test_debug_mode_starts_without_secrets() -> None:
    result = load_settings(DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


def run_in_settings(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_NAMES}
    base.update(DJANGO_SETTINGS_MODULE="backend.settings", DJANGO_ENV_FILE="/nonexistent/.env")
    base.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_amqp_url_selects_rabbitmq_and_the_broker_is_importable() -> None:
    result = run_in_settings(
        "import dramatiq; from django.conf import settings; "
        "print(type(dramatiq.get_broker()).__name__, settings.DRAMATIQ_CRONTAB['REDIS_URL'])",
        **PRODUCTION_OK,
        DRAMATIQ_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/",
    )
    assert result.returncode == 0, result.stderr
    # RabbitMQ carries the jobs; the scheduler lock stays in Redis.
    assert result.stdout.split() == ["RabbitmqBroker", PRODUCTION_OK["REDIS_URL"]]


def test_rabbitmq_without_redis_is_refused_in_production() -> None:
    env = {k: v for k, v in PRODUCTION_OK.items() if k != "REDIS_URL"}
    result = load_settings(
        **env,
        DRAMATIQ_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/",
        CACHE_URL="redis://127.0.0.1:6379/1",
    )
    assert result.returncode != 0
    assert "scheduler's single-instance lock lives in Redis" in result.stderr


def test_process_local_cache_is_refused_in_production() -> None:
    env = {k: v for k, v in PRODUCTION_OK.items() if k != "REDIS_URL"}
    result = load_settings(
        **env, DRAMATIQ_BROKER_URL="redis://127.0.0.1:6379/0", CACHE_URL="locmemcache://"
    )
    assert result.returncode != 0
    assert "The cache is process-local" in result.stderr


def test_env_example_is_a_working_development_setup() -> None:
    """A verbatim copy of .env.example must not crash the settings: empty means unset, and no
    placeholder makes a provider look configured (it would sign with a fake secret)."""
    result = run_in_settings(
        "from django.conf import settings; "
        "from backend.storage.config_service import CloudStorageConfigService as C; "
        "print(settings.CACHES['default']['BACKEND'], settings.DRAMATIQ_BROKER['BROKER'], "
        "C.is_configured('cloudinary'), C.is_configured('s3'), "
        "settings.REST_FRAMEWORK['NUM_PROXIES'])",
        DJANGO_ENV_FILE=str(ROOT / ".env.example"),
        DJANGO_DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.cache.backends.locmem.LocMemCache",
        "dramatiq.brokers.stub.StubBroker",
        "False",
        "False",
        "0",
    ]


def test_env_example_in_production_mode_names_what_is_missing() -> None:
    result = run_in_settings("", DJANGO_ENV_FILE=str(ROOT / ".env.example"))
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in result.stderr


def test_empty_values_fall_back_to_defaults() -> None:
    result = run_in_settings(
        "from django.conf import settings; print(settings.CACHES['default']['BACKEND'], "
        "settings.DRAMATIQ_BROKER_URL, settings.UPLOAD_ORPHAN_GRACE_SECONDS, "
        "settings.ALLOWED_HOSTS)",
        **PRODUCTION_OK,
        CACHE_URL="",
        DRAMATIQ_BROKER_URL="",
        UPLOAD_ORPHAN_GRACE_SECONDS="",
        DJANGO_ALLOWED_HOSTS="",
    )
    assert result.returncode == 0, result.stderr
    backend, broker, grace, hosts = result.stdout.split(maxsplit=3)
    assert backend == "django.core.cache.backends.redis.RedisCache"  # from REDIS_URL
    assert broker == PRODUCTION_OK["REDIS_URL"]
    assert grace == "3600"
    assert "localhost" in hosts


def test_a_non_numeric_number_names_the_variable() -> None:
    result = load_settings(**PRODUCTION_OK, UPLOAD_ORPHAN_GRACE_SECONDS="one hour")
    assert result.returncode != 0
    assert "UPLOAD_ORPHAN_GRACE_SECONDS must be a whole number, got 'one hour'" in result.stderr


def _database_settings(**env: str) -> dict[str, Any]:
    import json

    from tests.fixtures.processes import run_python

    result = run_python(
        "import json; from django.conf import settings; "
        "d = settings.DATABASES['default']; "
        "keys = ('CONN_MAX_AGE', 'CONN_HEALTH_CHECKS', 'OPTIONS'); "
        "print(json.dumps({k: d.get(k) for k in keys}))",
        DJANGO_SETTINGS_MODULE="backend.settings",
        **{**PRODUCTION_OK, **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_deployment_with_only_database_url_keeps_connections() -> None:
    db = _database_settings(DATABASE_URL="postgres://u:p@db.internal:5432/uploads")
    assert db["CONN_MAX_AGE"] == 600
    assert db["CONN_HEALTH_CHECKS"] is True
    assert "pool" not in db["OPTIONS"]
    assert (
        _database_settings(
            DATABASE_URL="postgres://u:p@db.internal:5432/uploads", DATABASE_CONN_MAX_AGE="0"
        )["CONN_MAX_AGE"]
        == 0
    )


def test_database_pool_replaces_persistent_connections() -> None:
    db = _database_settings(
        DATABASE_URL="postgres://u:p@db.internal:5432/uploads",
        DATABASE_POOL="1",
        DATABASE_POOL_MAX_SIZE="8",
    )
    assert db["CONN_MAX_AGE"] == 0  # Django refuses a pool with persistent connections
    assert db["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 8, "timeout": 10.0}
