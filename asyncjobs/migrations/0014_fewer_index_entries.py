# Fewer index entries per job (issue 29): every status change of a job is a new version of its
# row with an entry in each full index, and each attempt took entries it never needed.
# - the job's user: a partial index (only jobs that have one; deleting a user reads it) in
#   place of the full index of the foreign key;
# - the attempt's job: no index of its own (the unique (job, number) one leads with it);
# - the attempt's end: a partial index (only ended attempts; the metrics read those) in place
#   of the full one, which took an entry for the NULL of each running attempt.
# The foreign keys' old indexes are named as Django named them. Built and dropped without
# blocking writes (asyncjobs.db.online), hence a non-atomic migration. MariaDB/MySQL, which
# have no partial index: the two indexes are only renamed.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from asyncjobs.db.online import DropFieldIndexOnline, ReplaceIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('asyncjobs', '0013_claim_all_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        DropFieldIndexOnline(
            model_name='job',
            name='enqueued_by',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
            index_name='asyncjobs_job_enqueued_by_id_dcef6ceb',
            replaced_by=models.Index(condition=models.Q(('enqueued_by__isnull', False)), fields=['enqueued_by'], name='asyncjobs_job_enqueued_by'),
        ),
        DropFieldIndexOnline(
            model_name='attempt',
            name='job',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='attempt_set', to='asyncjobs.job'),
            index_name='asyncjobs_attempt_job_id_c1a3fd43',
        ),
        ReplaceIndexOnline(
            model_name='attempt',
            old_name='asyncjobs_attempt_finished',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['finished_at'], name='asyncjobs_attempt_ended'),
        ),
    ]
