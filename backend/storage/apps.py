from django.apps import AppConfig as DjangoAppConfig


class StorageConfig(DjangoAppConfig):
    name = "backend.storage"
    label = "storage"
    verbose_name = "Cloud storage providers"

    def ready(self) -> None:
        from backend.storage import checks  # noqa: F401 - registers the system checks
