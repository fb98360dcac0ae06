"""`manage.py setup_cloud_storage`: each flag, the report, and the exit status."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from backend.core.models import AppConfig
from backend.storage.factory import CloudStorageFactory
from tests.fixtures.providers import MOTO_SERVER_BUCKET, S3_SETTINGS, cloudinary_settings

pytestmark = pytest.mark.django_db

NO_S3 = {k: "" for k in S3_SETTINGS}
CLOUDINARY = cloudinary_settings("")
NO_CLOUDINARY = {k: "" for k in CLOUDINARY if "ALGORITHM" not in k}


@pytest.fixture(autouse=True)
def _fresh_factory():
    CloudStorageFactory.reset()
    yield
    CloudStorageFactory.reset()


def run(*args: str) -> str:
    out = StringIO()
    call_command("setup_cloud_storage", *args, stdout=out)
    return out.getvalue()


def test_report_only_when_active_provider_usable() -> None:
    with override_settings(**NO_S3, **CLOUDINARY):
        output = run()
    assert "cloudinary [active]: configured" in output
    assert "s3: NOT configured" in output
    assert "    - AWS_STORAGE_BUCKET_NAME is not set" in output
    assert "Active provider cloudinary is usable." in output
    assert CLOUDINARY["CLOUDINARY_API_SECRET"] not in output


def test_report_only_fails_when_active_provider_unusable() -> None:
    expected = "cloudinary is not usable: CLOUDINARY_CLOUD_NAME"
    with (
        override_settings(**S3_SETTINGS, **NO_CLOUDINARY),
        pytest.raises(CommandError, match=expected),
    ):
        run()


def test_dry_run_validates_but_changes_nothing() -> None:
    with override_settings(**S3_SETTINGS, **CLOUDINARY):
        output = run("--provider", "s3", "--dry-run")
    assert "Dry run: would switch the active provider cloudinary -> s3." in output
    assert AppConfig.load().provider == "cloudinary"


def test_switches_and_logs(caplog) -> None:
    with override_settings(**S3_SETTINGS, **CLOUDINARY), caplog.at_level(logging.INFO):
        output = run("--provider", "s3")
        again = run("--provider", "s3")
    assert "Active provider switched from cloudinary to s3." in output
    assert "Active provider is s3 (unchanged)." in again
    assert AppConfig.load().provider == "s3"
    assert (
        "storage provider changed from cloudinary to s3 by manage.py setup_cloud_storage"
        in caplog.messages
    )


def test_refuses_an_incomplete_provider() -> None:
    with override_settings(**NO_S3, **CLOUDINARY), pytest.raises(CommandError) as caught:
        run("--provider", "s3")
    assert "s3 is not usable" in str(caught.value)
    assert "AWS_STORAGE_BUCKET_NAME is not set" in str(caught.value)
    assert AppConfig.load().provider == "cloudinary"


def moto_settings(endpoint: str, bucket: str = MOTO_SERVER_BUCKET) -> dict[str, str]:
    return {
        **S3_SETTINGS,
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
    }


def test_check_against_moto_server_succeeds(moto_server) -> None:
    with override_settings(**moto_settings(moto_server), **NO_CLOUDINARY):
        output = run("--provider", "s3", "--check")
    assert "Storage providers (live check)" in output
    assert "s3: configured; live check ok" in output
    assert AppConfig.load().provider == "s3"


def test_check_against_moto_server_fails_on_a_missing_bucket(moto_server) -> None:
    with (
        override_settings(**moto_settings(moto_server, "no-such-bucket"), **NO_CLOUDINARY),
        pytest.raises(CommandError) as caught,
    ):
        run("--provider", "s3", "--check")
    assert "s3 is not usable: head_bucket on 'no-such-bucket' failed" in str(caught.value)
    assert AppConfig.load().provider == "cloudinary"


def test_check_with_dry_run_probes_without_switching(moto_server) -> None:
    with override_settings(**moto_settings(moto_server), **NO_CLOUDINARY):
        output = run("--provider", "s3", "--check", "--dry-run")
    assert "live check ok" in output and "Dry run" in output
    assert AppConfig.load().provider == "cloudinary"


def test_exit_status_of_the_real_process(tmp_path: Path) -> None:
    """The shell sees 0 / non-zero (CI and deploy scripts rely on it)."""
    base = Path(settings.BASE_DIR)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "backend.settings_test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cmd.sqlite3'}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=base,
        env=env,
        check=True,
        timeout=60,
    )
    failing = subprocess.run(
        [sys.executable, "manage.py", "setup_cloud_storage", "--provider", "s3"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The test settings drop provider variables from the environment; an env file is read after.
    env_file = tmp_path / "cmd.env"
    env_file.write_text("CLOUDINARY_URL=cloudinary://1234:secret-value@demo\n")
    env["DJANGO_ENV_FILE"] = str(env_file)
    passing = subprocess.run(
        [sys.executable, "manage.py", "setup_cloud_storage"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failing.returncode == 1
    assert "AWS_STORAGE_BUCKET_NAME is not set" in failing.stderr
    assert passing.returncode == 0, passing.stderr
    assert "cloudinary [active]: configured" in passing.stdout
    assert "secret-value" not in passing.stdout + passing.stderr
