"""Which database failures are worth a retry, and which mean the data is at fault."""

from __future__ import annotations

import asyncpg

# SQLSTATE classes: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, object not in prerequisite state (database not
# accepting connections), operator intervention (shutdown, cancel), system error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# Data exception, integrity constraint violation: retrying the same rows fails again.
_DATA_CLASSES = frozenset({"22", "23"})


def _sqlstate_class(error: BaseException) -> str:
    return (getattr(error, "sqlstate", None) or "")[:2]


def is_transient(error: BaseException) -> bool:
    if isinstance(error, asyncpg.PostgresError):
        return _sqlstate_class(error) in _TRANSIENT_CLASSES
    # InternalClientError: asyncpg's state broke with a connection that died under it.
    transient = asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | TimeoutError
    return isinstance(error, transient)


def is_data_error(error: BaseException) -> bool:
    if isinstance(error, UnicodeError):  # asyncpg could not encode a value as UTF-8
        return True
    return isinstance(error, asyncpg.PostgresError) and _sqlstate_class(error) in _DATA_CLASSES
