"""`CloudStorageConfigService`: is a provider configured, what is missing or malformed, is it up.

Used by the AppConfig admin (refuse switching to an incomplete provider), provider switching and
the `setup_cloud_storage` command (status report, live probe). The checks themselves are each
provider's own (`StorageProvider.check_settings` in the registry); this service names variables,
never their values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.storage import registry
from backend.storage.base import ProbeResult
from backend.storage.factory import CloudStorageFactory
from backend.storage.provider_settings import SettingsCheck


@dataclass(frozen=True)
class ProviderStatus:
    provider: str
    configured: bool
    problems: list[str]
    probe: ProbeResult | None = None
    #: Facts worth showing that are not problems (e.g. "using the default credential chain").
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Configured, and the live probe (when one ran) succeeded."""
        return self.configured and (self.probe is None or self.probe.ok)


class CloudStorageConfigService:
    """Stateless checks over the current Django settings."""

    @staticmethod
    def _validate(provider: str) -> SettingsCheck:
        return registry.check_settings(provider)

    @classmethod
    def missing(cls, provider: str) -> list[str]:
        return cls._validate(provider).missing

    @classmethod
    def problems(cls, provider: str) -> list[str]:
        """Missing and malformed settings, each as a sentence naming the variable."""
        return cls._validate(provider).problems

    @classmethod
    def is_configured(cls, provider: str) -> bool:
        return not cls.problems(provider)

    @classmethod
    def check(cls, provider: str, live: bool = False) -> ProviderStatus:
        result = cls._validate(provider)
        probe = None
        if live and not result.problems:
            # The factory's cached service: a probe reuses the process's client.
            probe = CloudStorageFactory.for_provider(provider).probe()
        return ProviderStatus(
            provider=provider,
            configured=not result.problems,
            problems=result.problems,
            probe=probe,
            notes=result.notes,
        )

    @classmethod
    def status_report(cls, live: bool = False) -> list[ProviderStatus]:
        return [cls.check(provider, live=live) for provider in registry.names()]
