"""Admin for the `AppConfig` singleton: switch the storage provider safely at runtime.

It lives with the storage layer (the model is core's): the form and the status block are about
providers, and core sits below storage, so core cannot show them.

Switching is refused (form error listing the missing variables) when the target provider is not
configured. Saving goes through `switching.activate_provider` like the commands: it clears the
shared AppConfig cache, so every process picks the new provider on its next request, and logs the
change with the user who made it.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from backend.core.models import AppConfig
from backend.core.sizes import human_size
from backend.storage import registry
from backend.storage.config_service import CloudStorageConfigService, ProviderStatus
from backend.storage.switching import activate_provider

# RFC 6838 type/subtype (lower-cased); parameters such as "; charset=" are not allowed here.
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class AppConfigForm(forms.ModelForm):
    class Meta:
        model = AppConfig
        fields = [
            "provider",
            "max_upload_size",
            "allowed_content_types",
            "presign_expiry_seconds",
            "max_pending_uploads_per_user",
            "max_bytes_per_user_per_day",
        ]

    def clean_provider(self) -> str:
        provider = str(self.cleaned_data["provider"])
        unchanged = self.instance.pk is not None and self.instance.provider == provider
        # Editing limits while the current provider is broken stays possible; switching
        # *to* a provider that cannot work is what we refuse.
        if not unchanged:
            problems = CloudStorageConfigService.problems(provider)
            if problems:
                raise forms.ValidationError(
                    [f"Cannot switch to {provider}: its configuration is incomplete.", *problems],
                    code="provider_not_configured",
                )
        return provider

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        provider = registry.get(str(cleaned.get("provider") or ""))
        max_size = cleaned.get("max_upload_size")
        limit = provider.max_upload_size if provider else None
        if provider and limit and max_size and max_size > limit:
            larger = [
                p.service.display_name
                for p in registry.PROVIDERS
                if (p.max_upload_size or max_size) >= max_size
            ]
            self.add_error(
                "max_upload_size",
                f"{provider.service.display_name} accepts at most {limit} bytes "
                f"({_upload_limit(provider)}); lower the limit"
                + (f" or use {' or '.join(larger)} for larger files." if larger else "."),
            )
        return cleaned

    def clean_allowed_content_types(self) -> list[str]:
        value = self.cleaned_data.get("allowed_content_types")
        if not isinstance(value, list) or not value:
            raise forms.ValidationError(
                'Enter a non-empty JSON list of MIME types, e.g. ["image/png", "application/pdf"].'
            )
        cleaned: list[str] = []
        bad: list[str] = []
        for item in value:
            text = item.strip().lower() if isinstance(item, str) else ""
            if _MIME_RE.match(text):
                if text not in cleaned:
                    cleaned.append(text)
            else:
                bad.append(repr(item))
        if bad:
            raise forms.ValidationError(
                f"Not a type/subtype MIME type: {', '.join(bad)}. Use e.g. image/jpeg."
            )
        return cleaned


def _upload_limit(provider: registry.StorageProvider) -> str:
    """E.g. "100 MB in one upload request", from the provider's capabilities."""
    caps = provider.capabilities
    text = f"{_size(caps.max_single_upload)} in one upload request"
    if caps.large_uploads and caps.max_parts and caps.max_part_size:
        text += (
            f", more with {caps.large_uploads} uploads ({caps.max_parts} parts of at most "
            f"{_size(caps.max_part_size)})"
        )
    elif caps.large_uploads:
        text += f", more with {caps.large_uploads} uploads"
        if provider.account_limit():
            text += f" up to the account limit of {_size(provider.max_upload_size or 0)}"
    return text


def _size(size: int) -> str:
    return human_size(size)  # the unit system of the widget, the API and the demo page


def _render_status(status: ProviderStatus) -> SafeString:
    if status.configured:
        state = mark_safe('<strong style="color:#2e7d32">configured</strong>')
    else:
        state = mark_safe('<strong style="color:#c62828">not configured</strong>')
    probe = mark_safe("")
    if status.probe is not None:
        if status.probe.ok:
            probe = format_html(" &middot; live check ok ({} ms)", f"{status.probe.latency_ms:.0f}")
        else:
            probe = format_html(" &middot; live check FAILED: {}", status.probe.error or "")
    provider = registry.get(status.provider)
    limit = [f"largest upload: {_upload_limit(provider)}"] if provider else []
    lines = status.problems + status.notes + limit
    items = format_html_join("", "<li>{}</li>", ((line,) for line in lines))
    return format_html(
        "<p><strong>{}</strong>: {}{}</p><ul>{}</ul>", status.provider, state, probe, items
    )


@admin.register(AppConfig)
class AppConfigAdmin(admin.ModelAdmin):
    form = AppConfigForm
    readonly_fields = ("provider_status", "updated_at", "updated_by")
    fieldsets = (
        ("Storage provider", {"fields": ("provider", "provider_status")}),
        (
            "Upload policy",
            {
                "fields": (
                    "max_upload_size",
                    "allowed_content_types",
                    "presign_expiry_seconds",
                    "max_pending_uploads_per_user",
                    "max_bytes_per_user_per_day",
                )
            },
        ),
        ("History", {"fields": ("updated_at", "updated_by")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not AppConfig.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # One row only: go straight to it.
        row = AppConfig.load()
        return HttpResponseRedirect(reverse("admin:core_appconfig_change", args=[row.pk]))

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "live-check/",
                self.admin_site.admin_view(self.live_check_view),
                name="core_appconfig_live_check",
            )
        ]
        return custom + super().get_urls()

    def live_check_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        for status in CloudStorageConfigService.status_report(live=True):
            level = messages.SUCCESS if status.usable else messages.ERROR
            if not status.configured:
                text = f"{status.provider}: not configured ({'; '.join(status.problems)})"
            elif status.probe is not None and status.probe.ok:
                text = f"{status.provider}: live check ok ({status.probe.latency_ms:.0f} ms)"
            else:
                error = status.probe.error if status.probe else "no probe"
                text = f"{status.provider}: live check failed: {error}"
            self.message_user(request, text, level)
        row = AppConfig.load()
        return HttpResponseRedirect(reverse("admin:core_appconfig_change", args=[row.pk]))

    @admin.display(description="Provider status")
    def provider_status(self, obj: AppConfig) -> SafeString:
        report = CloudStorageConfigService.status_report(live=False)
        body = format_html_join("", "{}", ((_render_status(s),) for s in report))
        return format_html(
            '{}<p><a class="button" href="{}">Run live check</a></p>',
            body,
            reverse("admin:core_appconfig_live_check"),
        )

    def save_model(self, request: HttpRequest, obj: AppConfig, form: Any, change: bool) -> None:
        # The one switching path (validated again under the row lock, logged with the user).
        limits = {
            name: getattr(obj, name) for name in AppConfigForm.Meta.fields if name != "provider"
        }
        activate_provider(
            obj.provider,
            actor=request.user.get_username(),
            user=request.user if request.user.is_authenticated else None,
            changes=limits,
        )
        obj.pk = AppConfig.SINGLETON_PK
        obj.refresh_from_db()
