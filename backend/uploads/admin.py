"""MediaUpload admin: read-mostly. Provider facts are never edited by hand; deleting goes through
the same service and background job as the API's DELETE (provider first, then the row's status)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from backend.core.errors import ApplicationError
from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus

READONLY_FIELDS = (
    "id",
    "owner",
    "provider",
    "key",
    "original_filename",
    "content_type",
    "declared_size",
    "stored_size",
    "checksum_sha256",
    "status",
    "pretty_metadata",
    "event_sequencer",
    "expires_at",
    "confirmed_at",
    "claimed_at",
    "created_at",
    "updated_at",
)


@admin.register(MediaUpload)
class MediaUploadAdmin(admin.ModelAdmin):
    list_display = (
        "original_filename",
        "owner",
        "provider",
        "status",
        "declared_size",
        "created_at",
        "expires_at",
    )
    list_filter = ("provider", "status", "owner", "created_at")
    search_fields = ("=id", "key", "original_filename", "owner__username")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False  # COUNT(*) over a large table on every page is not free
    readonly_fields = READONLY_FIELDS
    fields = READONLY_FIELDS
    actions = ("delete_at_provider",)

    @admin.display(description="metadata")
    def pretty_metadata(self, obj: MediaUpload) -> str:
        text = json.dumps(obj.metadata or {}, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Rows are created by presigning an upload, never by hand.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting the row alone would orphan the object at the provider: use the action.
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not self.has_change_permission(request):
            actions.pop("delete_at_provider", None)
        return actions

    @admin.action(description="Delete at provider (through the background job)")
    def delete_at_provider(self, request: HttpRequest, queryset: QuerySet[MediaUpload]) -> None:
        queued, refused = 0, []
        for row in queryset.select_related("owner").iterator(chunk_size=200):
            try:
                # The API's path: marks `deleting` and enqueues the job on commit.
                result = services.request_delete(owner=row.owner, upload_id=row.id)
            except ApplicationError as exc:
                refused.append(f"{row.original_filename} ({row.status}): {exc.message}")
                continue
            if result.status == UploadStatus.DELETING:
                queued += 1
            else:  # expired/expiring/deleted: the object is gone or being removed already
                refused.append(f"{row.original_filename}: already {result.status}")
        if queued:
            self.message_user(
                request,
                f"{queued} upload(s) marked for deletion; the provider delete runs in the "
                "background.",
                messages.SUCCESS,
            )
        if refused:
            shown = "; ".join(refused[:10]) + (" ..." if len(refused) > 10 else "")
            self.message_user(request, f"{len(refused)} not queued: {shown}", messages.WARNING)
