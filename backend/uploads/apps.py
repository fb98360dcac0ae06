from django.apps import AppConfig as DjangoAppConfig


class UploadsConfig(DjangoAppConfig):
    name = "backend.uploads"
    label = "uploads"
    verbose_name = "Media uploads"
