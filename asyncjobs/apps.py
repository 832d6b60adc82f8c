from django.apps import AppConfig


class AsyncJobsConfig(AppConfig):
    """Registers the asyncjobs models and system checks."""

    name = "asyncjobs"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from asyncjobs import checks  # noqa: F401  (registers the checks)
