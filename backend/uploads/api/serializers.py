"""Input and output shapes of the REST API (v1). Validation of meaning lives in the service."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backend.uploads.models import MediaUpload, UploadStatus
from backend.uploads.selectors import download_url_for


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them (a typo must not be silently ignored).

    Its fields are shallow copies of the declared ones (DRF deep-copies them for every instance,
    re-running each field's constructor): each instance still binds its own field objects, and
    what they share (validators, error messages) is only read. A field with a child or nested
    fields is deep-copied as DRF does, since binding would reach the shared child."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = {}
        for name, field in self._declared_fields.items():
            nested = hasattr(field, "child") or isinstance(field, serializers.BaseSerializer)
            fields[name] = copy.deepcopy(field) if nested else copy.copy(field)
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        initial = self.initial_data if isinstance(self.initial_data, dict) else {}
        unknown = sorted(set(initial) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: [f"Unknown field. Allowed: {', '.join(self.fields)}."] for name in unknown}
            )
        return attrs


class StrictCharField(serializers.CharField):
    """A JSON string as the schema says: a number or a boolean is refused, not converted, and
    whitespace is kept (the service decides what it means)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer as the schema says: a string, float or boolean is refused."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class FilenameField(StrictCharField):
    """Takes hostile names as they come (NUL included); the service sanitises them, so a
    client with an odd filename still gets an upload under a safe display name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


@extend_schema_field(
    {"type": "string", "pattern": "^([0-9a-fA-F]{64})?$", "description": "Hex SHA-256."}
)
class ChecksumField(serializers.CharField):
    """A SHA-256 hex digest (checked by the service, which names the error)."""


class UploadCreateInputSerializer(StrictInputSerializer):
    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    content_type = StrictCharField(max_length=255)
    size = StrictIntegerField(min_value=1)
    checksum_sha256 = ChecksumField(required=False, allow_blank=True, max_length=64)

    @classmethod
    def validated(cls, data: Any) -> dict[str, Any]:
        """`validated_data` of `data`, or the serializer's ValidationError. A body that is
        plainly valid (the declared fields with exactly the JSON types the fields take, within
        their lengths) is taken as is: what the serializer would return, without building it
        (the presign path's hottest input; tests/uploads/test_create_input.py compares the two).
        Anything else goes through the serializer, so every error answer is DRF's own."""
        plain = _plainly_valid_create_input(data)
        if plain is not None:
            return plain
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


# The fast path's bounds are the declared fields' own, so the two cannot drift apart.
_CREATE_DECLARED = UploadCreateInputSerializer._declared_fields
_CREATE_FIELDS = frozenset(_CREATE_DECLARED)


def _declared_bound(name: str, bound: str) -> int:
    """A declared field's `max_length` / `min_value`. Import fails if one is dropped, rather
    than the fast path guessing a bound the serializer no longer has."""
    value = getattr(_CREATE_DECLARED[name], bound)
    if not isinstance(value, int):  # pragma: no cover - a declaration changed
        raise RuntimeError(f"UploadCreateInputSerializer.{name} has no {bound}")
    return value


_MAX_FILENAME = _declared_bound("filename", "max_length")
_MAX_CONTENT_TYPE = _declared_bound("content_type", "max_length")
_MAX_CHECKSUM = _declared_bound("checksum_sha256", "max_length")
_MIN_SIZE = _declared_bound("size", "min_value")


def _plainly_valid_create_input(data: Any) -> dict[str, Any] | None:
    """The create body's validated data when no field could fail or be converted, else None.
    Mirrors UploadCreateInputSerializer's fields, with their own bounds: filename a non-blank
    str within its max_length (NUL allowed); content_type a non-blank str within its max_length
    without NUL; size an int (not a bool) of at least its min_value; checksum_sha256 absent, or
    a str within its max_length without NUL or surrounding whitespace (its field trims). No
    string with a lone surrogate (every DRF CharField refuses those)."""
    if type(data) is not dict or not _CREATE_FIELDS.issuperset(data):
        return None
    filename, content_type, size = data.get("filename"), data.get("content_type"), data.get("size")
    if type(filename) is not str or not filename or len(filename) > _MAX_FILENAME:
        return None
    if type(content_type) is not str or not content_type or len(content_type) > _MAX_CONTENT_TYPE:
        return None
    if "\x00" in content_type or type(size) is not int or size < _MIN_SIZE:
        return None
    out: dict[str, Any] = {"filename": filename, "content_type": content_type, "size": size}
    texts = [filename, content_type]
    if "checksum_sha256" in data:
        checksum = data["checksum_sha256"]
        if type(checksum) is not str or len(checksum) > _MAX_CHECKSUM or "\x00" in checksum:
            return None
        if checksum != checksum.strip():
            return None
        out["checksum_sha256"] = checksum
        texts.append(checksum)
    try:
        for text in texts:
            text.encode("utf-8")  # refuses lone surrogates, at C speed
    except UnicodeEncodeError:
        return None
    return out


class CapabilitiesSerializer(serializers.Serializer):
    max_single_upload = serializers.IntegerField(
        help_text="Largest file one upload request (POST /api/v1/uploads/) may carry, in bytes."
    )
    large_uploads = serializers.ChoiceField(
        choices=["multipart", "chunked"],
        allow_null=True,
        help_text="How larger files go up: `multipart` (POST /api/v1/uploads/multipart/), "
        "`chunked` (POST /api/v1/uploads/ answers `upload.protocol` `chunked` with the chunk "
        "instructions), or null when the provider has no protocol for them.",
    )
    min_part_size = serializers.IntegerField(
        allow_null=True, help_text="Smallest part/chunk but the last, in bytes."
    )
    max_part_size = serializers.IntegerField(
        allow_null=True, help_text="Largest part/chunk, in bytes."
    )
    max_parts = serializers.IntegerField(allow_null=True, help_text="Most parts per upload.")
    part_size = serializers.IntegerField(
        allow_null=True,
        help_text="The chunk size the server chooses for chunked uploads (null otherwise).",
    )
    verifies_checksum = serializers.BooleanField(
        help_text="Whether a declared `checksum_sha256` is enforced/verified against the stored "
        "bytes; where false, create refuses one (400 `checksum_not_supported`)."
    )
    max_file_size = serializers.IntegerField(
        allow_null=True,
        help_text="The largest file the provider takes (its protocol and account limit); null: "
        "no bound of its own. The upload policy's `max_upload_size` is at most this.",
    )


class ChunkedInstructionsSerializer(serializers.Serializer):
    chunk_size = serializers.IntegerField(
        help_text="Bytes per chunk: every chunk but the last has exactly this many."
    )
    chunk_count = serializers.IntegerField(help_text="How many chunks the file makes.")
    total_size = serializers.IntegerField(help_text="The file's size (the declared `size`).")
    content_range = serializers.CharField(
        help_text="The Content-Range header of each chunk: `bytes {start}-{end}/{total}`, "
        "`start` and `end` the chunk's first and last byte offsets (inclusive)."
    )


class UploadInstructionsSerializer(serializers.Serializer):
    protocol = serializers.ChoiceField(
        choices=["single", "chunked"],
        help_text="`single`: one request carries the file. `chunked`: send the file as one "
        "request per chunk (same `fields` and `headers` on each, the chunk as `file`, plus its "
        "Content-Range), in order, the last chunk after every other was answered; the last "
        "chunk's JSON answer is what confirm takes.",
    )
    method = serializers.ChoiceField(choices=["POST", "PUT"])
    url = serializers.URLField()
    # DRF's metaclass moves declared fields off the class, so this does not shadow
    # Serializer.fields at run time; the stubs cannot know that.
    fields = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]
    headers = serializers.DictField(child=serializers.CharField())
    expires_at = serializers.DateTimeField()
    chunked = ChunkedInstructionsSerializer(
        allow_null=True, help_text="How to cut the file (protocol `chunked`); null otherwise."
    )


class UploadCreateOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=UploadStatus.choices)
    provider = serializers.CharField()
    key = serializers.CharField()
    filename = serializers.CharField(source="original_filename")
    content_type = serializers.CharField()
    size = serializers.IntegerField(source="declared_size", allow_null=True)
    expires_at = serializers.DateTimeField()
    upload = UploadInstructionsSerializer()
    capabilities = CapabilitiesSerializer(
        help_text="What the active provider can do (as in GET /api/v1/config/)."
    )


class UploadOutputSerializer(serializers.ModelSerializer):
    filename = serializers.CharField(source="original_filename")
    size = serializers.IntegerField(
        source="declared_size",
        allow_null=True,
        help_text="Bytes: as declared, or (declared by no one, e.g. Uppy) null until the "
        "provider's size is recorded at confirm/complete.",
    )
    url = serializers.SerializerMethodField(
        help_text="Short-lived download URL (uploaded objects only; expires in minutes)."
    )

    class Meta:
        model = MediaUpload
        fields = [
            "id",
            "status",
            "provider",
            "key",
            "filename",
            "content_type",
            "size",
            "metadata",
            "url",
            "expires_at",
            "created_at",
            "confirmed_at",
        ]
        read_only_fields = fields

    def get_url(self, obj: MediaUpload) -> str | None:
        return download_url_for(obj)


class QuerySerializer(serializers.Serializer):
    """Query parameters. DRF takes `?name=` (blank) for an omitted optional parameter; here a
    parameter that is sent must be valid, as the schema says."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        initial = self.initial_data if hasattr(self.initial_data, "get") else {}
        blank = [name for name in list(self.fields) if initial.get(name, None) == ""]
        if blank:
            raise serializers.ValidationError({name: ["May not be blank."] for name in blank})
        return attrs


class UploadListQuerySerializer(QuerySerializer):
    status = serializers.ChoiceField(
        choices=UploadStatus.choices, required=False, help_text="Only uploads in this status."
    )
    page = serializers.IntegerField(min_value=1, required=False, help_text="Page number (1-).")


class UploadPageSerializer(serializers.Serializer):
    """One page of `GET /api/v1/uploads/` (newest first)."""

    count = serializers.IntegerField(help_text="Uploads matching, over all pages.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null.")
    results = UploadOutputSerializer(many=True)


class ConfigOutputSerializer(serializers.Serializer):
    provider = serializers.CharField(allow_null=True)
    capabilities = CapabilitiesSerializer(
        allow_null=True,
        help_text="What the active provider can do (null when no provider is configured).",
    )
    max_upload_size = serializers.IntegerField()
    allowed_content_types = serializers.ListField(child=serializers.CharField())
    presign_expiry_seconds = serializers.IntegerField()


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class UppyErrorSerializer(serializers.Serializer):
    """Error body of the Companion-shaped /api/v1/s3/* endpoints: `message` is what Uppy shows."""

    message = serializers.CharField(help_text="The same text as `error.message`.")
    error = ErrorDetailSerializer()


class TokenInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()


# The create answer built directly. UploadCreateOutputSerializer stays the schema; building it
# per request deep-copies its nested fields (about a millisecond of a presign's CPU under load,
# docs/performance.md). tests/uploads/test_create_answer.py keeps the two equal.
_DATETIME = serializers.DateTimeField()


def _api_datetime(value: Any) -> Any:
    """`_DATETIME.to_representation(value)` for an aware datetime, without the field's per-call
    lookups (DRF settings, the active time zone through asgiref's Local, a failed `hasattr`):
    ISO 8601 in TIME_ZONE, `Z` for UTC. This project never activates another time zone, so the
    current one is TIME_ZONE's. Anything else goes to the field itself."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        return _DATETIME.to_representation(value)
    text = value.astimezone(timezone.get_default_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_CAPABILITY_FIELDS = tuple(CapabilitiesSerializer._declared_fields)
_CHUNKED_FIELDS = tuple(ChunkedInstructionsSerializer._declared_fields)


def render_create_answer(
    row: MediaUpload, upload: dict[str, Any], capabilities: dict[str, Any]
) -> dict[str, Any]:
    """What UploadCreateOutputSerializer renders for (row, upload instructions, capabilities)."""
    chunked = upload["chunked"]
    return {
        "id": str(row.id),
        "status": str(row.status),
        "provider": str(row.provider),
        "key": str(row.key),
        "filename": str(row.original_filename),
        "content_type": str(row.content_type),
        "size": None if row.declared_size is None else int(row.declared_size),
        "expires_at": _api_datetime(row.expires_at),
        "upload": {
            "protocol": upload["protocol"],
            "method": upload["method"],
            "url": str(upload["url"]),
            "fields": {str(k): str(v) for k, v in upload["fields"].items()},
            "headers": {str(k): str(v) for k, v in upload["headers"].items()},
            "expires_at": _api_datetime(upload["expires_at"]),
            "chunked": None if chunked is None else {k: chunked[k] for k in _CHUNKED_FIELDS},
        },
        "capabilities": {name: capabilities[name] for name in _CAPABILITY_FIELDS},
    }
