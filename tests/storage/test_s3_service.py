"""S3Service specifics: the POST policy we sign, batching, multipart cleanup, errors, the client."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.test import override_settings

from backend.core.errors import ProviderUnavailable
from backend.storage import resilience, s3
from backend.storage.base import ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.storage.provider_settings import S3Settings
from tests.fixtures.providers import S3_SETTINGS, S3_TEST_BUCKET


def decode_policy(fields: dict[str, str]) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


def conditions_by_name(policy: dict) -> dict[str, object]:
    found: dict[str, object] = {}
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            found[name.lower()] = ("eq", value)
        else:
            found[
                condition[0].lower()
                if condition[0] != "content-length-range"
                else "content-length-range"
            ] = tuple(condition)
    return found


def test_post_policy_pins_every_condition(s3_storage) -> None:
    ref = ObjectRef("uploads/3/abc/report.pdf", "application/pdf")
    before = datetime.now(UTC)

    instructions = s3_storage.presign_upload(ref, size=1234, max_size=10_000, expires_in=600)
    policy = decode_policy(instructions.fields)
    conditions = conditions_by_name(policy)
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    assert instructions.method == "POST"
    assert instructions.url == f"https://{S3_TEST_BUCKET}.s3.amazonaws.com/"
    # The form writes the staging key; only confirm's copy writes the final key.
    assert conditions["key"] == ("eq", "uploads/_staging/3/abc/report.pdf")
    assert conditions["bucket"] == ("eq", S3_TEST_BUCKET)
    assert conditions["content-type"] == ("eq", "application/pdf")
    # Upper bound is the declared size: anything bigger than announced is refused by S3.
    assert conditions["content-length-range"] == ("content-length-range", 1, 1234)
    assert conditions["x-amz-algorithm"] == ("eq", "AWS4-HMAC-SHA256")
    assert "x-amz-credential" in conditions and "x-amz-date" in conditions
    assert "acl" not in conditions and "acl" not in instructions.fields
    assert before + timedelta(seconds=598) <= expiration <= before + timedelta(seconds=601)
    # Every form field but the policy and signature is named by a condition (S3 rule).
    signed = {k.lower() for k in instructions.fields} - {"policy", "x-amz-signature"}
    assert signed <= set(conditions)
    assert instructions.fields["key"] == "uploads/_staging/3/abc/report.pdf"
    assert s3_storage.final_key(instructions.fields["key"]) == ref.key
    assert "x-amz-checksum-sha256" not in conditions  # none declared
    assert instructions.fields["Content-Type"] == "application/pdf"
    assert S3_SETTINGS["AWS_SECRET_ACCESS_KEY"] not in json.dumps(instructions.as_dict())


def test_post_policy_binds_a_declared_checksum(s3_storage) -> None:
    data = b"declared bytes"
    digest = hashlib.sha256(data).hexdigest()
    ref = ObjectRef("uploads/3/abc/a.png", "image/png", checksum_sha256=digest)

    instructions = s3_storage.presign_upload(ref, size=len(data), max_size=100, expires_in=60)
    conditions = conditions_by_name(decode_policy(instructions.fields))

    as_base64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    # Real S3 computes the body's SHA-256 and refuses the POST (BadDigest) unless it matches;
    # the policy pins both fields, so the client can neither drop nor change them.
    assert conditions["x-amz-checksum-algorithm"] == ("eq", "SHA256")
    assert conditions["x-amz-checksum-sha256"] == ("eq", as_base64)
    assert instructions.fields["x-amz-checksum-algorithm"] == "SHA256"
    assert instructions.fields["x-amz-checksum-sha256"] == as_base64
    assert conditions["key"] == ("eq", "uploads/_staging/3/abc/a.png")


def test_staged_keys_round_trip_and_never_nest(s3_storage, settings) -> None:
    assert s3_storage.staged_key("uploads/3/abc/a.png") == "uploads/_staging/3/abc/a.png"
    assert s3_storage.staged_key("uploads/_staging/3/abc/a.png") == "uploads/_staging/3/abc/a.png"
    assert s3_storage.final_key("uploads/_staging/3/abc/a.png") == "uploads/3/abc/a.png"
    assert s3_storage.final_key("uploads/3/abc/a.png") == "uploads/3/abc/a.png"
    settings.UPLOAD_KEY_PREFIX = ""
    assert s3_storage.staged_key("3/abc/a.png") == "_staging/3/abc/a.png"
    assert s3_storage.final_key("_staging/3/abc/a.png") == "3/abc/a.png"


def test_policy_size_capped_by_max_and_expiry_by_setting(s3_storage, settings) -> None:
    settings.UPLOAD_MAX_PRESIGN_EXPIRY = 900
    ref = ObjectRef("uploads/3/abc/a.png", "image/png")

    instructions = s3_storage.presign_upload(ref, size=5_000, max_size=100, expires_in=86_400)
    policy = decode_policy(instructions.fields)
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    assert conditions_by_name(policy)["content-length-range"] == ("content-length-range", 1, 100)
    assert expiration <= datetime.now(UTC) + timedelta(seconds=901)
    assert instructions.expires_at <= datetime.now(UTC) + timedelta(seconds=901)


def test_acl_only_when_configured(s3_storage) -> None:
    with override_settings(AWS_S3_UPLOAD_ACL="bucket-owner-full-control"):
        service = CloudStorageFactory.for_provider("s3")
        instructions = service.presign_upload(
            ObjectRef("uploads/1/x/y.txt", "text/plain"), size=3, max_size=3, expires_in=60
        )
    conditions = conditions_by_name(decode_policy(instructions.fields))
    assert instructions.fields["acl"] == "bucket-owner-full-control"
    assert conditions["acl"] == ("eq", "bucket-owner-full-control")


def test_presigned_post_uploads_through_a_moto_server(s3_server_storage) -> None:
    ref = ObjectRef("uploads/4/def/hello.txt", "text/plain")
    instructions = s3_server_storage.presign_upload(ref, size=5, max_size=100, expires_in=60)

    assert instructions.url.startswith(s3_server_storage.cfg.endpoint_url)
    answer = requests.post(
        instructions.url,
        data=instructions.fields,
        files={"file": ("hello.txt", b"hello", "text/plain")},
        timeout=5,
    )

    assert answer.status_code == 204
    assert not s3_server_storage.inspect(ref).exists  # the form wrote the staging key
    staged = s3_server_storage.inspect(ObjectRef(s3_server_storage.staged_key(ref.key)))
    assert (staged.exists, staged.size) == (True, 5)

    promotion = s3_server_storage.promote(ref)

    assert promotion.checksum_sha256 == hashlib.sha256(b"hello").hexdigest()
    stored = s3_server_storage.inspect(ref)
    assert (stored.exists, stored.size, stored.content_type) == (True, 5, "text/plain")
    assert not s3_server_storage.inspect(ObjectRef(s3_server_storage.staged_key(ref.key))).exists
    assert (
        stored.url == f"{s3_server_storage.cfg.endpoint_url}/{s3_server_storage.bucket}/{ref.key}"
    )


def test_read_head_of_empty_object_and_range(s3_storage) -> None:
    s3_storage.client.put_object(Bucket=S3_TEST_BUCKET, Key="uploads/e/empty", Body=b"")
    s3_storage.client.put_object(Bucket=S3_TEST_BUCKET, Key="uploads/e/full", Body=b"0123456789")

    assert s3_storage.read_head(ObjectRef("uploads/e/empty"), 4) == b""
    assert s3_storage.read_head(ObjectRef("uploads/e/full"), 4) == b"0123"


def test_delete_many_batches_up_to_500_with_their_staged_copies(s3_storage, monkeypatch) -> None:
    refs = [ObjectRef(f"uploads/b/{i}") for i in range(500)]
    for ref in refs[:3]:
        s3_storage.client.put_object(Bucket=S3_TEST_BUCKET, Key=ref.key, Body=b"x")
        s3_storage.client.put_object(
            Bucket=S3_TEST_BUCKET, Key=s3_storage.staged_key(ref.key), Body=b"y"
        )
    sent: list[int] = []
    real = s3_storage.client.delete_objects

    def counting(**kwargs):
        sent.append(len(kwargs["Delete"]["Objects"]))
        return real(**kwargs)

    monkeypatch.setattr(s3_storage.client, "delete_objects", counting)
    result = s3_storage.delete_many(refs)
    monkeypatch.undo()

    assert len(result.deleted) == 500 and result.failed == {}
    assert sent == [1000]  # one DeleteObjects call: each key and its staged key
    assert s3_storage.list_objects("uploads/").objects == []
    with pytest.raises(ValueError, match="at most 500"):
        s3_storage.delete_many([*refs, ObjectRef("uploads/b/one-more")])


def test_delete_many_reports_per_key_errors(s3_storage, monkeypatch) -> None:
    # moto never fails a key inside DeleteObjects; S3 does (AccessDenied on one key).
    real = s3_storage.client.delete_objects

    def partly_failing(**kwargs):
        answer = real(**kwargs)
        answer["Errors"] = [{"Key": "uploads/p/2", "Code": "AccessDenied", "Message": "no"}]
        return answer

    monkeypatch.setattr(s3_storage.client, "delete_objects", partly_failing)
    result = s3_storage.delete_many([ObjectRef("uploads/p/1"), ObjectRef("uploads/p/2")])

    assert result.deleted == ["uploads/p/1"]
    assert result.failed == {"uploads/p/2": "AccessDenied: no"}


def test_abort_stale_multipart_uploads(s3_storage) -> None:
    client = s3_storage.client
    old = client.create_multipart_upload(Bucket=S3_TEST_BUCKET, Key="uploads/m/old")
    client.create_multipart_upload(Bucket=S3_TEST_BUCKET, Key="other/m/outside-prefix")

    # moto reports a fixed "Initiated" (2010-11-10): "younger" means a cut-off before that.
    aborted_none = s3_storage.abort_stale_multipart_uploads(
        "uploads/", older_than=datetime(2000, 1, 1, tzinfo=UTC)
    )
    aborted = s3_storage.abort_stale_multipart_uploads(
        "uploads/", older_than=datetime.now(UTC) + timedelta(minutes=1)
    )

    remaining = client.list_multipart_uploads(Bucket=S3_TEST_BUCKET).get("Uploads", [])
    assert aborted_none == 0
    assert aborted == 1
    assert [u["Key"] for u in remaining] == ["other/m/outside-prefix"]
    assert old["UploadId"] not in {u["UploadId"] for u in remaining}


def test_download_url_is_presigned_get(s3_storage) -> None:
    url = s3_storage.download_url(ObjectRef("uploads/d/x.txt"), expires_in=120)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    assert "uploads/d/x.txt" in url


def test_unreachable_endpoint_is_provider_unavailable_without_secrets(settings) -> None:
    overrides = {**S3_SETTINGS, "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    with override_settings(**overrides):
        CloudStorageFactory.reset()
        service = CloudStorageFactory.for_provider("s3")
        # One attempt only, so the test stays fast.
        service.client.meta.config.retries["total_max_attempts"] = 1
        with pytest.raises(ProviderUnavailable) as caught:
            service.inspect(ObjectRef("uploads/x"))
        probe = service.probe()
    CloudStorageFactory.reset()

    assert caught.value.message == "S3 inspect (HeadObject) is unavailable; retry later."
    assert caught.value.details == {
        "provider": "s3",
        "operation": "inspect (HeadObject)",
        "code": "EndpointConnectionError",
    }
    assert probe.ok is False and "head_bucket" in (probe.error or "")
    for text in (caught.value.message, probe.error or ""):
        assert S3_SETTINGS["AWS_SECRET_ACCESS_KEY"] not in text


def test_one_client_per_settings(s3_storage, boto3_clients) -> None:
    built = len(boto3_clients)
    first = CloudStorageFactory.for_provider("s3").client
    second = CloudStorageFactory.for_provider("s3").client

    assert first is second is s3_storage.client
    assert len(boto3_clients) == built
    other = s3.get_client(S3Settings(bucket="b-other", region="eu-west-1", endpoint_url=""))
    assert other is not first
    assert len(boto3_clients) == built + 1
    assert first.meta.config.signature_version == "s3v4"
    # Timeouts and attempts come from the provider deadline (resilience.budget()).
    budget = resilience.budget()
    assert first.meta.config.connect_timeout == budget.connect
    assert first.meta.config.read_timeout == budget.s3_read
    assert first.meta.config.retries["total_max_attempts"] == budget.s3_attempts


def test_endpoint_url_is_honoured_with_path_style(s3_server_storage) -> None:
    client = s3_server_storage.client
    assert client.meta.endpoint_url == s3_server_storage.cfg.endpoint_url
    assert client.meta.config.s3["addressing_style"] == "path"


def test_inspect_with_head_is_one_request_and_handles_an_empty_object(s3_storage) -> None:
    calls: list[str] = []
    s3_storage.client.meta.events.register(
        "before-call.s3.*", lambda model, **kw: calls.append(model.name)
    )
    s3_storage.client.put_object(Bucket=s3_storage.bucket, Key="uploads/w/full", Body=b"0123456789")
    s3_storage.client.put_object(Bucket=s3_storage.bucket, Key="uploads/w/empty", Body=b"")
    calls.clear()

    stored, head = s3_storage.inspect_with_head(ObjectRef("uploads/w/full"), 4)
    assert (stored.size, head) == (10, b"0123")
    assert calls == ["GetObject"]  # one read: no HEAD that a replacement could slip behind

    stored, head = s3_storage.inspect_with_head(ObjectRef("uploads/w/empty"), 4)
    assert (stored.exists, stored.size, head) == (True, 0, b"")
    assert s3_storage.inspect_with_head(ObjectRef("uploads/w/none"), 4)[1] is None


def test_promote_never_replaces_the_promoted_object(s3_storage) -> None:
    ref = ObjectRef("uploads/6/pr/a.txt", "text/plain")
    staged = s3_storage.staged_key(ref.key)
    s3_storage.client.put_object(
        Bucket=S3_TEST_BUCKET, Key=staged, Body=b"first", ContentType="text/plain"
    )
    first = s3_storage.promote(ref)
    assert first.checksum_sha256 == hashlib.sha256(b"first").hexdigest()
    etag = s3_storage.inspect(ref).etag

    # A replay into staging, then another confirm racing in: the final key keeps its object.
    s3_storage.client.put_object(
        Bucket=S3_TEST_BUCKET, Key=staged, Body=b"other", ContentType="text/plain"
    )
    again = s3_storage.promote(ref)

    assert again.checksum_sha256 == first.checksum_sha256  # from S3's stored checksum
    assert s3_storage.inspect(ref).etag == etag
    assert s3_storage.read_head(ref, 10) == b"first"


def test_promote_with_nothing_staged_leaves_the_final_key_empty(s3_storage) -> None:
    ref = ObjectRef("uploads/6/pr/missing.txt", "text/plain")
    assert s3_storage.promote(ref).checksum_sha256 is None
    assert not s3_storage.inspect(ref).exists


def test_download_url_pins_type_and_disposition(s3_storage) -> None:
    html = s3_storage.download_url(ObjectRef("uploads/6/d/page.html", "text/html"))
    png = s3_storage.download_url(ObjectRef("uploads/6/d/a.png", "image/png"))
    assert "response-content-type=text%2Fhtml" in html
    assert "response-content-disposition=attachment" in html
    assert "response-content-type=image%2Fpng" in png
    assert "response-content-disposition" not in png


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {"region_name": "eu-west-1"},
        {"region_name": "us-east-1"},
        {"region_name": "eu-central-1", "aws_session_token": "session-token-1"},
        {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9"},
    ],
)
def test_direct_post_signing_equals_generate_presigned_post(monkeypatch, client_kwargs) -> None:
    """sign_post (S3SigV4PostAuth's algorithm, endpoint resolved once) returns what
    generate_presigned_post returns: the URL, every field in the same order, the same policy
    document (ours compact JSON, botocore's with spaces: the same conditions in the same order),
    and AWS's signature of it, derived as botocore derives its own."""
    import base64
    import datetime as dt
    import hashlib
    import hmac
    import json

    def signature(policy: str, day: dt.datetime, region: str) -> str:
        # AWS, "Calculating a Signature" (browser-based POST): the day's derived key, then HMAC.
        key = b"AWS4secret-example"
        for part in (day.strftime("%Y%m%d"), region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()

    import boto3
    import botocore.auth
    import botocore.signers
    from botocore.config import Config

    from backend.storage import s3

    fixed = dt.datetime(2026, 12, 2, 3, 4, 5)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    monkeypatch.setattr(botocore.signers, "get_current_datetime", lambda: fixed)
    path_style = "endpoint_url" in client_kwargs
    client = boto3.session.Session().client(
        "s3",
        aws_access_key_id="AKIDEXAMPLE000000000",
        aws_secret_access_key="secret-example",
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path" if path_style else "auto"}
        ),
        **client_kwargs,
    )
    key = "uploads/7/0f0e/photo.png"
    fields = {"Content-Type": "image/png", "acl": "private"}
    conditions = [
        {"Content-Type": "image/png"},
        ["content-length-range", 1, 1000],
        {"acl": "private"},
    ]
    s3.drop_clients()
    # The first call resolves the endpoint and derives the day's key, the second reuses both;
    # the next day derives a new key.
    for day in (fixed, fixed, fixed + dt.timedelta(days=1), fixed):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda day=day: day)
        monkeypatch.setattr(botocore.signers, "get_current_datetime", lambda day=day: day)
        ours = s3.sign_post(client, "bench-bucket", key, dict(fields), list(conditions), 600)
        theirs = client.generate_presigned_post(
            Bucket="bench-bucket",
            Key=key,
            Fields=dict(fields),
            Conditions=list(conditions),
            ExpiresIn=600,
        )
        region = client.meta.region_name
        ours_fields, theirs_fields = dict(ours["fields"]), dict(theirs["fields"])
        assert ours["url"] == theirs["url"]
        assert list(ours_fields) == list(theirs_fields)  # the same order too
        documents = [
            json.loads(base64.b64decode(f.pop("policy"))) for f in (ours_fields, theirs_fields)
        ]
        assert documents[0] == documents[1]
        assert theirs_fields.pop("x-amz-signature") == signature(
            theirs["fields"]["policy"], day, region
        )
        assert ours_fields.pop("x-amz-signature") == signature(
            ours["fields"]["policy"], day, region
        )
        assert ours_fields == theirs_fields
    policy = json.loads(base64.b64decode(ours["fields"]["policy"]))
    assert policy["expiration"] == "2026-12-02T03:14:05Z"
    assert {"key": key} in policy["conditions"]


def test_signing_a_policy_keeps_the_gil() -> None:
    """In a threaded worker the other threads take the GIL whenever this one releases it, and
    this one then waits to get it back: signing (local work) must never release it (the
    one-shot `hmac.digest` does, on every call). Beside a neighbour thread busy with Python, a
    release that the neighbour wins costs this thread a whole switch interval (50 ms here):
    1 000 signatures that keep the GIL take about as long as alone (the interpreter's own
    hand-overs add one interval per interval of work), ones that release it seconds more."""
    import sys
    import threading
    import time

    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE000000000",
        aws_secret_access_key="secret-example",
        config=Config(signature_version="s3v4"),
    )
    conditions = [{"Content-Type": "image/png"}, ["content-length-range", 1, 1000]]

    def sign() -> None:
        s3.sign_post(
            client, "b", "uploads/1/x/p.png", {"Content-Type": "image/png"}, conditions, 60
        )

    def timed() -> float:
        started = time.monotonic()
        for _ in range(1000):
            sign()
        return time.monotonic() - started

    sign()  # the endpoint resolved and the day's key derived: not measured
    alone = timed()
    stop = False

    def neighbour() -> None:
        while not stop:
            pass

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=neighbour, daemon=True)
    try:
        thread.start()
        time.sleep(0.1)
        beside = timed()
    finally:
        stop = True
        sys.setswitchinterval(interval)
        thread.join(10)
    assert beside < 2.5 * alone + 0.15, (
        f"1 000 signatures took {beside:.2f} s beside a busy thread, {alone:.2f} s alone: "
        "signing hands the GIL over"
    )
