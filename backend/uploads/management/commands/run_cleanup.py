"""`manage.py run_cleanup {expire,reconcile} [--provider P] [--apply]`: the cleanup jobs by hand.

A dry run unless `--apply` is given: it prints what would be deleted and changes nothing. With
`--apply` it runs the same services the scheduled jobs run, synchronously, and prints what it did.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backend.core.errors import ApplicationError
from backend.storage import registry
from backend.storage.factory import CloudStorageFactory
from backend.uploads import cleanup


class Command(BaseCommand):
    help = "Expire never-confirmed uploads or reconcile provider objects (dry run unless --apply)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job", choices=["expire", "reconcile"])
        parser.add_argument(
            "--provider",
            choices=registry.names(),
            help="Only this provider (default: every provider with rows / every configured one).",
        )
        parser.add_argument(
            "--apply", action="store_true", help="Really delete (default: dry run, no change)."
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="expire: handle at most this many rows."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = not options["apply"]
        provider = options["provider"]
        try:
            if options["job"] == "expire":
                reports = [
                    cleanup.expire_orphans(
                        dry_run=dry_run,
                        providers=[provider] if provider else None,
                        limit=options["limit"],
                    )
                ]
            else:
                reports = [
                    cleanup.reconcile(name, dry_run=dry_run)
                    for name in ([provider] if provider else self._configured())
                ]
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        for report in reports:
            self._print(report)
        if dry_run:
            self.stdout.write("Dry run: nothing was changed. Re-run with --apply to do it.")
        if any(report.failed for report in reports):
            raise CommandError("Some deletes failed; see above. They are retried on a later run.")

    def _configured(self) -> list[str]:
        names = CloudStorageFactory.configured()
        if not names:
            raise CommandError("No storage provider is configured.")
        return names

    def _print(self, report: cleanup.CleanupReport) -> None:
        self.stdout.write(report.summary())
        label = "would delete" if report.dry_run else "deleted"
        for line in report.sample:
            self.stdout.write(f"  {label}: {line}")
        shown = len(report.sample)
        total = report.candidates if report.dry_run else report.deleted
        if total > shown:
            self.stdout.write(f"  ... and {total - shown} more")
        for key, reason in report.failures.items():
            self.stderr.write(f"  failed: {key}: {reason}")
