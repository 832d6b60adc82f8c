# The claim of a worker that serves every queue (PostgreSQL's pick_every_queue, SQLite's
# candidates without a queue) reads ready jobs best first across queues. The claim index
# leads with the queue, so that read sorted every ready job on each claim (~240 ms with
# 200,000 ready jobs): this partial index holds them in claim order (bench/README.md,
# "A deep backlog"). Built without blocking writes (asyncjobs.db.online), hence a non-atomic
# migration. MariaDB/MySQL have had their own since 0008 (asyncjobs_job_claim_all_m, led by
# the status): nothing is built there.

from django.db import migrations, models

from asyncjobs.db.online import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('asyncjobs', '0012_batch_tallies'),
    ]

    operations = [
        AddIndexOnline(
            model_name='job',
            index=models.Index(condition=models.Q(('limit_key', ''), ('status', 'queued')), fields=['-priority', 'run_after', 'enqueued_at'], name='asyncjobs_job_claim_all'),
            mysql_stand_in='asyncjobs_job_claim_all_m',
        ),
    ]
