# PostgreSQL only: the NOTIFY triggers say what became ready, "ready:<queue>" or, for a job under
# a per-task or per-key limit, "keyed:<queue>" (the payload was the bare queue name), so that
# a worker looks for such jobs when told instead of several times a second.

from django.db import migrations

import asyncjobs.db

# The functions as migration 0001 first installed them, for going back.
PREVIOUS_FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION asyncjobs_notify_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('asyncjobs', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM new_rows WHERE status = 'queued') AS q;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION asyncjobs_notify_ready() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('asyncjobs', NEW.queue_name);
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""


def install_functions(apps, schema_editor):
    asyncjobs.db.install_notify_functions(schema_editor)


def restore_functions(apps, schema_editor):
    asyncjobs.db.execute_on_postgresql(schema_editor, PREVIOUS_FUNCTIONS_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("asyncjobs", "0003_scheduled_queue_index"),
    ]

    operations = [
        migrations.RunPython(install_functions, restore_functions, elidable=False),
    ]
