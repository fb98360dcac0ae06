"""Actors never hang on a provider: each time limit exceeds what its provider calls can take
(each call bounded by PROVIDER_DEADLINE_SECONDS), and a provider timeout is retried with backoff.
"""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from backend.core.errors import ProviderUnavailable
from backend.storage.factory import CloudStorageFactory
from backend.uploads import services, tasks
from backend.uploads.models import UploadStatus
from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.fixtures.providers import MOTO_SERVER_BUCKET, S3_SETTINGS, use_provider

#: (actor, provider calls one message makes in sequence)
ACTOR_CALLS = [
    (tasks.delete_upload, tasks.DELETE_PROVIDER_CALLS),
    (tasks.expire_orphans, 2 * tasks.BATCHES_PER_RUN),
    (tasks.reconcile_provider, 3 * tasks.BATCHES_PER_RUN),
    (tasks.reconcile_providers, 0),  # sends one message per provider, calls none
]


@pytest.mark.parametrize(("actor", "calls"), ACTOR_CALLS, ids=lambda a: getattr(a, "actor_name", a))
def test_time_limit_exceeds_the_provider_deadline_times_the_calls(settings, actor, calls) -> None:
    limit = actor.options["time_limit"] / 1000
    assert limit > calls * settings.PROVIDER_DEADLINE_SECONDS
    assert limit - calls * settings.PROVIDER_DEADLINE_SECONDS >= tasks.TIME_LIMIT_MARGIN_SECONDS


def test_time_limits_follow_the_largest_deadline_start_up_accepts(settings) -> None:
    largest = settings.GUNICORN_TIMEOUT - 0.1  # start-up refuses a deadline >= the timeout
    with override_settings(PROVIDER_DEADLINE_SECONDS=largest):
        for _actor, calls in ACTOR_CALLS:
            assert tasks.time_limit_ms(calls, 0) / 1000 > calls * largest


@pytest.mark.parametrize(
    "actor", [tasks.delete_upload, tasks.expire_orphans, tasks.reconcile_provider]
)
def test_a_provider_timeout_is_retried_with_backoff(actor) -> None:
    timeout = ProviderUnavailable(
        "S3 delete_many is unavailable; retry later.",
        details={"provider": "s3", "code": "provider_timeout"},
    )
    assert actor.options["retry_when"](0, timeout)
    assert actor.options["min_backoff"] >= 10_000
    assert actor.options["max_backoff"] >= actor.options["min_backoff"]


@pytest.mark.django_db
@pytest.mark.timeout(30)
def test_delete_job_against_a_hung_s3_fails_within_the_deadline(
    django_user_model, moto_server, fault_standin
) -> None:
    hung = fault_standin(mode="hang")
    owner = django_user_model.objects.create_user("jobs-hung")
    overrides = {
        **S3_SETTINGS,
        "AWS_STORAGE_BUCKET_NAME": MOTO_SERVER_BUCKET,
        "AWS_S3_ENDPOINT_URL": hung.url,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
        "PROVIDER_DEADLINE_SECONDS": 1.5,
    }
    with override_settings(**overrides):
        CloudStorageFactory.reset()
        use_provider("s3")
        row, _ = services.create_upload(
            owner=owner, filename="a.png", content_type="image/png", size=100
        )
        row = services.request_delete(owner=owner, upload_id=row.id)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as failed:
            tasks.delete_upload(str(row.id))  # the actor's function, as a worker runs it
        elapsed = time.monotonic() - started
    CloudStorageFactory.reset()
    assert elapsed < 1.5 + 0.5
    assert tasks.delete_upload.options["retry_when"](0, failed.value)
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETING  # nothing half-done: the retry finishes it
