"""Every reach of asyncjobs past Django's and psycopg's public API, behind one switch.

``ASYNCJOBS["FAST_PATH"]`` (default True) turns these on; with it off, the same operations go
through the ORM, the models' and classes' own init and Django's cursors (``enabled()``), and
store the same rows and give the same results (``tests/test_fastpath.py``; the whole suite
runs with the switch off too: ``make test-no-fast-path``). Only ``asyncjobs.db`` and
``asyncjobs.services`` import this package (an import-linter contract). What lives here:

- ``objects``: model instances filled in through ``__dict__`` instead of the model's init or
  ``Model.from_db`` (unless a project listens to ``pre_init``/``post_init`` for Job:
  ``new_job``, ``rows_to_jobs``), ``_state`` set by hand after an insert (``mark_saved``),
  new jobs' ids made without ``UUID.__init__`` (``uuid4_factory``), ``TaskResult`` built
  without its init (``task_result``), and Django's private ``Signal._live_receivers``
  (``live_receivers``) and ``Signal._dead_receivers`` (``same_receivers``: whether a
  signal's receivers changed since an answer worked out from them);
- ``values``: new jobs' values prepared without the ORM's per-field calls where the ORM would
  pass them unchanged (``row``, ``rows``), JSON columns decoded without
  ``JSONField.from_db_value`` (``fast_converters``);
- ``copy_text``: ``COPY`` text formatted by hand (``copy_escaped``, ``copy_formatter``,
  ``copy_lines``);
- ``cursors``: a psycopg cursor on Django's connection, with server-side binding, kept per
  connection (``bound_cursor``), the hot statements prepared on the server (``execute``,
  ``execute_kept``),
  its statements entered in Django's query log (``query_logged``), and psycopg's own
  ``timestamptz`` loader (``load_timestamps_natively``);
- ``switch``: the switch, and the per-alias caches of all that (``alias_cache``), dropped
  when ``DATABASES`` or ``ASYNCJOBS`` change (``override_settings`` in tests).
"""

from asyncjobs.db.fastpath.copy_text import copy_escaped, copy_formatter, copy_lines
from asyncjobs.db.fastpath.cursors import (
    KEPT_CURSORS,
    KEPT_READERS,
    NEVER_AUTOMATIC,
    bound,
    bound_cursor,
    execute,
    execute_kept,
    load_timestamps_natively,
    query_logged,
)
from asyncjobs.db.fastpath.objects import (
    Receivers,
    ResultFields,
    Seen,
    direct_jobs,
    direct_template,
    job_template,
    live_receivers,
    mark_saved,
    new_job,
    receivers_seen,
    rows_to_jobs,
    same_receivers,
    task_result,
    uuid4_direct,
    uuid4_factory,
)
from asyncjobs.db.fastpath.switch import alias_cache, enabled, psycopg3
from asyncjobs.db.fastpath.values import (
    JSON_SCALARS,
    PER_JOB_FIELDS,
    PLAIN_JSON_FIELDS,
    fast_converters,
    insert_plan,
    json_from_db,
    plain_json_dumps,
    row,
    row_plan,
    rows,
)

__all__ = [
    "JSON_SCALARS",
    "KEPT_CURSORS",
    "KEPT_READERS",
    "NEVER_AUTOMATIC",
    "PER_JOB_FIELDS",
    "PLAIN_JSON_FIELDS",
    "Receivers",
    "ResultFields",
    "Seen",
    "alias_cache",
    "bound",
    "bound_cursor",
    "copy_escaped",
    "copy_formatter",
    "copy_lines",
    "direct_jobs",
    "direct_template",
    "enabled",
    "execute",
    "execute_kept",
    "fast_converters",
    "insert_plan",
    "job_template",
    "json_from_db",
    "live_receivers",
    "load_timestamps_natively",
    "mark_saved",
    "new_job",
    "plain_json_dumps",
    "psycopg3",
    "query_logged",
    "receivers_seen",
    "row",
    "row_plan",
    "rows",
    "rows_to_jobs",
    "same_receivers",
    "task_result",
    "uuid4_direct",
    "uuid4_factory",
]
