from django.apps import AppConfig as DjangoAppConfig


class DemoConfig(DjangoAppConfig):
    name = "backend.demo"
    label = "demo"
    verbose_name = "Upload widget demo"
