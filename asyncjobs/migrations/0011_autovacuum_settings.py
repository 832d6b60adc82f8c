# PostgreSQL only: autovacuum visits the job and attempt tables once 1% of their rows are dead
# instead of the server's default 20%. Every job leaves dead rows behind (its claim, its end
# and its pruning each replace or delete one), and a queue that keeps finished jobs for days
# has a large table, in which 20% is half a day of traffic: the table and its indexes grow by
# all those dead rows before any space is reused (bench/soak.py's A/B, docs/deployment.md).
# A setting the tables already have (an operator's own) is left as it is; going back removes
# only this migration's value. ALTER TABLE ... SET of autovacuum parameters rewrites nothing
# and takes a SHARE UPDATE EXCLUSIVE lock, which reads, writes and row locks do not wait for.
# A no-op elsewhere.

from django.db import migrations

OPTION = "autovacuum_vacuum_scale_factor"
VALUE = "0.01"


def _options(schema_editor, table):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
            [schema_editor.quote_name(table)],
        )
        row = cursor.fetchone()
    return dict(option.split("=", 1) for option in (row[0] if row and row[0] else []))


def _tables(apps):
    return [apps.get_model("asyncjobs", name)._meta.db_table for name in ("Job", "Attempt")]


def set_scale_factor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in _tables(apps):
        if OPTION not in _options(schema_editor, table):
            schema_editor.execute(
                f"ALTER TABLE {schema_editor.quote_name(table)} SET ({OPTION} = {VALUE})"
            )


def reset_scale_factor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in _tables(apps):
        if _options(schema_editor, table).get(OPTION) == VALUE:
            schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} RESET ({OPTION})")


class Migration(migrations.Migration):
    dependencies = [
        ("asyncjobs", "0010_dependencies"),
    ]

    operations = [
        migrations.RunPython(set_scale_factor, reset_scale_factor, elidable=False),
    ]
