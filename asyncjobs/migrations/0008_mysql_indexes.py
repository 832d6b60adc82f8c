# MariaDB/MySQL only: the indexes that stand in for the partial ones there (see
# asyncjobs.db.MYSQL_INDEXES): ordered claim indexes led by the status, and the unique index on
# unique_key, which Django skips because the model's constraint is partial. A no-op elsewhere.

from django.db import migrations

import asyncjobs.db


def install_indexes(apps, schema_editor):
    asyncjobs.db.install_mysql_indexes(schema_editor)


def drop_indexes(apps, schema_editor):
    asyncjobs.db.drop_mysql_indexes(schema_editor)


class Migration(migrations.Migration):
    # MariaDB/MySQL cannot run DDL inside a transaction (Django refuses to try).
    atomic = False

    dependencies = [
        ("asyncjobs", "0007_maintenance_lease"),
    ]

    operations = [
        migrations.RunPython(install_indexes, drop_indexes, elidable=False),
    ]
