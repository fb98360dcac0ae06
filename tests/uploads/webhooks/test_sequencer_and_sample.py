from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from backend.uploads.models import UploadStatus
from backend.uploads.sequencer import compare_sequencers, sequencer_is_newer
from devtools import cloudinary_notification as sample
from tests.uploads.webhooks.conftest import CLOUDINARY_WEBHOOK


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", -1),
        ("0055AED6DCD90281E5", "0055aed6dcd90281e5", 0),
        ("FF", "0100", -1),  # padded to equal length first: 00FF < 0100
        ("100", "FF", 1),
        ("0A", "A", 0),
        ("B", "0A", 1),
    ],
)
def test_compare_sequencers_pads_then_compares_hex(a: str, b: str, expected: int) -> None:
    assert compare_sequencers(a, b) == expected
    assert compare_sequencers(b, a) == -expected


def test_sequencer_is_newer() -> None:
    assert sequencer_is_newer("0B", "0A")
    assert not sequencer_is_newer("0A", "0A")  # a repeat is not newer
    assert not sequencer_is_newer("FF", "0100")
    assert sequencer_is_newer("01", "")  # nothing applied yet
    assert sequencer_is_newer("", "0A")  # no usable candidate: the services decide
    with pytest.raises(ValueError):
        compare_sequencers("xyz", "0A")


def test_sample_signer_produces_a_delivery_the_endpoint_accepts(
    cloudinary_standin: Any, webhook_client: Client, user: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.uploads import services
    from tests.fixtures.providers import use_provider

    use_provider("cloudinary")
    row, _ = services.create_upload(owner=user, filename="a.txt", content_type="text/plain", size=3)
    services.request_delete(owner=user, upload_id=row.id)  # a deleting row, like after DELETE
    body, headers = sample.signed_cloudinary_notification(
        sample.sample_payload("delete", row.key, None)
    )
    response = webhook_client.post(
        CLOUDINARY_WEBHOOK,
        data=body,
        content_type="application/json",
        HTTP_X_CLD_TIMESTAMP=headers["X-Cld-Timestamp"],
        HTTP_X_CLD_SIGNATURE=headers["X-Cld-Signature"],
    )
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.status == UploadStatus.DELETED

    stale, stale_headers = sample.signed_cloudinary_notification(
        {"notification_type": "upload", "public_id": row.key}, timestamp=int(time.time()) - 3600
    )
    assert (
        webhook_client.post(
            CLOUDINARY_WEBHOOK,
            data=stale,
            content_type="application/json",
            HTTP_X_CLD_TIMESTAMP=stale_headers["X-Cld-Timestamp"],
            HTTP_X_CLD_SIGNATURE=stale_headers["X-Cld-Signature"],
        ).status_code
        == 401
    )
    assert json.loads(body)["resources"][0]["public_id"] == row.key

    assert sample.main(["--public-id", row.key, "--type", "delete"]) == 0
    printed = capsys.readouterr().out
    assert "X-Cld-Signature" in printed and "curl" in printed
    from tests.fixtures.providers import CLOUDINARY_TEST_SECRET

    assert CLOUDINARY_TEST_SECRET not in printed
