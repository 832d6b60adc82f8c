from django.apps import AppConfig


class AsyncJobsConfig(AppConfig):
    """Registers the asyncjobs models and system checks, and the RUN_INLINE test hook."""

    name = "asyncjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.tasks.signals import task_enqueued

        from asyncjobs import checks  # noqa: F401  (registers the checks)
        from asyncjobs.testing import run_inline

        task_enqueued.connect(run_inline, dispatch_uid="asyncjobs.testing.run_inline")
