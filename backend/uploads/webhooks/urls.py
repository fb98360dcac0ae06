from django.urls import URLPattern, URLResolver, path

from backend.uploads.webhooks.views import CloudinaryWebhookView, SnsWebhookView

# Provider webhooks: /api/v1/webhooks/cloudinary/ and /api/v1/webhooks/s3/
app_name = "webhooks"
urlpatterns: list[URLPattern | URLResolver] = [
    path("cloudinary/", CloudinaryWebhookView.as_view(), name="cloudinary"),
    path("s3/", SnsWebhookView.as_view(), name="s3"),
]
