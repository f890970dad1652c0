"""Versioned schema migrations, one file per version, run at start.

A database whose version is newer than the last file here is refused: the code
would not know its shape.
"""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable(
    version_table_name="bridge_schema_version",
    database_name="daarion_bridge database",
)

from . import (  # noqa: E402,F401  (each registers itself)
    v01_initial,
    v02_agents,
    v03_outbox,
    v04_member_user_index,
    v05_outbox_cursor,
)
