from django.apps import AppConfig as DjangoAppConfig


class StorageConfig(DjangoAppConfig):
    name = "backend.storage"
    label = "storage"
    verbose_name = "Cloud storage providers"

    def ready(self) -> None:
        # Imported here, not at module level: Django imports apps.py before the models exist.
        from backend.core import health, provider_choices
        from backend.storage import checks, registry  # noqa: F401 - checks registers itself
        from backend.storage.health import provider_breakers

        provider_choices.register(registry.choices(), default=registry.DEFAULT_PROVIDER)
        # Reported by /readyz, never failing it: every instance shares the breaker state.
        health.register("providers", provider_breakers, informational=True)
