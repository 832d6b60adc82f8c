# Batch tallies (asyncjobs.models.workflows.BatchTally): the counts of a batch's jobs that a
# flush could not add to the batch's row without waiting for another transaction's commit
# (PostgreSQL). Safe on a live database: a new, empty table and its index; no existing table
# is touched.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('asyncjobs', '0011_autovacuum_settings'),
    ]

    operations = [
        migrations.CreateModel(
            name='BatchTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('succeeded', models.PositiveIntegerField(default=0)),
                ('failed', models.PositiveIntegerField(default=0)),
                ('cancelled', models.PositiveIntegerField(default=0)),
                ('batch', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='tallies', to='asyncjobs.batch')),
            ],
            options={
                'verbose_name': 'batch tally',
                'verbose_name_plural': 'batch tallies',
            },
        ),
    ]
