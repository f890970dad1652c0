"""Versioned schema migrations, one file per version, run at start.

A database whose version is newer than the last file here is refused: the code
would not know its shape.
"""

from collections.abc import Awaitable, Callable
from typing import cast

from mautrix.util.async_db import Connection, UpgradeTable

upgrade_table = UpgradeTable(
    version_table_name="bridge_schema_version",
    database_name="daarion_bridge database",
)

Migration = Callable[[Connection], Awaitable[None]]


def migration(description: str) -> Callable[[Migration], Migration]:
    """Register the next version's migration. (mautrix's `register` returns a union that
    type checkers cannot call; this is the one shape we use.)"""
    return cast(Callable[[Migration], Migration], upgrade_table.register(description=description))


from . import (  # noqa: E402,F401  (each registers itself)
    v01_initial,
    v02_agents,
    v03_outbox,
    v04_member_user_index,
    v05_outbox_cursor,
    v06_config_roles,
    v07_state_order,
    v08_message_threads,
    v09_encrypted_waiting,
    v10_dead_letters_once,
    v11_room_names,
    v12_backfills,
    v13_pending_upgrades,
)
