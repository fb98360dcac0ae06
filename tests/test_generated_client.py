"""A client generated from the served OpenAPI schema by openapi-python-client (pinned in
pyproject.toml; generated into a temporary directory at test time, never committed, so it is
always the current schema's) runs the mobile flow against the live server and a moto S3:
presign -> upload to S3 -> confirm -> list -> detail -> delete.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import make_png

pytestmark = [pytest.mark.timeout(120)]

PACKAGE = "generated_broker_client"


def _generate(schema_url: str, token: str, where: Path) -> Any:
    schema = requests.get(schema_url, headers={"Authorization": f"Token {token}"}, timeout=30)
    assert schema.status_code == 200
    (where / "schema.json").write_bytes(schema.content)
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(where / "schema.json"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        # Its post-generation formatting runs ruff: the one of this virtualenv.
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


def test_generated_client_runs_the_whole_flow(
    live_server: Any, s3_server_storage: Any, transactional_db: None, tmp_path: Path
) -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from backend.uploads.models import MediaUpload
    from tests.fixtures.providers import use_provider

    use_provider("s3")
    user = get_user_model().objects.create_user("mobile", password="mobile-password-1")
    token = Token.objects.create(user=user).key
    client_pkg = _generate(f"{live_server.url}/api/schema/?format=json", token, tmp_path)
    api = importlib.import_module(f"{PACKAGE}.api.v1")
    models = importlib.import_module(f"{PACKAGE}.models")
    for name in ("create", "confirm", "list", "retrieve", "destroy"):
        importlib.import_module(f"{PACKAGE}.api.v1.uploads_{name}")
    client = client_pkg.AuthenticatedClient(base_url=live_server.url, token=token, prefix="Token")
    data = make_png(40, 40, seed=9)

    # presign: the schema's enum of allowed types is the policy in force
    content_type = models.UploadCreateInputRequestContentType("image/png")
    created = api.uploads_create.sync(
        client=client,
        body=models.UploadCreateInputRequest(
            filename="from the generated client.png", content_type=content_type, size=len(data)
        ),
    )
    assert isinstance(created, models.UploadCreateOutput), created
    assert created.upload.method == models.UploadMethodEnum.POST

    # upload straight to S3 (moto) with the instructions as given
    fields = created.upload.fields.additional_properties
    posted = requests.post(
        created.upload.url, data=fields, files={"file": ("x.png", data, "image/png")}, timeout=30
    )
    assert posted.status_code in (200, 201, 204), posted.text

    confirmed = api.uploads_confirm.sync(
        created.id, client=client, body=models.UploadsConfirmBody()
    )
    assert isinstance(confirmed, models.UploadOutput), confirmed
    assert confirmed.status == models.StatusEnum.UPLOADED
    assert confirmed.size == len(data)

    page = api.uploads_list.sync(client=client)
    assert isinstance(page, models.UploadPage), page
    assert page.count == 1 and [u.id for u in page.results] == [created.id]

    detail = api.uploads_retrieve.sync(created.id, client=client)
    assert isinstance(detail, models.UploadOutput), detail
    assert detail.filename == "from the generated client.png"
    assert isinstance(detail.url, str) and detail.url.startswith(created.upload.url.rstrip("/"))

    deleted = api.uploads_destroy.sync(created.id, client=client)
    assert isinstance(deleted, models.UploadOutput), deleted
    assert deleted.status == models.StatusEnum.DELETING
    assert MediaUpload.objects.get(pk=created.id).status in ("deleting", "deleted")

    # An error comes back as the schema's Error model, not an exception or a raw dict.
    missing = api.uploads_retrieve.sync("00000000-0000-0000-0000-000000000000", client=client)
    assert isinstance(missing, models.Error) and missing.error.code == "not_found"
