from django.urls import URLPattern, URLResolver, path

from backend.uploads.webhooks.base import ProviderWebhookView
from backend.uploads.webhooks.cloudinary import CloudinaryWebhookView
from backend.uploads.webhooks.s3 import SnsWebhookView

# One endpoint per provider, /api/v1/webhooks/<provider name>/, named `webhooks:<provider name>`
# (the upload service builds per-upload notification URLs from that name).
WEBHOOK_VIEWS: tuple[type[ProviderWebhookView], ...] = (CloudinaryWebhookView, SnsWebhookView)

app_name = "webhooks"
urlpatterns: list[URLPattern | URLResolver] = [
    path(f"{view.provider}/", view.as_view(), name=view.provider) for view in WEBHOOK_VIEWS
]
