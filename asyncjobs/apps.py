from django.apps import AppConfig


class AsyncJobsConfig(AppConfig):
    """Registers the asyncjobs models and system checks, and the RUN_INLINE test hook."""

    name = "asyncjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from asyncjobs import checks  # noqa: F401  (registers the checks)
        from asyncjobs.conf import jobs_settings
        from asyncjobs.inline import run_inline
        from asyncjobs.services import receiver_acts_when
        from asyncjobs.tasks_api import connect_backport, task_enqueued

        connect_backport()

        task_enqueued.connect(run_inline, dispatch_uid="asyncjobs.inline.run_inline")
        # (So that enqueueing skips the signal when nothing else listens.)
        receiver_acts_when(run_inline, lambda level: bool(jobs_settings.RUN_INLINE))
