"""CloudStorageConfigService: every missing or malformed variable is named; live checks."""

from __future__ import annotations

import pytest
from django.test import override_settings

from backend.storage.config_service import CloudStorageConfigService as Config
from tests.fixtures.providers import S3_SETTINGS, cloudinary_settings

CLOUDINARY = cloudinary_settings("")
EMPTY_CLOUDINARY = {**{k: "" for k in CLOUDINARY}, "CLOUDINARY_SIGNATURE_ALGORITHM": "sha1"}


def test_complete_settings_have_no_problems() -> None:
    with override_settings(**S3_SETTINGS, **CLOUDINARY):
        assert Config.problems("s3") == [] and Config.problems("cloudinary") == []
        assert Config.is_configured("s3") and Config.is_configured("cloudinary")


def test_cloudinary_missing_variables_are_named() -> None:
    with override_settings(**EMPTY_CLOUDINARY):
        missing = Config.missing("cloudinary")
        problems = Config.problems("cloudinary")
    assert missing == ["CLOUDINARY_CLOUD_NAME", "CLOUDINARY_API_KEY", "CLOUDINARY_API_SECRET"]
    assert len(problems) == 3
    assert all("CLOUDINARY_URL" in p for p in problems)


@pytest.mark.parametrize(
    "variable", ["CLOUDINARY_CLOUD_NAME", "CLOUDINARY_API_KEY", "CLOUDINARY_API_SECRET"]
)
def test_each_cloudinary_variable_alone(variable: str) -> None:
    with override_settings(**{**CLOUDINARY, variable: ""}):
        assert Config.missing("cloudinary") == [variable]


def test_cloudinary_url_replaces_the_three_variables() -> None:
    with override_settings(
        **{**EMPTY_CLOUDINARY, "CLOUDINARY_URL": "cloudinary://123:abc@my-cloud"}
    ):
        assert Config.problems("cloudinary") == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"CLOUDINARY_URL": "https://123:abc@my-cloud"}, "CLOUDINARY_URL is malformed"),
        ({"CLOUDINARY_URL": "cloudinary://my-cloud"}, "CLOUDINARY_URL is malformed"),
        (
            {"CLOUDINARY_SIGNATURE_ALGORITHM": "md5"},
            "CLOUDINARY_SIGNATURE_ALGORITHM must be one of",
        ),
        ({"CLOUDINARY_CLOUD_NAME": "my cloud!"}, "CLOUDINARY_CLOUD_NAME is malformed"),
        (
            {"CLOUDINARY_UPLOAD_PREFIX": "ftp://x"},
            "CLOUDINARY_UPLOAD_PREFIX must be an http(s) URL",
        ),
        (
            {"CLOUDINARY_DELIVERY_PREFIX": "nope"},
            "CLOUDINARY_DELIVERY_PREFIX must be an http(s) URL",
        ),
    ],
)
def test_cloudinary_malformed(overrides: dict, expected: str) -> None:
    with override_settings(**{**CLOUDINARY, **overrides}):
        problems = Config.problems("cloudinary")
    assert any(expected in p for p in problems), problems


def test_s3_missing_variables_are_named() -> None:
    with override_settings(**{k: "" for k in S3_SETTINGS}):
        status = Config.check("s3")
        assert Config.missing("s3") == ["AWS_STORAGE_BUCKET_NAME", "AWS_S3_REGION_NAME"]
    assert status.configured is False
    assert any("default credential chain" in note for note in status.notes)


def test_region_not_needed_with_an_endpoint() -> None:
    with override_settings(
        **{**S3_SETTINGS, "AWS_S3_REGION_NAME": "", "AWS_S3_ENDPOINT_URL": "http://minio:9000"}
    ):
        assert Config.problems("s3") == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"AWS_STORAGE_BUCKET_NAME": "My_Bucket"}, "is not a valid bucket name"),
        ({"AWS_STORAGE_BUCKET_NAME": "ab"}, "is not a valid bucket name"),
        ({"AWS_STORAGE_BUCKET_NAME": "a..b"}, "two adjacent dots"),
        ({"AWS_STORAGE_BUCKET_NAME": "192.168.1.1"}, "IP address"),
        ({"AWS_STORAGE_BUCKET_NAME": "xn--bucket"}, "reserved by AWS"),
        ({"AWS_S3_REGION_NAME": "europe"}, "is not an AWS region name"),
        ({"AWS_S3_ENDPOINT_URL": "minio:9000"}, "AWS_S3_ENDPOINT_URL must be an http(s) URL"),
        (
            {"AWS_SECRET_ACCESS_KEY": ""},
            "AWS_SECRET_ACCESS_KEY is not set while AWS_ACCESS_KEY_ID is",
        ),
        ({"AWS_ACCESS_KEY_ID": ""}, "AWS_ACCESS_KEY_ID is not set while AWS_SECRET_ACCESS_KEY is"),
    ],
)
def test_s3_malformed(overrides: dict, expected: str) -> None:
    with override_settings(**{**S3_SETTINGS, **overrides}):
        problems = Config.problems("s3")
    assert any(expected in p for p in problems), problems


def test_no_secret_value_in_any_problem() -> None:
    with override_settings(
        **{**S3_SETTINGS, "AWS_ACCESS_KEY_ID": "", "AWS_S3_REGION_NAME": "bad"},
        **{**CLOUDINARY, "CLOUDINARY_SIGNATURE_ALGORITHM": "md5"},
    ):
        text = repr(Config.status_report())
    assert S3_SETTINGS["AWS_SECRET_ACCESS_KEY"] not in text
    assert CLOUDINARY["CLOUDINARY_API_SECRET"] not in text


def test_live_check_reports_probe_success_and_failure(s3_storage) -> None:
    ok = Config.check("s3", live=True)
    with override_settings(AWS_STORAGE_BUCKET_NAME="missing-bucket-name"):
        failed = Config.check("s3", live=True)

    assert ok.usable and ok.probe is not None and ok.probe.ok and ok.probe.latency_ms >= 0
    assert failed.configured and not failed.usable
    assert failed.probe is not None and "missing-bucket-name" in (failed.probe.error or "")


def test_live_check_against_cloudinary_standin(cloudinary_standin) -> None:
    assert Config.check("cloudinary", live=True).usable
    cloudinary_standin.standin.api_secret = "rotated"
    status = Config.check("cloudinary", live=True)
    assert not status.usable and "401" in (status.probe.error or "")


def test_status_report_covers_both_providers() -> None:
    with override_settings(**S3_SETTINGS, **EMPTY_CLOUDINARY):
        report = Config.status_report()
    assert [(s.provider, s.configured, s.probe) for s in report] == [
        ("cloudinary", False, None),
        ("s3", True, None),
    ]
