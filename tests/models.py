"""Tables the test tasks write to, so tests can see what ran and how often."""

from django.db import models


class Execution(models.Model):
    """One run of a test task."""

    label = models.CharField(max_length=100, db_index=True)
    pid = models.IntegerField()
    started_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.label


class Account(models.Model):
    """A business row enqueued together with a job (transactional enqueue tests)."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name
