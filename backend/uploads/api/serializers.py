"""Input and output shapes of the REST API (v1). Validation of meaning lives in the service."""

from __future__ import annotations

from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers

from backend.uploads.models import MediaUpload, UploadStatus


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them (a typo must not be silently ignored)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        initial = self.initial_data if isinstance(self.initial_data, dict) else {}
        unknown = sorted(set(initial) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: [f"Unknown field. Allowed: {', '.join(self.fields)}."] for name in unknown}
            )
        return attrs


class FilenameField(serializers.CharField):
    """Takes hostile names as they come (NUL included); the service sanitises them, so a
    client with an odd filename still gets an upload under a safe display name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


class UploadCreateInputSerializer(StrictInputSerializer):
    filename = FilenameField(max_length=10_000, trim_whitespace=False)
    content_type = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=1)
    checksum_sha256 = serializers.CharField(required=False, allow_blank=True, max_length=64)


class UploadInstructionsSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["POST", "PUT"])
    url = serializers.URLField()
    # DRF's metaclass moves declared fields off the class, so this does not shadow
    # Serializer.fields at run time; the stubs cannot know that.
    fields = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]
    headers = serializers.DictField(child=serializers.CharField())
    expires_at = serializers.DateTimeField()


class UploadCreateOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=UploadStatus.choices)
    provider = serializers.CharField()
    key = serializers.CharField()
    filename = serializers.CharField(source="original_filename")
    content_type = serializers.CharField()
    size = serializers.IntegerField(source="declared_size")
    expires_at = serializers.DateTimeField()
    upload = UploadInstructionsSerializer()


class UploadOutputSerializer(serializers.ModelSerializer):
    filename = serializers.CharField(source="original_filename")
    size = serializers.IntegerField(source="declared_size")
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
        from backend.uploads.services import download_url_for

        return download_url_for(obj)


class UploadListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=UploadStatus.choices, required=False)
    page = serializers.IntegerField(min_value=1, required=False)


class ConfigOutputSerializer(serializers.Serializer):
    provider = serializers.CharField(allow_null=True)
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
