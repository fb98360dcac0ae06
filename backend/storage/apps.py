from django.apps import AppConfig as DjangoAppConfig


class StorageConfig(DjangoAppConfig):
    name = "backend.storage"
    label = "storage"
    verbose_name = "Cloud storage providers"
