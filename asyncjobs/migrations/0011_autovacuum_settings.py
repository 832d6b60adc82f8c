# PostgreSQL only: autovacuum visits the job and attempt tables once 1% of their rows are dead
# instead of the server's default 20%. Every job leaves dead rows behind (its claim, its end
# and its pruning each replace or delete one), and a queue that keeps finished jobs for days
# has a large table, in which 20% is half a day of traffic: the table and its indexes grow by
# all those dead rows before any space is reused (bench/soak.py's A/B, docs/deployment.md).
# A setting the tables already have (an operator's own) is left as it is; going back removes
# only this migration's value. Taken without blocking writes, a no-op elsewhere (see
# asyncjobs.db.online.SetStorageParameter).

from django.db import migrations

from asyncjobs.db.online import SetStorageParameter


class Migration(migrations.Migration):
    dependencies = [
        ("asyncjobs", "0010_dependencies"),
    ]

    operations = [
        SetStorageParameter(["Job", "Attempt"], "autovacuum_vacuum_scale_factor", "0.01"),
    ]
