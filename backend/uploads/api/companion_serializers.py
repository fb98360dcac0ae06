"""Shapes of the Companion-compatible `/api/v1/s3/*` endpoints, as @uppy/aws-s3 6.x and 5.x
send and read them (docs/uppy.md, "The contract")."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from backend.uploads.api.multipart_serializers import MAX_ETAG_LENGTH, MAX_PART_NUMBER
from backend.uploads.api.serializers import (
    FilenameField,
    QuerySerializer,
    StrictCharField,
    StrictIntegerField,
    UploadOutputSerializer,
)

MAX_KEY_LENGTH = 1024


def size_from_metadata(metadata: object) -> int | None:
    """`metadata.size` if the page put the file's size into Uppy's meta, else None (Uppy does
    not send the size itself). Present but not a whole number >= 1 is an error."""
    if not isinstance(metadata, dict) or metadata.get("size") in (None, ""):
        return None
    raw = metadata["size"]
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise serializers.ValidationError(
            {"metadata": ["metadata.size, when sent, must be the file's size in bytes (>= 1)."]}
        )
    return raw


class UppyParamsQuerySerializer(QuerySerializer):
    """`GET /s3/params?filename=&type=&metadata[name]=...` (6.x and 5.x)."""

    # 255 (a file system's limit) keeps the URL within what HTTP servers take (414 beyond).
    filename = FilenameField(max_length=255, help_text="The file's name.")
    type = serializers.CharField(max_length=255, help_text="The file's MIME type.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        raw = self.initial_data.get("metadata[size]") if hasattr(self.initial_data, "get") else None
        attrs["size"] = size_from_metadata({"size": raw})
        return attrs


class UppyParamsOutputSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["POST", "PUT"])
    url = serializers.URLField()
    # DRF's metaclass moves declared fields off the class (see UploadInstructionsSerializer).
    fields = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]
    headers = serializers.DictField(child=serializers.CharField())
    expires = serializers.IntegerField(help_text="Seconds the instructions stay valid.")


class UppyCreateInputSerializer(serializers.Serializer):
    """What @uppy/aws-s3 sends to `POST /s3/multipart`: `{filename, type, metadata}`."""

    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    type = StrictCharField(max_length=255)
    metadata = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["size"] = size_from_metadata(attrs.get("metadata"))
        return attrs


class UppyCreateOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    uploadId = serializers.CharField()


class UppyKeyQuerySerializer(QuerySerializer):
    key = serializers.CharField(max_length=MAX_KEY_LENGTH, help_text="The object key.")


class UppySignedPartSerializer(serializers.Serializer):
    method = serializers.CharField()
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField())
    expires = serializers.IntegerField(help_text="Seconds the URL stays valid.")


class UppyPartSerializer(serializers.Serializer):
    PartNumber = serializers.IntegerField()
    Size = serializers.IntegerField()
    ETag = serializers.CharField()


class UppyCompletedPartSerializer(serializers.Serializer):
    PartNumber = StrictIntegerField(min_value=1, max_value=MAX_PART_NUMBER)
    ETag = StrictCharField(max_length=MAX_ETAG_LENGTH)


class UppyCompleteInputSerializer(serializers.Serializer):
    parts = UppyCompletedPartSerializer(many=True, allow_empty=False)


class UppyCompleteOutputSerializer(serializers.Serializer):
    location = serializers.URLField(
        help_text="This upload in this API (GET it for details and a download URL); Uppy "
        "reports it as the upload's `uploadURL`."
    )
    key = serializers.CharField()
    id = serializers.UUIDField(help_text="Our upload id (Uppy 5 keeps it; 6 keeps only key).")


class UppyConfirmInputSerializer(serializers.Serializer):
    key = StrictCharField(max_length=MAX_KEY_LENGTH, help_text="`response.body.key`.")


class UppyConfirmOutputSerializer(UploadOutputSerializer):
    pass


class UppyPresignInputSerializer(serializers.Serializer):
    """One S3 request @uppy/aws-s3 6.x wants signed (its `signRequest(request)` argument), plus
    what the page adds for a new upload: the file's name, type and size."""

    method = serializers.ChoiceField(
        choices=["GET", "PUT", "POST", "DELETE"], help_text="The S3 request's HTTP method."
    )
    key = StrictCharField(max_length=MAX_KEY_LENGTH)
    uploadId = StrictCharField(max_length=1024, required=False)
    partNumber = StrictIntegerField(min_value=1, max_value=MAX_PART_NUMBER, required=False)
    contentType = StrictCharField(max_length=255, required=False)
    expiresIn = StrictIntegerField(min_value=1, required=False)
    filename = FilenameField(max_length=10_000, trim_whitespace=False, required=False)
    type = StrictCharField(max_length=255, required=False)
    size = StrictIntegerField(min_value=1, required=False)


class UppyPresignOutputSerializer(serializers.Serializer):
    """Uppy's `PresignedResponse`."""

    url = serializers.URLField()
    key = serializers.CharField(required=False, help_text="The server's key for a new upload.")
    headers = serializers.DictField(child=serializers.CharField(), required=False)
    # See UppyParamsOutputSerializer.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(), required=False, help_text="An S3 POST form (PutObject)."
    )
