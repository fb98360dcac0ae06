"""The OpenAPI schema and the offline Swagger UI."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(django_user_model: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("schema-reader"))
    return client


@pytest.fixture
def schema(api: APIClient) -> dict[str, Any]:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_schema_lists_every_endpoint(schema) -> None:
    paths = schema["paths"]
    assert set(paths["/api/v1/uploads/"]) >= {"get", "post"}
    assert set(paths["/api/v1/uploads/{upload_id}/"]) >= {"get", "delete"}
    assert "post" in paths["/api/v1/uploads/{upload_id}/confirm/"]
    assert "get" in paths["/api/v1/config/"]
    assert "post" in paths["/api/v1/auth/token/"]
    assert schema["openapi"].startswith("3.")


def test_schema_documents_token_auth_and_errors(schema) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert any(
        s.get("type") == "apiKey" and s.get("name") == "Authorization" for s in schemes.values()
    )
    confirm = schema["paths"]["/api/v1/uploads/{upload_id}/confirm/"]["post"]
    assert {"200", "404", "409", "410", "422", "503"} <= set(confirm["responses"])
    example = confirm["responses"]["422"]["content"]["application/json"]["examples"]
    value = next(iter(example.values()))["value"]
    assert value["error"]["code"] == "verification_failed"
    create = schema["paths"]["/api/v1/uploads/"]["post"]
    assert {"201", "400", "429", "503"} <= set(create["responses"])


def test_schema_has_mobile_flow_examples(schema) -> None:
    create = schema["paths"]["/api/v1/uploads/"]["post"]
    request_examples = create["requestBody"]["content"]["application/json"]["examples"]
    assert any(e["value"].get("content_type") == "image/jpeg" for e in request_examples.values())
    response_examples = create["responses"]["201"]["content"]["application/json"]["examples"]
    providers = {e["value"]["provider"] for e in response_examples.values()}
    assert providers == {"s3", "cloudinary"}
    confirm = schema["paths"]["/api/v1/uploads/{upload_id}/confirm/"]["post"]
    confirm_examples = confirm["requestBody"]["content"]["application/json"]["examples"]
    assert any(e["value"] == {} for e in confirm_examples.values())
    assert any("signature" in e["value"] for e in confirm_examples.values())


def test_schema_command_validates_without_warnings(tmp_path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/uploads/{upload_id}/confirm/" in out.read_text()


def test_schema_and_docs_need_a_logged_in_user() -> None:
    anonymous = APIClient()
    # 403, not 401: the schema views put session authentication first, which sends no
    # WWW-Authenticate challenge (DRF then answers 403).
    assert anonymous.get("/api/schema/").status_code == 403
    assert anonymous.get("/api/docs/").status_code == 403


def test_swagger_ui_is_served_without_a_cdn(api: APIClient) -> None:
    response = api.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    assert "/api/schema/" in html


def test_schema_lists_the_multipart_and_uppy_endpoints(schema) -> None:
    paths = schema["paths"]
    assert "post" in paths["/api/v1/uploads/multipart/"]
    assert {"get", "post"} <= set(paths["/api/v1/uploads/{upload_id}/multipart/parts/"])
    assert "post" in paths["/api/v1/uploads/{upload_id}/multipart/complete/"]
    assert "delete" in paths["/api/v1/uploads/{upload_id}/multipart/"]
    assert "post" in paths["/api/v1/s3/multipart"]
    assert {"get", "delete"} <= set(paths["/api/v1/s3/multipart/{upload_id}"])
    assert "get" in paths["/api/v1/s3/multipart/{upload_id}/{part_number}"]
    assert "post" in paths["/api/v1/s3/multipart/{upload_id}/complete"]
    create = paths["/api/v1/uploads/multipart/"]["post"]
    example = create["responses"]["400"]["content"]["application/json"]["examples"]
    assert next(iter(example.values()))["value"]["error"]["code"] == "multipart_not_supported"
    sign = paths["/api/v1/s3/multipart/{upload_id}/{part_number}"]["get"]
    assert any(p["name"] == "key" and p["required"] for p in sign["parameters"])


def test_schema_documents_multipart_conflicts_and_uppy_messages(schema) -> None:
    paths = schema["paths"]
    for path, method in [
        ("/api/v1/s3/multipart/{upload_id}/{part_number}", "get"),
        ("/api/v1/s3/multipart/{upload_id}", "get"),
        ("/api/v1/uploads/{upload_id}/multipart/parts/", "post"),
        ("/api/v1/uploads/{upload_id}/multipart/parts/", "get"),
    ]:
        responses = paths[path][method]["responses"]
        assert {"409", "422"} <= set(responses), (path, method)
    sign = paths["/api/v1/s3/multipart/{upload_id}/{part_number}"]["get"]["responses"]
    example = next(iter(sign["409"]["content"]["application/json"]["examples"].values()))
    assert example["value"]["message"] == example["value"]["error"]["message"]
    assert example["value"]["error"]["code"] == "multipart_completed"
