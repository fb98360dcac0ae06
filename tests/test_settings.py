"""Production settings refuse to start on configuration that would silently degrade."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_amqp_url_selects_rabbitmq() -> None:
    env = {**PRODUCTION_OK, "DRAMATIQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/"}
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_NAMES}
    base.update(
        DJANGO_SETTINGS_MODULE="backend.settings", DJANGO_ENV_FILE="/nonexistent/.env", **env
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(settings.DRAMATIQ_BROKER['BROKER'])",
        ],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "dramatiq.brokers.rabbitmq.RabbitmqBroker", result.stderr
