"""Schema changes that keep a live jobs table writable while they run.

A migration that adds an index to a table of millions of jobs must not stop enqueues while
the index is built. ``AddIndexOnline`` is Django's ``AddIndex`` (the same migration state),
built the way each database can do it without blocking writes:

- PostgreSQL: ``CREATE INDEX CONCURRENTLY`` (the migration must set ``atomic = False``);
- MariaDB/MySQL, which ignore a partial index's condition and so would build nothing: the
  same columns as a full index, in place and with no lock (``ALGORITHM=INPLACE, LOCK=NONE``);
- SQLite: a plain ``CREATE INDEX`` (one writer anyway).
"""

from typing import Any

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

from asyncjobs.db.queries import query


def _columns(model: type[models.Model], index: models.Index, quote: Any) -> str:
    parts = []
    for name in index.fields:
        descending = name.startswith("-")
        column = model._meta.get_field(name.lstrip("-")).column  # type: ignore[union-attr]
        parts.append(quote(column) + (" DESC" if descending else ""))
    return ", ".join(parts)


class AddIndexOnline(migrations.AddIndex):
    """``AddIndex`` that does not block writes to the table while the index is built."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)  # type: ignore[call-arg]
        elif vendor == "mysql":
            quote = schema_editor.quote_name
            schema_editor.execute(
                query("mysql", "create_index_online").format(
                    index=quote(self.index.name),
                    table=quote(model._meta.db_table),
                    columns=_columns(model, self.index, quote),
                )
            )
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)  # type: ignore[call-arg]
        elif vendor == "mysql":
            quote = schema_editor.quote_name
            schema_editor.execute(
                query("mysql", "drop_index").format(
                    index=quote(self.index.name), table=quote(model._meta.db_table)
                )
            )
        else:
            schema_editor.remove_index(model, self.index)

    def describe(self) -> str:
        return super().describe() + " (without blocking writes)"
