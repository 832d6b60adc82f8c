"""Schema changes that keep a live jobs table writable while they run.

A migration that adds an index to a table of millions of jobs must not stop enqueues while
the index is built. ``AddIndexOnline`` is Django's ``AddIndex`` (the same migration state),
built the way each database can do it without blocking writes:

- PostgreSQL: ``CREATE INDEX CONCURRENTLY`` (the migration must set ``atomic = False``);
- MariaDB/MySQL, which ignore a partial index's condition and so would build nothing: the
  same columns as a full index, in place and with no lock (``ALGORITHM=INPLACE, LOCK=NONE``);
- SQLite: a plain ``CREATE INDEX`` (one writer anyway).

An index that MariaDB/MySQL have a stand-in for already (one of ``MYSQL_INDEXES``, led by the
partial index's own conditions, which a full index on the partial one's columns would lack)
is named with ``mysql_stand_in``: nothing is built there.

``ReplaceCheckOnline`` changes a CHECK constraint (the same migration state as Django's
``RemoveConstraint`` then ``AddConstraint``) without validating it under a lock that blocks
the table:

- PostgreSQL: the old constraint is dropped and the new one added ``NOT VALID`` in one short
  transaction (new rows are checked from then on), then ``VALIDATE CONSTRAINT`` reads the
  existing rows under a lock that lets writes go on;
- MariaDB/MySQL: dropping a CHECK is instant, but adding one rebuilds the whole table
  (``ALGORITHM=COPY``, writes blocked meanwhile; MariaDB's MDEV-16356), so the old
  constraint is dropped and the new one is not added there: the application alone writes
  the column;
- SQLite: Django's own way (it remakes the table; one writer anyway).

``ReplaceIndexOnline`` puts an index in place of another (a partial one in place of a full
one, say), and ``DropFieldIndexOnline`` drops the index Django keeps for a field (its
``db_index``), optionally putting another in its place; the same migration state as
Django's ``RemoveIndex`` and ``AddIndex``, or ``AlterField`` with ``db_index=False`` (and
``AddIndex``). The new index is built before the old one goes, so a query that needs one
always has one:

- PostgreSQL: ``CREATE INDEX CONCURRENTLY``, then ``DROP INDEX CONCURRENTLY`` (the migration
  must set ``atomic = False``); a new index that a failed concurrent build left invalid is
  dropped and built again, one already built is kept;
- MariaDB/MySQL, where a partial index is a full one: an index on the old one's columns is
  only renamed (in the data dictionary, nothing rebuilt); else built in place with no lock,
  then the old one dropped;
- SQLite: plain ``CREATE INDEX`` and ``DROP INDEX``.

``SetStorageParameter`` sets a PostgreSQL storage parameter of some tables (autovacuum's,
say): ``ALTER TABLE ... SET`` rewrites nothing and takes a SHARE UPDATE EXCLUSIVE lock, which
reads, writes and row locks do not wait for. A no-op on the other databases.
"""

from collections.abc import Sequence
from typing import Any

from django.db import migrations, models, transaction
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
    """``AddIndex`` that does not block writes to the table while the index is built.

    ``mysql_stand_in``: the index of ``MYSQL_INDEXES`` that serves its queries on
    MariaDB/MySQL instead (then none is built or dropped there)."""

    def __init__(self, model_name: str, index: models.Index, mysql_stand_in: str = "") -> None:
        super().__init__(model_name, index)
        self.mysql_stand_in = mysql_stand_in

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        name, args, kwargs = super().deconstruct()
        if self.mysql_stand_in:
            kwargs["mysql_stand_in"] = self.mysql_stand_in
        return name, args, kwargs

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        self._build(to_state.apps.get_model(app_label, self.model_name), schema_editor, True)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        self._build(from_state.apps.get_model(app_label, self.model_name), schema_editor, False)

    def _build(
        self, model: type[models.Model], schema_editor: BaseDatabaseSchemaEditor, create: bool
    ) -> None:
        """Create (or drop) the index the way the database can without blocking writes."""
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        vendor = schema_editor.connection.vendor
        if vendor == "mysql" and self.mysql_stand_in:
            return
        if vendor == "mysql":
            quote = schema_editor.quote_name
            names = {"index": quote(self.index.name), "table": quote(model._meta.db_table)}
            if create:
                names["columns"] = _columns(model, self.index, quote)
            sql = query("mysql", "create_index_online" if create else "drop_index")
            schema_editor.execute(sql.format(**names))
            return
        change = schema_editor.add_index if create else schema_editor.remove_index
        if vendor == "postgresql":
            change(model, self.index, concurrently=True)  # type: ignore[call-arg]
        else:
            change(model, self.index)

    def describe(self) -> str:
        return super().describe() + " (without blocking writes)"


def _index_columns(schema_editor: BaseDatabaseSchemaEditor, table: str) -> dict[str, list[str]]:
    """The plain (not unique, not primary key) indexes of ``table``: their columns, by name."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {
        name: [column.lower() for column in info["columns"]]
        for name, info in found.items()
        if info["index"] and not info["unique"] and not info["primary_key"]
    }


def _column_names(model: type[models.Model], index: models.Index) -> list[str]:
    return [
        model._meta.get_field(name.lstrip("-")).column.lower()  # type: ignore[union-attr]
        for name in index.fields
    ]


def _swap(
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[models.Model],
    old: models.Index | None,
    new: models.Index | None,
) -> None:
    """Put the index ``new`` in place of ``old`` (either may be None: only build, or only
    drop) without blocking writes to ``model``'s table; ``old`` is dropped only if it exists.
    See the module's docstring."""
    vendor = schema_editor.connection.vendor
    table = model._meta.db_table
    existing = _index_columns(schema_editor, table)
    if old is not None and old.name not in existing:
        old = None
    if vendor == "mysql":
        quote = schema_editor.quote_name
        names = {"table": quote(table)}
        if (
            new is not None
            and old is not None
            and new.name not in existing
            and existing[old.name] == _column_names(model, new)
        ):
            sql = query("mysql", "rename_index")
            schema_editor.execute(sql.format(old=quote(old.name), new=quote(new.name), **names))
            return
        if new is not None and new.name not in existing:
            names.update(index=quote(new.name), columns=_columns(model, new, quote))
            schema_editor.execute(query("mysql", "create_index_online").format(**names))
        if old is not None:
            names["index"] = quote(old.name)
            schema_editor.execute(query("mysql", "drop_index").format(**names))
        return
    if vendor == "postgresql":
        if new is not None:
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(query("postgresql", "index_valid"), [new.name])
                row = cursor.fetchone()
            if row is not None and not row[0]:  # a failed concurrent build's leftover
                schema_editor.remove_index(model, new, concurrently=True)  # type: ignore[call-arg]
            if row is None or not row[0]:
                schema_editor.add_index(model, new, concurrently=True)  # type: ignore[call-arg]
        if old is not None:
            schema_editor.remove_index(model, old, concurrently=True)  # type: ignore[call-arg]
        return
    if new is not None and new.name not in existing:
        schema_editor.add_index(model, new)
    if old is not None:
        schema_editor.remove_index(model, old)


def _meta_index(model: type[models.Model], name: str) -> models.Index:
    """The index ``name`` of ``model``'s ``Meta.indexes``."""
    (index,) = (index for index in model._meta.indexes if index.name == name)
    return index


class _SwapIndexOnline(migrations.operations.base.Operation):
    """One index of a model in place of another, without blocking writes to the table (see
    the module's docstring): ``_indexes`` says which two; either may be None (nothing to
    drop, nothing to build). The migration must set ``atomic = False``."""

    reversible = True
    model_name: str

    def _indexes(
        self, schema_editor: BaseDatabaseSchemaEditor, earlier: type[models.Model]
    ) -> tuple[models.Index | None, models.Index | None]:
        """The index before the operation and the one after, given the model as it was
        before."""
        raise NotImplementedError

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            earlier = from_state.apps.get_model(app_label, self.model_name)
            before, after = self._indexes(schema_editor, earlier)
            _swap(schema_editor, model, before, after)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)  # as it was before
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            before, after = self._indexes(schema_editor, model)
            _swap(schema_editor, model, after, before)


class ReplaceIndexOnline(_SwapIndexOnline):
    """Replace the index ``old_name`` of a model's ``Meta.indexes`` by ``index`` without
    blocking writes to the table (see the module's docstring). The migration must set
    ``atomic = False``."""

    def __init__(self, model_name: str, old_name: str, index: models.Index) -> None:
        # (Operation.deconstruct gives back these arguments as they were passed.)
        self.model_name = model_name
        self.old_name = old_name
        self.index = index

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        state.remove_index(app_label, self.model_name.lower(), self.old_name)
        state.add_index(app_label, self.model_name.lower(), self.index)

    def _indexes(
        self, schema_editor: BaseDatabaseSchemaEditor, earlier: type[models.Model]
    ) -> tuple[models.Index | None, models.Index | None]:
        return _meta_index(earlier, self.old_name), self.index

    def describe(self) -> str:
        return (
            f"Replace index {self.old_name} of {self.model_name} by {self.index.name} "
            "(without blocking writes)"
        )


class DropFieldIndexOnline(_SwapIndexOnline):
    """Set ``db_index=False`` on a field (its new definition ``field``; the migration state
    of Django's ``AlterField``): drop ``index_name``, the index Django made for the field,
    without blocking writes to the table, and with ``replaced_by``, build that index first
    (it joins ``Meta.indexes``). See the module's docstring; the migration must set ``atomic
    = False``. Not an ``AlterField``, which a squash would fold into the field's
    ``AddField``, losing ``replaced_by``."""

    def __init__(
        self,
        model_name: str,
        name: str,
        field: models.Field,
        index_name: str,
        replaced_by: models.Index | None = None,
    ) -> None:
        # (Operation.deconstruct gives back these arguments as they were passed.)
        self.model_name = model_name
        self.name = name
        self.field = field
        self.index_name = index_name
        self.replaced_by = replaced_by

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        model_name = self.model_name.lower()
        state.alter_field(app_label, model_name, self.name, self.field, True)
        if self.replaced_by is not None:
            state.add_index(app_label, model_name, self.replaced_by)

    def _indexes(
        self, schema_editor: BaseDatabaseSchemaEditor, earlier: type[models.Model]
    ) -> tuple[models.Index | None, models.Index | None]:
        # The index Django keeps for the field (with ``db_index``) on this database, if it
        # makes one there: not on MariaDB/MySQL for a foreign key with a constraint, which
        # InnoDB's index for the constraint serves.
        field = earlier._meta.get_field(self.name)
        if schema_editor.connection.vendor == "mysql" and getattr(field, "db_constraint", False):
            return None, self.replaced_by
        return models.Index(fields=[self.name], name=self.index_name), self.replaced_by

    def describe(self) -> str:
        instead = f", {self.replaced_by.name} in its place" if self.replaced_by else ""
        return (
            f"Drop the index of field {self.name} on {self.model_name}{instead} "
            "(without blocking writes)"
        )


class ReplaceCheckOnline(migrations.operations.base.Operation):
    """Replace the CHECK constraint ``old`` of a model by ``new`` (same name or not) without
    validating the table's rows under a lock that blocks writes (see the module's
    docstring). The migration must set ``atomic = False``."""

    reversible = True

    def __init__(
        self, model_name: str, old: models.CheckConstraint, new: models.CheckConstraint
    ) -> None:
        self.model_name = model_name
        self.old = old
        self.new = new

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (
            self.__class__.__name__,
            [],
            {"model_name": self.model_name, "old": self.old, "new": self.new},
        )

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        state.remove_constraint(app_label, self.model_name.lower(), self.old.name)
        state.add_constraint(app_label, self.model_name.lower(), self.new)

    def state_backwards(self, app_label: str, state: ProjectState) -> None:
        state.remove_constraint(app_label, self.model_name.lower(), self.new.name)
        state.add_constraint(app_label, self.model_name.lower(), self.old)

    def _replace(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        state: ProjectState,
        old: models.CheckConstraint,
        new: models.CheckConstraint,
    ) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            table = schema_editor.quote_name(model._meta.db_table)
            with transaction.atomic(using=schema_editor.connection.alias):
                schema_editor.execute(old.remove_sql(model, schema_editor))
                schema_editor.execute(f"{new.create_sql(model, schema_editor)} NOT VALID")
            schema_editor.execute(
                query("postgresql", "validate_constraint").format(
                    table=table, name=schema_editor.quote_name(new.name)
                )
            )
        elif vendor == "mysql":
            schema_editor.execute(old.remove_sql(model, schema_editor))
        else:
            schema_editor.remove_constraint(model, old)
            schema_editor.add_constraint(model, new)

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        # MariaDB/MySQL: dropped by an earlier run, or never there: nothing to drop.
        if schema_editor.connection.vendor == "mysql" and not _has_constraint(
            schema_editor, to_state, app_label, self.model_name, self.old
        ):
            return
        self._replace(app_label, schema_editor, to_state, self.old, self.new)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if schema_editor.connection.vendor == "mysql":
            return  # forwards dropped it there; adding the old one back would copy the table
        self._replace(app_label, schema_editor, from_state, self.new, self.old)

    def describe(self) -> str:
        return (
            f"Replace constraint {self.old.name} of {self.model_name} by {self.new.name} "
            "(validated without blocking writes)"
        )


class SetStorageParameter(migrations.operations.base.Operation):
    """Set the PostgreSQL storage parameter ``option`` of the tables of ``model_names`` to
    ``value`` (see the module's docstring). A table that already has its own value (an
    operator's) keeps it; going back resets the parameter only where it still has
    ``value``. No change to the migration state; a no-op on the other databases."""

    reversible = True

    def __init__(self, model_names: list[str], option: str, value: str) -> None:
        # (Operation.deconstruct gives back these arguments as they were passed.)
        self.model_names = model_names
        self.option = option
        self.value = value

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def _tables(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState
    ) -> list[str]:
        if schema_editor.connection.vendor != "postgresql":
            return []
        found = (state.apps.get_model(app_label, name) for name in self.model_names)
        return [
            model._meta.db_table
            for model in found
            if self.allow_migrate_model(schema_editor.connection.alias, model)
        ]

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for table in self._tables(app_label, schema_editor, to_state):
            if self.option not in _storage_parameters(schema_editor, table):
                schema_editor.execute(
                    f"ALTER TABLE {schema_editor.quote_name(table)} "
                    f"SET ({self.option} = {self.value})"
                )

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for table in self._tables(app_label, schema_editor, from_state):
            if _storage_parameters(schema_editor, table).get(self.option) == self.value:
                schema_editor.execute(
                    f"ALTER TABLE {schema_editor.quote_name(table)} RESET ({self.option})"
                )

    def describe(self) -> str:
        return f"Set {self.option} = {self.value} on {', '.join(self.model_names)} (PostgreSQL)"


def _storage_parameters(schema_editor: BaseDatabaseSchemaEditor, table: str) -> dict[str, str]:
    """The storage parameters ``table`` has of its own (PostgreSQL's ``reloptions``)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
            [schema_editor.quote_name(table)],
        )
        row = cursor.fetchone()
    return dict(option.split("=", 1) for option in (row[0] if row and row[0] else []))


def _has_constraint(
    schema_editor: BaseDatabaseSchemaEditor,
    state: ProjectState,
    app_label: str,
    model_name: str,
    constraint: models.CheckConstraint,
) -> bool:
    model = state.apps.get_model(app_label, model_name)
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return constraint.name in found
