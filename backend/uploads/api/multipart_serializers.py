"""Shapes of the multipart endpoints under /api/v1/uploads/ (Uppy's: companion_serializers)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from backend.uploads.api.serializers import (
    CapabilitiesSerializer,
    FilenameField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
)

MAX_PART_NUMBER = 10_000
MAX_ETAG_LENGTH = 256

# --- /api/v1/uploads/... ----------------------------------------------------------------------


class MultipartCreateInputSerializer(StrictInputSerializer):
    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    content_type = StrictCharField(max_length=255)
    size = StrictIntegerField(min_value=1)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        initial = self.initial_data if isinstance(self.initial_data, dict) else {}
        if "checksum_sha256" in initial:
            # Refused rather than recorded unverified: S3 computes SHA-256 per part only
            # (a composite checksum), never over a whole multipart object.
            raise serializers.ValidationError(
                {
                    "checksum_sha256": [
                        "Not accepted for multipart uploads: the provider cannot verify a "
                        "SHA-256 of the whole file. Leave it out, or upload the file in one "
                        "request (POST /api/v1/uploads/, up to capabilities.max_single_upload "
                        "bytes), where it is enforced."
                    ]
                }
            )
        return super().validate(attrs)


class MultipartCreateOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    protocol = serializers.ChoiceField(
        choices=["multipart"],
        help_text="Always `multipart`: parts signed one by one, then complete.",
    )
    key = serializers.CharField()
    upload_id = serializers.CharField(help_text="The provider's multipart UploadId.")
    part_size = serializers.IntegerField(
        help_text="Bytes per part; every part but the last must be exactly this size."
    )
    part_count = serializers.IntegerField()
    expires_at = serializers.DateTimeField(
        help_text="Complete before this instant (plus the grace period), or the upload expires."
    )
    capabilities = CapabilitiesSerializer(
        help_text="What the active provider can do (as in GET /api/v1/config/)."
    )


class PartNumbersInputSerializer(StrictInputSerializer):
    part_numbers = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=MAX_PART_NUMBER),
        allow_empty=False,
        min_length=1,
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
    part_number = StrictIntegerField(min_value=1, max_value=MAX_PART_NUMBER)
    etag = StrictCharField(max_length=MAX_ETAG_LENGTH)


class MultipartCompleteInputSerializer(StrictInputSerializer):
    parts = CompletedPartInputSerializer(many=True, allow_empty=False)
