"""What task code may leave behind on a slot thread's connection: a transaction it opened and
never ended. Asked after every task (``asyncjobs.worker.recovery.end_open_transactions``)."""

from django.db.backends.base.base import BaseDatabaseWrapper

# libpq's PQTRANS_IDLE (psycopg 3's TransactionStatus.IDLE, psycopg2's
# TRANSACTION_STATUS_IDLE): the session is in no transaction block.
_PQ_IDLE = 0


def left_in_transaction(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection`` (open) is inside a transaction that nothing will end: an
    ``atomic()`` block entered and not left, autocommit turned off, or (on PostgreSQL and
    SQLite, whose drivers say so) a transaction begun by raw SQL. On MySQL/MariaDB only
    Django's own state is known: a raw ``BEGIN`` there goes unseen."""
    raw = connection.connection
    if raw is None:
        return False
    if connection.in_atomic_block:
        return True
    if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
        return True
    if connection.vendor == "postgresql":
        return bool(raw.info.transaction_status != _PQ_IDLE)
    if connection.vendor == "sqlite":
        return bool(raw.in_transaction)
    return False
