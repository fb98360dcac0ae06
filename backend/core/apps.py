from django.apps import AppConfig as DjangoAppConfig


class CoreConfig(DjangoAppConfig):
    name = "backend.core"
    label = "core"
    verbose_name = "Upload broker settings"

    def ready(self) -> None:
        # Connects the AppConfig cache invalidation (post_save); imported here because it
        # imports the models, which do not exist yet when Django imports apps.py.
        from backend.core import config  # noqa: F401
