"""drf-spectacular postprocessing: what every operation may answer, and the upload policy in
force, written into the schema so that it describes the API exactly (checked by schemathesis,
tests/test_openapi_schemathesis.py).

- Every authenticated operation documents 401 (no or bad credentials) and 403 (a session
  request without its CSRF proof); every operation 429 (rate limits); every operation with a
  path parameter 404. The error body is this API's error shape (`UppyError` under /api/v1/s3/).
- Closed request bodies (`additionalProperties: false`) where unknown fields are refused, and
  `minItems` where a list may not be empty (DRF's serializers do not tell drf-spectacular).
- The upload policy of AppConfig (allowed content types, largest size) is the schema's `enum`
  and `maximum` of the request fields that carry them, as served at the time of the request:
  an admin changing the policy changes the schema too. Without a database (building the
  schema offline) the policy is left out.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError

from backend.core.config import get_app_config

#: (component, property) pairs holding a content type, and those holding a size in bytes.
_TYPE_FIELDS = {
    ("UploadCreateInputRequest", "content_type"),
    ("MultipartCreateInputRequest", "content_type"),
    ("UppyCreateInputRequest", "type"),
    ("UppyPresignInputRequest", "type"),
}
_SIZE_FIELDS = {
    ("UploadCreateInputRequest", "size"),
    ("MultipartCreateInputRequest", "size"),
    ("UppyPresignInputRequest", "size"),
}
#: Request bodies whose serializer refuses unknown fields (StrictInputSerializer).
_CLOSED = {
    "UploadCreateInputRequest",
    "MultipartCreateInputRequest",
    "PartNumbersInputRequest",
    "MultipartCompleteInputRequest",
}
#: Lists that may not be empty (DRF's `allow_empty=False` on a nested list).
_NON_EMPTY = {("MultipartCompleteInputRequest", "parts"), ("UppyCompleteInputRequest", "parts")}
_DESCRIPTIONS = {
    "401": "Missing or invalid credentials (send `Authorization: Token <key>`).",
    "403": "Signed in with a session, but without the CSRF proof this endpoint needs.",
    "404": "No such resource for this user.",
    "429": "Too many requests; retry after `Retry-After` seconds.",
}


def _error_response(path: str, status: str) -> dict[str, Any]:
    component = "UppyError" if path.startswith("/api/v1/s3/") else "Error"
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
    }


#: DRF's CharField refuses NUL characters (filenames excepted: they are sanitised instead).
NO_NUL = "^[^\\x00]*$"


def _no_nul(prop: str, field: dict[str, Any]) -> None:
    if field.get("type") == "string" and prop != "filename" and "enum" not in field:
        field.setdefault("pattern", NO_NUL)


def _shapes(result: dict[str, Any]) -> None:
    schemas = result.get("components", {}).get("schemas", {})
    for name, component in schemas.items():
        if name.endswith("Request"):
            for prop, field in component.get("properties", {}).items():
                _no_nul(prop, field)
                _no_nul(prop, field.get("items", {}))
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                _no_nul(param.get("name", ""), param.get("schema", {}))
    for component in _CLOSED:
        if component in schemas:
            schemas[component]["additionalProperties"] = False
    for component, prop in _NON_EMPTY:
        field = schemas.get(component, {}).get("properties", {}).get(prop)
        if field is not None:
            field["minItems"] = 1


def _policy(result: dict[str, Any]) -> None:
    try:
        config = get_app_config()
    except DatabaseError:
        return
    schemas = result.get("components", {}).get("schemas", {})
    for component, prop in _TYPE_FIELDS:
        field = schemas.get(component, {}).get("properties", {}).get(prop)
        if field is not None:
            field["enum"] = list(config.allowed_content_types)
    for component, prop in _SIZE_FIELDS:
        field = schemas.get(component, {}).get("properties", {}).get(prop)
        if field is not None:
            field["maximum"] = config.max_upload_size
    params = result.get("paths", {}).get("/api/v1/s3/params", {}).get("get", {})
    for param in params.get("parameters", []):
        if param.get("name") == "type":
            param["schema"]["enum"] = list(config.allowed_content_types)
        if param.get("name") == "metadata[size]":
            param["schema"]["maximum"] = config.max_upload_size


def complete_responses(result: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
    for path, item in result.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            wanted = ["429"]
            if operation.get("security") != [{}] and operation.get("security") is not None:
                wanted += ["401", "403"]
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                wanted.append("404")
            for status in wanted:
                responses.setdefault(status, _error_response(path, status))
    _shapes(result)
    _policy(result)
    return result
