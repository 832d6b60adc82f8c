# The next scheduled job of a queue, found by an ordered index walk (see services.promote_due).
# Partial: it holds scheduled jobs only, so building it reads the table once but stays small.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("asyncjobs", "0002_operator_tools"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status", "scheduled")),
                fields=["queue_name", "run_after"],
                name="asyncjobs_job_scheduled_queue",
            ),
        ),
    ]
