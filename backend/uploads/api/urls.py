from django.urls import URLPattern, URLResolver

# Routes of the REST API (v1), the OpenAPI schema and Swagger UI.
urlpatterns: list[URLPattern | URLResolver] = []
