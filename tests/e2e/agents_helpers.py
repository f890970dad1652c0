"""Helpers for the agent end-to-end tests: acting as an agent's puppet through the
appservice token, the agent rows of the index, and reading the bridge's log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Person, load_yaml, open_channel, q, wait_for


def as_token_of(config: Path) -> str:
    return str(load_yaml(config)["appservice"]["as_token"])


class AsPuppet(Person):
    """An agent's puppet acting on the homeserver as the bridge would: the appservice's
    as_token with ``?user_id=<puppet>`` on every request (appservice identity assertion)."""

    def __init__(self, base_url: str, user_id: str, as_token: str) -> None:
        super().__init__(base_url, user_id, as_token)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        params = {**(params or {}), "user_id": self.user_id}
        return await super().request(method, path, body, params)


async def profile(person: Person, user_id: str) -> dict[str, Any]:
    """The user's global profile as anyone on the homeserver sees it."""
    return await person.request("GET", f"/v3/profile/{q(user_id)}")


# -- the index ------------------------------------------------------------------------------


async def agent_row(db: Any, external_id: str) -> Any:
    """The agents row with its blueprint code, microDAO external id and owner's Matrix id."""
    return await db.fetchrow(
        """
        SELECT a.*, b.code AS blueprint_code, d.external_id AS microdao_external_id,
               u.matrix_id AS owner_matrix_id
        FROM agents a
        JOIN agent_blueprints b ON b.id = a.blueprint_id
        LEFT JOIN microdaos d ON d.id = a.microdao_id
        LEFT JOIN users u ON u.id = a.owner_user_id
        WHERE a.external_id = $1
        """,
        external_id,
    )


async def sessions_of(db: Any, agent_mxid: str, channel_id: Any) -> list[Any]:
    """The agent's sessions in the channel, oldest first, with the database's clock
    (``now``) and the time since the last activity (``quiet``) read in the same query."""
    return await db.fetch(
        """
        SELECT s.*, now() AS now, now() - COALESCE(s.last_activity_at, s.started_at) AS quiet
        FROM agent_sessions s JOIN agents a ON a.id = s.agent_id
        WHERE a.matrix_id = $1 AND s.channel_id = $2
        ORDER BY s.started_at, s.id
        """,
        agent_mxid,
        channel_id,
    )


async def open_session(db: Any, agent_mxid: str, channel_id: Any) -> Any:
    """The agent's one session in the channel that is not closed, or None; fails if there
    is more than one."""
    found = [s for s in await sessions_of(db, agent_mxid, channel_id) if s["status"] != "closed"]
    assert len(found) <= 1, f"{len(found)} sessions not closed: {[dict(s) for s in found]}"
    return found[0] if found else None


async def session_where(db: Any, agent_mxid: str, channel_id: Any, **want: Any) -> Any:
    """The open session when each given column equals the wanted value, else None."""
    s = await open_session(db, agent_mxid, channel_id)
    if s is not None and all(s[k] == v for k, v in want.items()):
        return s
    return None


async def agent_channel(
    db: Any,
    inviter: Person,
    agent_mxid: str,
    name: str,
    preset: str = "private_chat",
    timeout: float = 15,
    **create: Any,
) -> tuple[str, Any]:
    """Create a room as ``inviter``, invite the agent's puppet as Element would, wait for
    it to join and for the channel with the agent's open session. Returns ``(room_id,
    channels row)``."""
    room_id, row = await open_channel(db, inviter, agent_mxid, name, preset, timeout, **create)
    await wait_for(
        lambda: open_session(db, agent_mxid, row["id"]),
        timeout,
        what=f"a session of {agent_mxid} in {room_id}",
    )
    return room_id, row


async def wait_membership(
    reader: Person, room_id: str, user_id: str, membership: str, timeout: float = 15
) -> None:
    async def reached() -> bool:
        return await reader.membership(room_id, user_id) == membership

    await wait_for(reached, timeout, what=f"{user_id} to be '{membership}' in {room_id}")


async def message_row(db: Any, event_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM messages WHERE matrix_event_id = $1", event_id)


async def wait_message(db: Any, event_id: str, timeout: float = 15) -> Any:
    return await wait_for(
        lambda: message_row(db, event_id), timeout, what=f"messages row for {event_id}"
    )


# -- the bridge's log -----------------------------------------------------------------------


@dataclass
class LogWatch:
    """Lines the bridge logged to ``path`` since this watch was made."""

    path: Path
    offset: int = 0

    @classmethod
    def from_now(cls, path: Path) -> LogWatch:
        return cls(path, path.stat().st_size if path.exists() else 0)

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace").splitlines()

    def matching(self, *needles: str) -> list[str]:
        return [line for line in self.lines() if all(n in line for n in needles)]

    async def wait(self, *needles: str, timeout: float = 15) -> str:
        async def found() -> str | None:
            hits = self.matching(*needles)
            return hits[0] if hits else None

        return await wait_for(found, timeout, what=f"a log line with {needles}")
