"""Query budgets of the hot paths, through the API with token authentication and persistent
database connections (the production default), on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.core.config import get_app_config
from backend.uploads.models import MediaUpload
from tests.uploads.test_api_support import png_bytes, store

pytestmark = pytest.mark.django_db

UPLOADS = "/api/v1/uploads/"


@pytest.fixture
def api(django_user_model: Any, settings: Any) -> APIClient:
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0  # persistent by default
    user = django_user_model.objects.create_user("budget", password="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def presign(api: APIClient) -> Any:
    body = {"filename": "a.png", "content_type": "image/png", "size": 100}
    response = api.post(UPLOADS, body, format="json")
    assert response.status_code == 201, response.content
    return response


def test_presign_is_at_most_three_queries(memory_storage, api) -> None:
    """The token, the quota reservation, the INSERT."""
    get_app_config()
    if connection.vendor == "postgresql":  # one statement even for a user's first upload
        with CaptureQueriesContext(connection) as first:
            presign(api)
        assert len(first) <= 3, [q["sql"] for q in first]
    presign(api)  # on SQLite a user's first reservation also inserts the counter row
    with CaptureQueriesContext(connection) as queries:
        presign(api)
    assert len(queries) <= 3, [q["sql"] for q in queries]


def test_confirm_is_at_most_four_queries(memory_storage, api) -> None:
    """The token, the row, its conditional UPDATE, the quota release."""
    upload_id = presign(api).json()["id"]
    store(memory_storage, MediaUpload.objects.get(pk=upload_id), png_bytes(100))
    get_app_config()
    with CaptureQueriesContext(connection) as queries:
        response = api.post(f"{UPLOADS}{upload_id}/confirm/", {}, format="json")
    assert response.status_code == 200, response.content
    assert len(queries) <= 4, [q["sql"] for q in queries]


def test_app_config_costs_no_query_when_cached() -> None:
    get_app_config()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            get_app_config()
    assert len(queries) == 0
