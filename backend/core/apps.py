from django.apps import AppConfig as DjangoAppConfig


class CoreConfig(DjangoAppConfig):
    name = "backend.core"
    label = "core"
    verbose_name = "Upload broker settings"
