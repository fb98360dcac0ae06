from django.urls import URLPattern, URLResolver

# Provider webhooks: /api/v1/webhooks/cloudinary/ and /api/v1/webhooks/s3/
urlpatterns: list[URLPattern | URLResolver] = []
