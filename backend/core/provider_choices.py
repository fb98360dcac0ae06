"""The storage provider names `AppConfig.provider` and `MediaUpload.provider` accept.

The names are the storage layer's (`backend.storage.registry`), and core sits below storage
(core <- storage <- uploads <- edges): core must not import it. So the storage app hands its
names in when Django starts (`StorageConfig.ready`), and the model fields read them through the
callables below. Django evaluates callable `choices` and `default` lazily (validation, forms, a
new row: all after every app is ready), and migrations record the callables rather than the
names, so adding a provider needs no migration.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured

_choices: tuple[tuple[str, str], ...] = ()
_default = ""


def register(choices: Sequence[tuple[str, str]], *, default: str) -> None:
    global _choices, _default
    _choices, _default = tuple(choices), default


def provider_choices() -> list[tuple[str, str]]:
    return list(_choices)


def default_provider() -> str:
    if not _default:
        raise ImproperlyConfigured(
            "No storage provider is registered: add backend.storage to INSTALLED_APPS."
        )
    return _default
