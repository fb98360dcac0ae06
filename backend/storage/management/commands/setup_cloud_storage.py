"""`manage.py setup_cloud_storage [--provider NAME] [--check] [--dry-run]` (names: the registry's)

Prints the status of both providers. With --provider, validates it (a live probe with --check)
and makes it the active provider unless --dry-run. Exits 0 only when the chosen provider (or,
without --provider, the active one) is usable.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.core.config import get_app_config
from backend.core.errors import StorageUnavailable
from backend.storage import registry
from backend.storage.config_service import CloudStorageConfigService, ProviderStatus
from backend.storage.switching import activate_provider


class Command(BaseCommand):
    help = "Report on the storage providers, validate one and make it the active provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--provider", choices=registry.names(), help="provider to validate and activate"
        )
        parser.add_argument(
            "--check", action="store_true", help="also run a live probe against the provider(s)"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="validate and report, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        chosen: str | None = options["provider"]
        live: bool = options["check"]
        active = get_app_config().provider
        target = chosen or active

        report = CloudStorageConfigService.status_report(live=live)
        self._print_report(report, active=active, live=live)
        status = next(s for s in report if s.provider == target)

        if not status.usable:
            reason = (
                "; ".join(status.problems)
                if status.problems
                else (status.probe.error if status.probe else "unknown")
            )
            raise CommandError(f"Storage provider {target} is not usable: {reason}")

        if chosen is None:
            self.stdout.write(self.style.SUCCESS(f"Active provider {active} is usable."))
            return
        if options["dry_run"]:
            verb = "would switch" if chosen != active else "would keep"
            self.stdout.write(f"Dry run: {verb} the active provider {active} -> {chosen}.")
            return
        try:
            previous, _ = activate_provider(chosen, actor="manage.py setup_cloud_storage")
        except StorageUnavailable as exc:  # settings changed between report and switch
            raise CommandError(exc.message) from exc
        if previous == chosen:
            self.stdout.write(self.style.SUCCESS(f"Active provider is {chosen} (unchanged)."))
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Active provider switched from {previous} to {chosen}.")
            )

    def _print_report(self, report: list[ProviderStatus], *, active: str, live: bool) -> None:
        self.stdout.write("Storage providers" + (" (live check)" if live else ""))
        for status in report:
            marker = " [active]" if status.provider == active else ""
            state = "configured" if status.configured else "NOT configured"
            line = f"  {status.provider}{marker}: {state}"
            if status.probe is not None:
                if status.probe.ok:
                    line += f"; live check ok ({status.probe.latency_ms:.0f} ms)"
                else:
                    line += f"; live check FAILED ({status.probe.latency_ms:.0f} ms)"
            self.stdout.write(line)
            for problem in status.problems:
                self.stdout.write(f"    - {problem}")
            if status.probe is not None and status.probe.error:
                self.stdout.write(f"    - {status.probe.error}")
            for note in status.notes:
                self.stdout.write(f"    * {note}")
