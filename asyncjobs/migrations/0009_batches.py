# Batches (asyncjobs.models.workflows) and the job's batch. Safe on a live jobs table: the
# new column is nullable with no default and no constraint (instant), and its index is built
# without blocking writes (asyncjobs.db.online), hence a non-atomic migration.

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models

from asyncjobs.db.online import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('asyncjobs', '0008_mysql_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Batch',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('backend', models.CharField(default='default', max_length=100)),
                ('description', models.CharField(blank=True, default='', max_length=255)),
                ('created_at', models.DateTimeField()),
                ('sealed_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('total', models.PositiveIntegerField(default=0)),
                ('pending', models.PositiveIntegerField(default=0, help_text='Jobs not finished yet.')),
                ('succeeded', models.PositiveIntegerField(default=0)),
                ('failed', models.PositiveIntegerField(default=0)),
                ('cancelled', models.PositiveIntegerField(default=0)),
                ('callbacks', models.JSONField(blank=True, default=dict)),
                ('success_fired_at', models.DateTimeField(blank=True, null=True)),
                ('complete_fired_at', models.DateTimeField(blank=True, null=True)),
                ('failure_fired_at', models.DateTimeField(blank=True, null=True)),
                ('webhook_url', models.URLField(blank=True, max_length=2000)),
                ('enqueued_by', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'batch',
                'verbose_name_plural': 'batches',
            },
        ),
        migrations.AddField(
            model_name='job',
            name='batch',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='jobs', to='asyncjobs.batch'),
        ),
        AddIndexOnline(
            model_name='job',
            index=models.Index(condition=models.Q(('batch__isnull', False)), fields=['batch', 'status'], name='asyncjobs_job_batch'),
        ),
        migrations.AddIndex(
            model_name='batch',
            index=models.Index(fields=['-created_at'], name='asyncjobs_batch_created'),
        ),
        migrations.AddIndex(
            model_name='batch',
            index=models.Index(fields=['finished_at'], name='asyncjobs_batch_finished'),
        ),
    ]
