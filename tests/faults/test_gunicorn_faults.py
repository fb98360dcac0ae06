"""Faults as deployed: gunicorn with the shipped gunicorn.conf.py and production settings
(DJANGO_DEBUG=0, PostgreSQL, Redis), providers behind `devtools.fault_standin` stand-ins.

- hung S3 with the default deadline: 10 concurrent confirms each get JSON 503 + Retry-After
  within 10 s, /healthz stays under 1 s, Cloudinary presign keeps working, rows stay pending;
  past the failure threshold a confirm fails fast (no connection made) and /readyz shows the
  open breaker; once S3 answers again, confirms succeed without a restart;
- Cloudinary's delivery host hung, slow and trickling (short deadline: these are about shape);
- DATABASE_URL on a closed port: every operation of the OpenAPI schema answers JSON 503.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import statistics
import threading
import time
import uuid
from typing import Any

import pytest
import requests
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from backend.storage.factory import CloudStorageFactory
from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus
from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY, admin_client
from tests.conftest import free_port
from tests.fixtures.providers import (
    CLOUDINARY_TEST_CLOUD,
    CLOUDINARY_TEST_KEY,
    CLOUDINARY_TEST_SECRET,
    MOTO_SERVER_BUCKET,
    S3_SETTINGS,
    use_provider,
)
from tests.uploads.test_api_support import png_bytes

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

DEFAULT_DEADLINE = 10.0  # the production default (tests/storage/test_resilience.py asserts it)


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_STORAGE_BUCKET_NAME": MOTO_SERVER_BUCKET,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
    }


def cloudinary_env(upload_prefix: str, delivery_prefix: str) -> dict[str, str]:
    return {
        "CLOUDINARY_CLOUD_NAME": CLOUDINARY_TEST_CLOUD,
        "CLOUDINARY_API_KEY": CLOUDINARY_TEST_KEY,
        "CLOUDINARY_API_SECRET": CLOUDINARY_TEST_SECRET,
        "CLOUDINARY_UPLOAD_PREFIX": upload_prefix,
        "CLOUDINARY_DELIVERY_PREFIX": delivery_prefix,
    }


def s3_uploads(owner: Any, moto_url: str, count: int) -> list[MediaUpload]:
    """Pending S3 uploads whose object is stored (in moto, behind the stand-in)."""
    overrides = {
        **S3_SETTINGS,
        "AWS_STORAGE_BUCKET_NAME": MOTO_SERVER_BUCKET,
        "AWS_S3_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
    }
    data = png_bytes(200)
    rows = []
    with override_settings(**overrides):
        CloudStorageFactory.reset()
        use_provider("s3")
        for i in range(count):
            row, _ = services.create_upload(
                owner=owner, filename=f"f{i}.png", content_type="image/png", size=len(data)
            )
            rows.append(row)
    CloudStorageFactory.reset()
    client = admin_client(moto_url)
    for row in rows:
        client.put_object(
            Bucket=MOTO_SERVER_BUCKET, Key=row.key, Body=data, ContentType="image/png"
        )
    return rows


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    body = response.json()
    # Uppy's Companion-shaped routes add a top-level `message` (what Uppy shows).
    assert set(body) - {"message"} == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return dict(body["error"])


def assert_json_503(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert int(response.headers["Retry-After"]) >= 1
    return error_of(response)


class HealthPoller:
    """Polls /healthz every 0.1 s in the background; `.worst` is the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status: int | str = requests.get(self.url + "/healthz", timeout=5).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.samples.append((time.monotonic() - started, status))
            self._stop.wait(0.1)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def worst(self) -> float:
        return max(elapsed for elapsed, _ in self.samples)


def test_hung_s3_default_deadline_bounded_fail_fast_and_recovery(
    django_user_model, moto_server, cloudinary_standin, fault_standin, gunicorn_server
) -> None:
    # gunicorn's environment is built from scratch (tests/faults/conftest.py): no
    # PROVIDER_DEADLINE_SECONDS there, so the settings default (10 s) is the one under test.
    owner = django_user_model.objects.create_user("fault-s3", password="fault-pass-123")
    token = Token.objects.create(user=owner).key
    auth = {"Authorization": f"Token {token}"}
    s3 = fault_standin(mode="hang")
    moto_port = int(moto_server.rsplit(":", 1)[1])
    rows = s3_uploads(owner, moto_server, 10)
    use_provider("cloudinary")  # new uploads go to Cloudinary; the S3 rows confirm at S3
    server = gunicorn_server(
        {
            **s3_env(s3.url),
            **cloudinary_env(cloudinary_standin.url, cloudinary_standin.url),
            # The deadline stays the default; the breaker is tuned so the test sees it trip
            # and close within seconds (at least two of the ten calls get a slot and time out).
            "PROVIDER_BREAKER_FAILURES": "2",
            "PROVIDER_BREAKER_COOLDOWN_SECONDS": "5",
        }
    )

    def confirm(row: MediaUpload) -> tuple[float, requests.Response]:
        started = time.monotonic()
        answer = server.post(f"/api/v1/uploads/{row.id}/confirm/", json={}, headers=auth)
        return time.monotonic() - started, answer

    # 1. Ten concurrent confirms against a hung S3, /healthz polled all along.
    with HealthPoller(server.url) as health:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(confirm, rows))
        # Cloudinary (the other provider) presigns meanwhile: no S3 call involved.
        presigned = server.post(
            "/api/v1/uploads/",
            json={"filename": "c.png", "content_type": "image/png", "size": 100},
            headers=auth,
        )
    assert presigned.status_code == 201, presigned.text
    assert presigned.json()["provider"] == "cloudinary"
    codes = set()
    for elapsed, answer in results:
        err = assert_json_503(answer)
        assert err["code"] == "provider_unavailable"
        codes.add(err["details"]["code"])
        assert elapsed <= DEFAULT_DEADLINE, elapsed
    print(f"confirm 503 latencies: {sorted(round(e, 2) for e, _ in results)}")
    print(f"healthz worst {health.worst:.3f} s over {len(health.samples)} polls")
    assert health.worst < 1.0
    assert all(status == 200 for _, status in health.samples)
    assert {r.status for r in MediaUpload.objects.filter(pk__in=[r.pk for r in rows])} == {
        UploadStatus.PENDING
    }

    # 2. Past the threshold: the breaker is open for every process (Redis), calls fail fast
    # without opening a connection, and /readyz says so.
    ready = server.get("/readyz").json()
    assert ready["checks"]["providers"]["s3"]["state"] == "open", ready
    assert ready["checks"]["providers"]["cloudinary"]["state"] == "closed", ready
    # The refused provider call's own cost is asserted in-process (test_resilience: < 50 ms);
    # over HTTP a confirm also pays token auth and the row read, so it is measured against the
    # same request without a provider call (the upload's detail), interleaved.
    accepted = s3.accepted
    refused, baseline = [], []
    for _ in range(5):
        started = time.monotonic()
        assert server.get(f"/api/v1/uploads/{rows[0].id}/", headers=auth).status_code == 200
        baseline.append(time.monotonic() - started)
        elapsed, answer = confirm(rows[0])
        assert assert_json_503(answer)["details"]["code"] == "circuit_open"
        assert 1 <= int(answer.headers["Retry-After"]) <= 5
        refused.append(elapsed)
    print(
        f"fail-fast confirm (HTTP round trip) median {statistics.median(refused) * 1000:.1f} ms, "
        f"detail without provider call {statistics.median(baseline) * 1000:.1f} ms"
    )
    assert statistics.median(refused) - statistics.median(baseline) < 0.05
    assert s3.accepted == accepted  # not one connection attempted

    # 3. S3 answers again (the stand-in relays to moto): after the cool-down one trial goes
    # through and closes the breaker; every confirm then succeeds, no restart.
    s3.set_mode("proxy", upstream=("127.0.0.1", moto_port))
    deadline = time.monotonic() + 15
    while True:
        elapsed, answer = confirm(rows[0])
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        assert_json_503(answer)
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    for row in rows[1:]:
        answer = confirm(row)[1]
        assert answer.status_code == 200, answer.text
    assert server.get("/readyz").json()["checks"]["providers"]["s3"]["state"] == "closed"
    assert set(
        MediaUpload.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", flat=True)
    ) == {UploadStatus.UPLOADED}


def cloudinary_upload(owner: Any, standin_url: str) -> tuple[MediaUpload, dict[str, Any]]:
    """A pending Cloudinary upload sent to the stand-in: (row, the payload a client confirms)."""
    use_provider("cloudinary")
    data = png_bytes(300)
    row, instructions = services.create_upload(
        owner=owner, filename="c.png", content_type="image/png", size=len(data)
    )
    sent = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("c.png", data, "image/png")},
        timeout=10,
    )
    assert sent.status_code == 200, sent.text
    return row, sent.json()


def test_hung_slow_and_trickling_cloudinary_delivery_short_deadline(
    django_user_model, moto_server, cloudinary_standin, fault_standin, gunicorn_server
) -> None:
    deadline = 2.0
    owner = django_user_model.objects.create_user("fault-cld", password="fault-pass-123")
    auth = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    upstream = ("127.0.0.1", int(cloudinary_standin.url.rsplit(":", 1)[1]))
    delivery = fault_standin(mode="hang", upstream=upstream)
    uploads = [cloudinary_upload(owner, cloudinary_standin.url) for _ in range(4)]
    use_provider("s3")  # new uploads go to S3, which answers
    server = gunicorn_server(
        {
            **s3_env(moto_server),
            **cloudinary_env(cloudinary_standin.url, delivery.url),
            "PROVIDER_DEADLINE_SECONDS": str(deadline),
            "PROVIDER_BREAKER_FAILURES": "50",  # this test is about each answer's shape
        }
    )

    def confirm(row: MediaUpload, payload: dict[str, Any]) -> tuple[float, requests.Response]:
        started = time.monotonic()
        answer = server.post(f"/api/v1/uploads/{row.id}/confirm/", json=payload, headers=auth)
        return time.monotonic() - started, answer

    # Hung (accepts, never answers), slower than the read timeout, and trickling one byte
    # every 0.3 s (no per-read timeout ever fires: only the deadline bounds it).
    for mode, extra in (("hang", {}), ("slow", {"delay": 5.0}), ("trickle", {"interval": 0.3})):
        delivery.set_mode(mode, **extra)
        elapsed, answer = confirm(*uploads[0])
        err = assert_json_503(answer)
        assert err["details"]["provider"] == "cloudinary"
        print(f"{mode}: 503 {err['details']['code']} after {elapsed:.2f} s")
        assert elapsed < deadline + 0.5, (mode, elapsed)
        # S3, the other provider, presigns and answers meanwhile.
        presigned = server.post(
            "/api/v1/uploads/",
            json={"filename": "s.png", "content_type": "image/png", "size": 100},
            headers=auth,
        )
        assert presigned.status_code == 201 and presigned.json()["provider"] == "s3"
    assert MediaUpload.objects.get(pk=uploads[0][0].pk).status == UploadStatus.PENDING

    # Slow but inside the budget: a late answer is still an answer.
    delivery.set_mode("slow", delay=0.3)
    elapsed, answer = confirm(*uploads[1])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "uploaded"
    print(f"slow (0.3 s) delivery: confirmed after {elapsed:.2f} s")

    # Healthy again: the first upload confirms too.
    delivery.set_mode("proxy")
    assert confirm(*uploads[0])[1].status_code == 200


def schema_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema, path parameters filled in."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    dummies = {"{upload_id}": str(uuid.uuid4()), "{part_number}": "1"}
    operations = []
    for path, item in schema["paths"].items():
        for method in item:
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for placeholder, value in dummies.items():
                path = path.replace(placeholder, value)
            assert "{" not in path, f"no dummy for a parameter of {path}"
            operations.append((method.upper(), path))
    return operations


def test_database_on_a_closed_port_every_endpoint_answers_json_503(
    fault_standin, gunicorn_server, moto_server, cloudinary_standin
) -> None:
    closed = free_port()  # nothing listens there
    server = gunicorn_server(
        {
            **s3_env(moto_server),
            **cloudinary_env(cloudinary_standin.url, cloudinary_standin.url),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed}/nowhere",
        }
    )
    operations = schema_operations()
    assert len(operations) >= 15
    # Not in the schema, but API routes all the same.
    operations += [("GET", "/api/schema/"), ("GET", "/api/docs/")]
    headers = {"Authorization": "Token " + "0" * 40}
    for method, path in operations:
        body = {"username": "someone", "password": "a-password"} if "auth/token" in path else {}
        answer = requests.request(method, server.url + path, json=body, headers=headers, timeout=10)
        err = assert_json_503(answer)
        assert err["code"] == "database_unavailable", (method, path, err)

    # A genuine (signed) Cloudinary notification: 503, so Cloudinary delivers it again.
    body = b'{"notification_type": "upload", "public_id": "uploads/x", "version": 1}'
    timestamp = str(int(time.time()))
    signature = hashlib.sha1(
        body + timestamp.encode() + CLOUDINARY_TEST_SECRET.encode()
    ).hexdigest()
    hook = requests.post(
        server.url + "/api/v1/webhooks/cloudinary/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Cld-Timestamp": timestamp,
            "X-Cld-Signature": signature,
        },
        timeout=10,
    )
    assert_json_503(hook)

    # Admin and demo pages (session cookie: the session is read from the database): a plain
    # 503 page, never a 500 traceback.
    for path in ("/admin/", "/"):
        page = requests.get(
            server.url + path, cookies={"sessionid": "x" * 32}, timeout=10, allow_redirects=False
        )
        assert page.status_code == 503, (path, page.status_code, page.text[:200])
        assert page.headers["Retry-After"]

    # Liveness does not touch the database; readiness reports it.
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("error")
    assert ready.json()["checks"]["cache"] == "ok"
    assert "Traceback" not in server.log.read_text(errors="replace")
