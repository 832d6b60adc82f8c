# Dependencies between jobs (asyncjobs.models.workflows.JobDependency) and the "waiting"
# status. Safe on a live jobs table: the two new job columns are nullable with no default
# (instant), the new table starts empty, and the status check is replaced without
# validating the table under a lock that blocks writes (asyncjobs.db.online:
# ReplaceCheckOnline), hence a non-atomic migration.

import django.db.models.deletion
from django.db import migrations, models

from asyncjobs.db.online import ReplaceCheckOnline

OLD_STATUSES = ['scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled']


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('asyncjobs', '0009_batches'),
    ]

    operations = [
        migrations.AddField(
            model_name='job',
            name='has_dependents',
            field=models.BooleanField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='job',
            name='pending_dependencies',
            field=models.IntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='job',
            name='status',
            field=models.CharField(choices=[('waiting', 'Waiting'), ('scheduled', 'Scheduled'), ('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=16),
        ),
        ReplaceCheckOnline(
            model_name='job',
            old=models.CheckConstraint(condition=models.Q(('status__in', OLD_STATUSES)), name='asyncjobs_job_status_valid'),
            new=models.CheckConstraint(condition=models.Q(('status__in', ['waiting', *OLD_STATUSES])), name='asyncjobs_job_status_valid'),
        ),
        migrations.CreateModel(
            name='JobDependency',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('on_failure', models.CharField(choices=[('cancel', 'Cancel'), ('run', 'Run')], default='cancel', max_length=8)),
                ('pass_result', models.BooleanField(default=False)),
                ('created_at', models.DateTimeField()),
                ('resolved_at', models.DateTimeField(blank=True, null=True)),
                ('outcome', models.CharField(blank=True, default='', max_length=16)),
                ('dependent', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='dependencies', to='asyncjobs.job')),
                ('parent', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='dependents', to='asyncjobs.job')),
            ],
            options={
                'verbose_name': 'job dependency',
                'verbose_name_plural': 'job dependencies',
                'constraints': [
                    models.UniqueConstraint(fields=('dependent', 'parent'), name='asyncjobs_dependency_unique'),
                    models.CheckConstraint(condition=models.Q(('dependent', models.F('parent')), _negated=True), name='asyncjobs_dependency_not_self'),
                ],
            },
        ),
    ]
