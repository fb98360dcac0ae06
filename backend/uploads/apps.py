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
            tasks.start_inprocess_worker()
