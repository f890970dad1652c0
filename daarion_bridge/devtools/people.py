"""People acting as Element over the client-server API, and what waits for the bridge to
turn their rooms into channels: for the end-to-end tests and the benchmark."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

T = TypeVar("T")


async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 15.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises AssertionError naming ``what`` and the last value seen on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}"
            )
        await asyncio.sleep(interval)


class MatrixError(AssertionError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: {status} {body}")
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None


class Person:
    """A Matrix user doing what Element does, over the client-server API."""

    def __init__(self, base_url: str, user_id: str, access_token: str) -> None:
        self.base_url = base_url
        self.user_id = user_id
        self.localpart = user_id[1:].split(":", 1)[0]
        self.token = access_token
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"},
                connector=aiohttp.TCPConnector(limit=16),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = f"{self.base_url}/_matrix/client{path}"
        for attempt in range(20):
            async with self.session.request(method, url, json=body, params=params) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 429 and attempt < 19:  # should not happen: limits relaxed
                    await asyncio.sleep((data or {}).get("retry_after_ms", 200) / 1000)
                    continue
                if resp.status != 200:
                    raise MatrixError(method, path, resp.status, data)
                return data
        raise AssertionError("unreachable")

    # rooms

    async def create_room(
        self,
        name: str | None = None,
        preset: str = "private_chat",
        room_version: str | None = None,
        invite: Iterable[str] = (),
        topic: str | None = None,
        **extra: Any,
    ) -> str:
        body: dict[str, Any] = {"preset": preset, "invite": list(invite), **extra}
        if name is not None:
            body["name"] = name
        if topic is not None:
            body["topic"] = topic
        if room_version is not None:
            body["room_version"] = room_version
        return (await self.request("POST", "/v3/createRoom", body))["room_id"]

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.request("POST", f"/v3/rooms/{q(room_id)}/invite", {"user_id": user_id})

    async def join(self, room_id: str) -> None:
        await self.request("POST", f"/v3/join/{q(room_id)}", {})

    async def leave(self, room_id: str) -> None:
        await self.request("POST", f"/v3/rooms/{q(room_id)}/leave", {})

    async def kick(self, room_id: str, user_id: str, reason: str = "") -> None:
        await self.request(
            "POST", f"/v3/rooms/{q(room_id)}/kick", {"user_id": user_id, "reason": reason}
        )

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> Any:
        """Content of a state event, or None if there is none."""
        try:
            return await self.request(
                "GET", f"/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
            )
        except MatrixError as e:
            if e.status == 404:
                return None
            raise

    async def put_state(
        self, room_id: str, event_type: str, content: Any, state_key: str = ""
    ) -> str:
        path = f"/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        return (await self.request("PUT", path, content))["event_id"]

    async def set_room_name(self, room_id: str, name: str) -> str:
        return await self.put_state(room_id, "m.room.name", {"name": name})

    async def set_power_level(self, room_id: str, user_id: str, level: int) -> str:
        content = await self.state(room_id, "m.room.power_levels") or {}
        content.setdefault("users", {})[user_id] = level
        return await self.put_state(room_id, "m.room.power_levels", content)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        content = await self.state(room_id, "m.room.member", user_id)
        return content.get("membership") if content else None

    # messages

    async def send(
        self, room_id: str, event_type: str, content: Any, txn_id: str | None = None
    ) -> str:
        txn = txn_id or uuid.uuid4().hex
        path = f"/v3/rooms/{q(room_id)}/send/{q(event_type)}/{txn}"
        return (await self.request("PUT", path, content))["event_id"]

    async def send_text(
        self, room_id: str, body: str, msgtype: str = "m.text", txn_id: str | None = None
    ) -> str:
        content = {"msgtype": msgtype, "body": body}
        return await self.send(room_id, "m.room.message", content, txn_id)

    async def send_text_retrying(
        self, room_id: str, body: str, timeout: float = 60, interval: float = 0.2
    ) -> tuple[str, int]:
        """Send as a client that survives a homeserver restart would: on a connection
        error or a 5xx, send again with the same transaction id (the homeserver answers a
        repeat with the event it already made). Returns ``(event_id, retries)``."""
        txn = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        retries = 0
        while True:
            try:
                return await self.send_text(room_id, body, txn_id=txn), retries
            except (aiohttp.ClientError, OSError, TimeoutError, MatrixError) as e:
                if isinstance(e, MatrixError) and e.status < 500:
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"send of txn {txn} failed for {timeout} s: {e!r}") from e
                retries += 1
                await asyncio.sleep(interval)

    async def reply(
        self, room_id: str, parent_id: str, parent_sender: str, parent_body: str, body: str
    ) -> str:
        """A reply with the legacy fallback older Element versions put in front of it."""
        quoted = "\n".join(f"> {line}" for line in f"<{parent_sender}> {parent_body}".split("\n"))
        content = {
            "msgtype": "m.text",
            "body": f"{quoted}\n\n{body}",
            "format": "org.matrix.custom.html",
            "formatted_body": (
                f'<mx-reply><blockquote><a href="https://matrix.to/#/{room_id}/{parent_id}">'
                f'In reply to</a> <a href="https://matrix.to/#/{parent_sender}">{parent_sender}'
                f"</a><br>{parent_body}</blockquote></mx-reply>{body}"
            ),
            "m.relates_to": {"m.in_reply_to": {"event_id": parent_id}},
        }
        return await self.send(room_id, "m.room.message", content)

    async def edit(self, room_id: str, event_id: str, new_body: str) -> str:
        content = {
            "msgtype": "m.text",
            "body": f"* {new_body}",
            "m.new_content": {"msgtype": "m.text", "body": new_body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
        }
        return await self.send(room_id, "m.room.message", content)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        txn = uuid.uuid4().hex
        body = {"reason": reason} if reason else {}
        path = f"/v3/rooms/{q(room_id)}/redact/{q(event_id)}/{txn}"
        return (await self.request("PUT", path, body))["event_id"]

    async def get_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v3/rooms/{q(room_id)}/event/{q(event_id)}")

    async def history(self, room_id: str) -> list[dict[str, Any]]:
        """The room's whole timeline (as this user may see it), oldest first."""
        events: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "1000"}
        while True:
            page = await self.request("GET", f"/v3/rooms/{q(room_id)}/messages", params=params)
            events.extend(page.get("chunk", []))
            end = page.get("end")
            if not end or not page.get("chunk"):
                break
            params = {"dir": "b", "limit": "1000", "from": end}
        events.reverse()
        return events


def q(part: str) -> str:
    return quote(part, safe="")


async def channel_row(db: Any, room_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM channels WHERE matrix_room_id = $1", room_id)


async def open_channel(
    db: Any,
    person: Person,
    bot: str,
    name: str,
    preset: str = "private_chat",
    timeout: float = 15,
    **create: Any,
) -> tuple[str, Any]:
    """Create a room as ``person``, invite ``bot`` (the bridge bot, or an agent's puppet)
    as Element would, wait for it to join and for the channels row. Returns
    ``(room_id, channels row)``."""
    room_id = await person.create_room(name=name, preset=preset, **create)
    await person.invite(room_id, bot)

    async def bot_joined() -> bool:
        return await person.membership(room_id, bot) == "join"

    await wait_for(bot_joined, timeout, what=f"{bot} to join {room_id}")
    row = await wait_for(
        lambda: channel_row(db, room_id), timeout, what=f"channels row for {room_id}"
    )
    return room_id, row
