"""Metrics, log context and sizes in-process (the multi-worker server: test_observability_gunicorn).

Counters are read from this process's registry before and after, so other tests' counts do
not matter.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client, override_settings
from moto import mock_aws
from prometheus_client import REGISTRY

from backend.core import logs
from backend.core.errors import ProviderUnavailable
from backend.core.sizes import human_size
from backend.storage.base import ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import cleanup
from tests.fixtures.providers import S3_SETTINGS
from tests.uploads.test_cleanup import make_upload, providers  # noqa: F401 (fixture)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- /metrics access --------------------------------------------------------------------------


def test_metrics_refused_when_nothing_is_configured(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.content.decode()
    assert "upload_broker" not in response.content.decode()


@override_settings(METRICS_TOKEN="a-long-metrics-token", METRICS_ALLOWED_NETWORKS=[])
def test_metrics_with_the_bearer_token_only(client: Client) -> None:
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="a-long-metrics-token").status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer a-long-metrics-token")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "upload_broker_presigns_total" in response.content.decode()
    assert (
        client.post("/metrics", HTTP_AUTHORIZATION="Bearer a-long-metrics-token").status_code == 405
    )


def test_metrics_from_an_allowed_network(client: Client) -> None:
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["10.1.0.0/16"]):
        assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
        # A forwarded header does not make a client local.
        forged = client.get("/metrics", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
        assert forged.status_code == 403
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=["::1/128"]):
        assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


# --- counters ---------------------------------------------------------------------------------


def _webhook(client: Client) -> int:
    response = client.post(
        "/api/v1/webhooks/cloudinary/", data=b"{}", content_type="application/json"
    )
    return int(response.status_code)


def _deliveries(result: str) -> float:
    return sample("upload_broker_webhook_deliveries_total", provider="cloudinary", result=result)


@pytest.mark.django_db
def test_webhook_deliveries_counted_by_provider_and_result(client: Client) -> None:
    # Not configured: 503.
    before = _deliveries("unavailable")
    assert _webhook(client) == 503
    assert _deliveries("unavailable") == before + 1


@pytest.mark.django_db
def test_unsigned_webhook_counted_as_rejected(client: Client, cloudinary_standin: Any) -> None:
    before = _deliveries("rejected")
    assert 400 <= _webhook(client) < 500
    assert _deliveries("rejected") == before + 1


@pytest.mark.django_db
def test_cleanup_counts(providers: Any, django_user_model: Any) -> None:  # noqa: F811
    owner = django_user_model.objects.create_user("metrics-owner", password="x")
    for _ in range(3):
        make_upload(owner, "s3")
    labels = {"job": "expire_orphans", "provider": "s3"}
    deleted = sample("upload_broker_cleanup_objects_total", result="deleted", **labels)
    runs = sample("upload_broker_cleanup_runs_total", result="ran", **labels)
    report = cleanup.expire_orphans()
    assert report.deleted == 3
    assert sample("upload_broker_cleanup_objects_total", result="deleted", **labels) == deleted + 3
    assert sample("upload_broker_cleanup_runs_total", result="ran", **labels) == runs + 1
    # A dry run changes nothing and counts nothing.
    cleanup.expire_orphans(dry_run=True)
    assert sample("upload_broker_cleanup_runs_total", result="ran", **labels) == runs + 1


def test_provider_call_errors_and_latency_counted() -> None:
    with mock_aws(), override_settings(**{**S3_SETTINGS, "AWS_STORAGE_BUCKET_NAME": "no-bucket"}):
        CloudStorageFactory.reset()
        try:
            service = CloudStorageFactory.for_provider("s3")
            timed = sum(
                s.value
                for m in REGISTRY.collect()
                if m.name == "upload_broker_provider_call_seconds"
                for s in m.samples
                if s.name.endswith("_count") and s.labels["provider"] == "s3"
            )
            errors_before = sum(
                s.value
                for m in REGISTRY.collect()
                if m.name == "upload_broker_provider_call_errors"
                for s in m.samples
                if s.name.endswith("_total") and s.labels["provider"] == "s3"
            )
            with pytest.raises(ProviderUnavailable):
                service.delete_many([ObjectRef("uploads/x.png", "image/png")])
        finally:
            CloudStorageFactory.reset()
    timed_after = sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "upload_broker_provider_call_seconds"
        for s in m.samples
        if s.name.endswith("_count") and s.labels["provider"] == "s3"
    )
    errors_after = sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "upload_broker_provider_call_errors"
        for s in m.samples
        if s.name.endswith("_total") and s.labels["provider"] == "s3"
    )
    assert timed_after == timed + 1
    assert errors_after == errors_before + 1


# --- log context ------------------------------------------------------------------------------


def test_request_id_taken_when_sane_else_generated(client: Client) -> None:
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="3f2c-proxy.trace:1")
    assert kept["X-Request-ID"] == "3f2c-proxy.trace:1"
    for insane in ("", "has space", "x" * 200, "line\nbreak", "<script>"):
        answer = client.get("/healthz", HTTP_X_REQUEST_ID=insane)
        assert answer["X-Request-ID"] != insane
        assert logs.SANE_REQUEST_ID.match(answer["X-Request-ID"])
    assert client.get("/healthz")["X-Request-ID"] != client.get("/healthz")["X-Request-ID"]
    # Nothing leaks out of a finished request into the thread.
    assert logs.request_id.get() is None and logs.upload_id.get() is None


def _record(message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, message, args, None)


def test_filter_adds_the_ids_and_blanks_configured_secrets(settings: Any) -> None:
    settings.AWS_SECRET_ACCESS_KEY = "aws-secret-value-123"
    settings.CLOUDINARY_URL = "cloudinary://1234:cloudinary-secret-456@cloud"
    context = logs.ContextFilter()
    with logs.upload_context("u-1"):
        logs.request_id.set("r-1")
        record = _record("failed with %s and %s", "aws-secret-value-123", "cloudinary-secret-456")
        assert context.filter(record)
    logs.request_id.set(None)
    assert (record.request_id, record.upload_id) == ("r-1", "u-1")  # type: ignore[attr-defined]
    assert record.getMessage() == "failed with [redacted] and [redacted]"
    assert logs.upload_id.get() is None
    plain = context.filter(_record("nothing secret here"))
    assert plain


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (100, "100 B"),
        (1536, "1.5 KB"),
        (26214400, "25 MB"),
        (104857600, "100 MB"),
        (5 * 2**30, "5.0 GB"),
    ],
)
def test_human_size_as_the_widget_writes_it(size: int, text: str) -> None:
    assert human_size(size) == text


# --- jobs -------------------------------------------------------------------------------------


def test_job_lines_carry_the_enqueuing_request_id_and_their_upload_id(
    broker: Any, memory_storage: Any, transactional_db: None, caplog: Any, django_user_model: Any
) -> None:
    import dramatiq

    from backend.uploads import jobs
    from backend.uploads import tasks as _tasks  # noqa: F401 (declares the actors)
    from tests.uploads.test_tasks import make_row, queued

    owner = django_user_model.objects.create_user("job-logs", password="x")
    row = make_row(owner, status="deleting")
    logs.request_id.set("req-that-enqueued")
    try:
        jobs.send(jobs.DELETE_UPLOAD, str(row.id))
    finally:
        logs.request_id.set(None)
    assert queued(broker)[0].options["request_id"] == "req-that-enqueued"

    caplog.handler.addFilter(logs.ContextFilter())
    caplog.set_level(logging.INFO)
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        broker.join(jobs.QUEUE, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    lines = [r for r in caplog.records if f"upload {row.id} deleted" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    for record in lines:
        assert record.request_id == "req-that-enqueued"  # type: ignore[attr-defined]
        assert record.upload_id == str(row.id)  # type: ignore[attr-defined]


def test_the_plain_time_is_loggings_own() -> None:
    """PlainFormatter formats each second once; the text is logging.Formatter's, to the ms."""
    import logging

    from backend.core.logs import PlainFormatter

    ours, stock = PlainFormatter("%(asctime)s"), logging.Formatter("%(asctime)s")
    record = logging.makeLogRecord({"msg": "x"})
    for created in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25):
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == stock.formatTime(record)
