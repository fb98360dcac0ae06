"""Shapes of the multipart endpoints: ours, and Uppy Companion's `/s3/multipart`."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from backend.uploads.api.serializers import FilenameField, StrictInputSerializer

MAX_PART_NUMBER = 10_000
MAX_ETAG_LENGTH = 256

# --- /api/v1/uploads/... ----------------------------------------------------------------------


class MultipartCreateInputSerializer(StrictInputSerializer):
    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    content_type = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=1)


class MultipartCreateOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    key = serializers.CharField()
    upload_id = serializers.CharField(help_text="The provider's multipart UploadId.")
    part_size = serializers.IntegerField(
        help_text="Bytes per part; every part but the last must be exactly this size."
    )
    part_count = serializers.IntegerField()
    expires_at = serializers.DateTimeField(
        help_text="Complete before this instant (plus the grace period), or the upload expires."
    )


class PartNumbersInputSerializer(StrictInputSerializer):
    part_numbers = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_PART_NUMBER),
        allow_empty=False,
        max_length=100,
    )


class PartInstructionsSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    method = serializers.CharField()
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField())
    expires_at = serializers.DateTimeField()


class SignedPartsOutputSerializer(serializers.Serializer):
    parts = PartInstructionsSerializer(many=True)


class UploadedPartSerializer(serializers.Serializer):
    part_number = serializers.IntegerField()
    etag = serializers.CharField()
    size = serializers.IntegerField()


class UploadedPartsOutputSerializer(serializers.Serializer):
    parts = UploadedPartSerializer(many=True)


class CompletedPartInputSerializer(serializers.Serializer):
    part_number = serializers.IntegerField(min_value=1, max_value=MAX_PART_NUMBER)
    etag = serializers.CharField(max_length=MAX_ETAG_LENGTH)


class MultipartCompleteInputSerializer(StrictInputSerializer):
    parts = CompletedPartInputSerializer(many=True, allow_empty=False)


# --- Uppy Companion shape (/api/v1/s3/multipart) -------------------------------------------------


class UppyCreateInputSerializer(serializers.Serializer):
    """What @uppy/aws-s3 sends: `{filename, type, metadata}`. Uppy does not send the size, and
    we need it (policy, quota, part size): the app puts it in the file's meta as `size`."""

    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    type = serializers.CharField(max_length=255)
    metadata = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        raw = attrs.get("metadata", {}).get("size")
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw.strip())
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise serializers.ValidationError(
                {
                    "metadata": [
                        "metadata.size must be the file's size in bytes (a whole number >= 1); "
                        "set it with uppy.setFileMeta(file.id, {size: file.size})."
                    ]
                }
            )
        attrs["size"] = raw
        return attrs


class UppyCreateOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    uploadId = serializers.CharField()


class UppyKeyQuerySerializer(serializers.Serializer):
    key = serializers.CharField(max_length=1024)


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
    PartNumber = serializers.IntegerField(min_value=1, max_value=MAX_PART_NUMBER)
    ETag = serializers.CharField(max_length=MAX_ETAG_LENGTH)


class UppyCompleteInputSerializer(serializers.Serializer):
    parts = UppyCompletedPartSerializer(many=True, allow_empty=False)


class UppyCompleteOutputSerializer(serializers.Serializer):
    location = serializers.CharField(help_text="The object's (unsigned) URL at the provider.")
    key = serializers.CharField()
    id = serializers.UUIDField(help_text="Our upload id: GET /api/v1/uploads/{id}/ for details.")
