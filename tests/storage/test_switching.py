"""`switching.activate_provider`: the one path the admin, `setup_cloud_storage` and `demo_setup`
switch the provider through."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from backend.core.errors import StorageUnavailable
from backend.core.models import AppConfig
from backend.storage.switching import activate_provider
from tests.fixtures.providers import S3_SETTINGS, cloudinary_settings

pytestmark = pytest.mark.django_db

NO_S3 = {k: "" for k in S3_SETTINGS}


def test_switching_to_an_incomplete_provider_is_refused_naming_what_is_missing() -> None:
    with (
        override_settings(**NO_S3, **cloudinary_settings("")),
        pytest.raises(StorageUnavailable) as caught,
    ):
        activate_provider("s3", actor="test")
    assert caught.value.message.startswith("Cannot switch to s3: AWS_STORAGE_BUCKET_NAME")
    assert "AWS_STORAGE_BUCKET_NAME" in caught.value.details["missing"]
    assert AppConfig.load().provider == "cloudinary"


def test_keeping_a_broken_provider_still_saves_the_other_changes() -> None:
    with override_settings(**NO_S3):  # and no Cloudinary either
        previous, new = activate_provider(
            "cloudinary", actor="test", changes={"max_upload_size": 1234}
        )
    assert (previous, new) == ("cloudinary", "cloudinary")
    assert AppConfig.load().max_upload_size == 1234


def test_demo_setup_switches_through_it(caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(**S3_SETTINGS), caplog.at_level(logging.INFO):
        call_command(
            "demo_setup", "--provider", "s3", "--password", "demo-pass-123", stdout=StringIO()
        )
    assert AppConfig.load().provider == "s3"
    assert "storage provider changed from cloudinary to s3 by manage.py demo_setup" in (
        caplog.messages
    )
