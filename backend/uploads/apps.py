from typing import Any

from django.apps import AppConfig as DjangoAppConfig


class UploadsConfig(DjangoAppConfig):
    name = "backend.uploads"
    label = "uploads"
    verbose_name = "Media uploads"

    def ready(self) -> None:
        # Development without a broker URL (the demo): run the jobs in this process so deletes
        # and cleanup really happen. Guarded by settings (refused in production) and by the
        # command being run, so `migrate`, `shell` or the tests never start a worker thread.
        from backend.uploads import tasks

        if tasks.should_start_inprocess_worker():
            from django.core.signals import request_started

            # Started on the first request, not here: `runserver`'s autoreloader parent also
            # runs ready() but never serves a request, so it never starts a second worker.
            request_started.connect(_start_inprocess_worker, dispatch_uid="uploads-inprocess")


def _start_inprocess_worker(**kwargs: Any) -> None:
    from backend.uploads import tasks

    tasks.start_inprocess_worker()
