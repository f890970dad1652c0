"""Which database failures are worth a retry, and which mean the data is at fault."""

from __future__ import annotations

import asyncpg

# SQLSTATE classes: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, object not in prerequisite state (database not
# accepting connections), operator intervention (shutdown, cancel), system error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# Data exception, integrity constraint violation: retrying the same rows fails again.
_DATA_CLASSES = frozenset({"22", "23"})


# What a write may raise because of the rows it writes; is_data_error says which of
# these are the data's fault (the others may be worth a retry).
WRITE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, UnicodeError, RecursionError)


def _client_side_data_error(error: BaseException) -> bool:
    """asyncpg's own DataError (a value it cannot encode for its column): an
    InterfaceError that is also a ValueError. Not asyncpg.DataError, the server's
    SQLSTATE 22 class, which _DATA_CLASSES covers."""
    return isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)


def _sqlstate_class(error: BaseException) -> str:
    return (getattr(error, "sqlstate", None) or "")[:2]


def is_transient(error: BaseException) -> bool:
    if _client_side_data_error(error):
        return False
    if isinstance(error, asyncpg.PostgresError):
        return _sqlstate_class(error) in _TRANSIENT_CLASSES
    # InternalClientError: asyncpg's state broke with a connection that died under it.
    transient = asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | TimeoutError
    return isinstance(error, transient)


def is_data_error(error: BaseException) -> bool:
    # asyncpg could not encode a value (as UTF-8, or for its column's type), or a value
    # nested too deep to serialise: the same rows fail the same way on every retry.
    if isinstance(error, UnicodeError | RecursionError) or _client_side_data_error(error):
        return True
    return isinstance(error, asyncpg.PostgresError) and _sqlstate_class(error) in _DATA_CLASSES
