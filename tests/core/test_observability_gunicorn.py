"""Metrics and logs of the real web server: gunicorn with the shipped config and 2 workers,
production settings, the moto S3 server over HTTP.

- /metrics: counters move after a presign and a confirm, and every scrape (whichever worker
  answers) shows the sum over both workers (prometheus-client's multiprocess mode).
- LOG_FORMAT=json: every line is a JSON object; the lines of a request carry its request id,
  the lines of an upload's flow its upload id, and no line carries a secret.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY
from tests.faults.conftest import Gunicorn, gunicorn_server  # noqa: F401 (the fixture)
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider
from tests.uploads.test_api_support import png_bytes

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

METRICS_TOKEN = "metrics-token-for-the-test-" + uuid.uuid4().hex
PASSWORD = "obs-test-password-" + uuid.uuid4().hex[:8]


def s3_env(moto_url: str) -> dict[str, str]:
    return {
        "AWS_STORAGE_BUCKET_NAME": MOTO_SERVER_BUCKET,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
    }


@pytest.fixture
def api_token(moto_server: str) -> str:
    user = get_user_model().objects.create_user(username="obs", password=PASSWORD)
    use_provider("s3")
    return str(Token.objects.create(user=user).key)


def presign(server: Gunicorn, token: str, name: str, data: bytes, **headers: str) -> Any:
    response = server.post(
        "/api/v1/uploads/",
        json={"filename": name, "content_type": "image/png", "size": len(data)},
        headers={"Authorization": f"Token {token}", **headers},
    )
    assert response.status_code == 201, response.text
    return response.json()


def put_object(body: dict[str, Any], data: bytes) -> None:
    upload = body["upload"]
    if upload["method"] == "POST":
        answer = requests.post(
            upload["url"], data=upload["fields"], files={"file": data}, timeout=30
        )
    else:
        answer = requests.put(upload["url"], data=data, headers=upload["headers"], timeout=30)
    assert answer.status_code < 300, answer.text


def confirm(server: Gunicorn, token: str, upload_id: str, **headers: str) -> requests.Response:
    return server.post(
        f"/api/v1/uploads/{upload_id}/confirm/",
        json={},
        headers={"Authorization": f"Token {token}", **headers},
    )


def scrape(server: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = server.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def counting_pids(metrics_dir: Path) -> set[str]:
    """The processes that wrote counters (prometheus-client: counter_<pid>.db per process)."""
    found = (re.fullmatch(r"counter_(\d+)\.db", p.name) for p in metrics_dir.glob("counter_*"))
    return {match.group(1) for match in found if match}


def test_metrics_move_after_presign_and_confirm_summed_over_two_workers(
    gunicorn_server: Any,  # noqa: F811
    moto_server: str,
    api_token: str,
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "metrics"
    server = gunicorn_server(
        {
            **s3_env(moto_server),
            "GUNICORN_WORKERS": "2",
            "METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    # Access is restricted: no token, a wrong token.
    assert server.get("/metrics").status_code == 403
    wrong = server.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "METRICS_TOKEN" in wrong.text

    presigns = "upload_broker_presigns_total"
    confirms = "upload_broker_confirms_total"
    before = scrape(server)
    assert value(before, presigns, provider="s3", kind="single") == 0

    data = png_bytes(300)
    # Separate connections, in parallel, until both workers have counted some (each process
    # writes its own counter file: counter_<pid>.db). At most 16: the pending-upload quota is 20.
    bodies: list[Any] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while len(counting_pids(metrics_dir)) < 2 and len(bodies) < 16:
            names = [f"m{len(bodies) + i}.png" for i in range(4)]
            bodies += pool.map(lambda name: presign(server, api_token, name, data), names)
    assert len(counting_pids(metrics_dir)) >= 2, sorted(p.name for p in metrics_dir.iterdir())
    count = len(bodies)
    after_presign = scrape(server)
    assert value(after_presign, presigns, provider="s3", kind="single") == count
    assert value(after_presign, confirms, source="client", outcome="uploaded") == 0

    for body in bodies:
        put_object(body, data)
    # One at a time: parallel confirms would meet the per-process provider concurrency limit.
    answers = [confirm(server, api_token, b["id"]) for b in bodies]
    assert [a.status_code for a in answers] == [200] * count
    # A repeat confirm is counted as what it is.
    assert confirm(server, api_token, bodies[0]["id"]).status_code == 200

    # Whichever worker answers the scrape, it reports the sum over both.
    for _ in range(6):
        samples = scrape(server)
        assert value(samples, presigns, provider="s3", kind="single") == count
        assert value(samples, confirms, source="client", outcome="uploaded") == count
        assert value(samples, confirms, source="client", outcome="already_uploaded") == 1
        # Each confirm inspects the object at S3 (one timed provider call or more).
        calls = sum(
            v
            for (name, labels), v in samples.items()
            if name == "upload_broker_provider_call_seconds_count" and ("provider", "s3") in labels
        )
        assert calls >= count


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The Django log lines (gunicorn's own start-up lines are plain text)."""
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_json_logs_carry_request_and_upload_ids_and_no_secret(
    gunicorn_server: Any,  # noqa: F811
    moto_server: str,
    api_token: str,
) -> None:
    secret_key = "json-log-test-secret-key-" + uuid.uuid4().hex
    server = gunicorn_server(
        {
            **s3_env(moto_server),
            "GUNICORN_WORKERS": "2",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "GUNICORN_ACCESS_LOG": "-",
            "DJANGO_SECRET_KEY": secret_key,
            "METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    data = png_bytes(300)

    # One upload's flow, each request with its own id from the client.
    body = presign(server, api_token, "logged.png", data, **{"X-Request-ID": "req-presign-1"})
    put_object(body, data)
    early = confirm(server, api_token, body["id"], **{"X-Request-ID": "req-confirm-early"})
    assert early.status_code == 200 and early.headers["X-Request-ID"] == "req-confirm-early"

    # A second upload that fails verification (not a PNG): a WARNING in its flow.
    bad = presign(server, api_token, "bad.png", data, **{"X-Request-ID": "req-presign-2"})
    put_object(bad, b"GIF89a" + b"\x00" * (len(data) - 6))
    refused = confirm(server, api_token, bad["id"], **{"X-Request-ID": "req-confirm-bad"})
    assert refused.status_code == 422, refused.text

    # Not an upload's flow: a 404 (logged by Django after the view) and an insane id.
    missing = server.get("/nowhere", headers={"X-Request-ID": "req-missing"})
    assert missing.status_code == 404
    generated = server.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    # A failed token login carries the password: it must not reach a line.
    server.post("/api/v1/auth/token/", json={"username": "obs", "password": PASSWORD + "x"})
    # INFO lines are written in batches (backend.core.logs.BatchingStreamHandler): a stopping
    # worker writes what it had queued, so every line is in the log once the server is down.
    server.stop()

    lines = [line for line in json_lines(server.log) if line.get("request_id")]
    assert lines, server.log.read_text()[-2000:]
    every = json_lines(server.log)
    # Every line logged while serving a request has its id; startup lines have none.
    for line in every:
        assert {"time", "level", "logger", "message", "request_id", "upload_id"} <= set(line)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_request.setdefault(line["request_id"], []).append(line)

    created = by_request["req-presign-1"]
    assert any("created" in line["message"] for line in created), created
    assert all(line["upload_id"] == body["id"] for line in created), created
    finalised = by_request["req-confirm-early"]
    assert any("finalised" in line["message"] for line in finalised), finalised
    assert all(line["upload_id"] == body["id"] for line in finalised), finalised
    failed = by_request["req-confirm-bad"]
    assert any(line["level"] == "WARNING" for line in failed), failed
    assert all(line["upload_id"] == bad["id"] for line in failed), failed
    not_found = by_request["req-missing"]
    assert any("Not Found" in line["message"] for line in not_found), not_found
    assert all(line["upload_id"] is None for line in not_found), not_found

    text = server.log.read_text(errors="replace")
    # gunicorn's access lines end in the same id (the response header).
    access = [raw for raw in text.splitlines() if '"POST /api/v1/uploads/ HTTP' in raw]
    assert any(raw.endswith("request_id=req-presign-1") for raw in access), access
    for secret in (secret_key, DEV_SECRET_KEY, METRICS_TOKEN, PASSWORD, api_token):
        assert secret not in text, f"a secret reached the log: {secret[:6]}..."
