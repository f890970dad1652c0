"""Which write failures are the data's fault (set aside) and which are worth a retry."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions._base import DataError as ClientDataError

from daarion_bridge.db.errors import is_data_error, is_transient


@pytest.mark.parametrize(
    "error",
    [
        ClientDataError("invalid input for query argument $1"),  # asyncpg's own encoding
        asyncpg.DataError("invalid input syntax"),  # the server's SQLSTATE 22
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        RecursionError("maximum recursion depth exceeded while encoding a JSON object"),
    ],
)
def test_the_data_at_fault_is_never_retried(error: BaseException) -> None:
    assert is_data_error(error)
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [asyncpg.InterfaceError("connection is closed"), ConnectionResetError(), TimeoutError()],
)
def test_a_broken_connection_is_retried(error: BaseException) -> None:
    assert is_transient(error)
    assert not is_data_error(error)
