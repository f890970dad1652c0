"""Helpers for the end-to-end tests: the bridge process, people acting as Element over the
client-server API, a Postgres poller and bridge config writing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import asyncpg
from aiohttp import web

from daarion_bridge.devtools.bridge import (  # the names tests import from here
    BridgeProcess,
    CliResult,
    derive_config,
    dump_yaml,
    file_logging,
    load_yaml,
    run_cli,
    write_bridge_config,
)
from daarion_bridge.devtools.nats import LocalNats
from tests.conftest import create_database

__all__ = [
    "BridgeProcess",
    "CliResult",
    "derive_config",
    "dump_yaml",
    "file_logging",
    "load_yaml",
    "run_cli",
    "write_bridge_config",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


def ts_to_datetime(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


def datetime_to_ms(value: datetime) -> float:
    return (value - EPOCH) / timedelta(milliseconds=1)


# -- waiting ----------------------------------------------------------------------------------


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


# -- people acting as Element ----------------------------------------------------------------


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


# -- the index --------------------------------------------------------------------------------


async def channel_row(db: Any, room_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM channels WHERE matrix_room_id = $1", room_id)


async def user_row(db: Any, matrix_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM users WHERE matrix_id = $1", matrix_id)


async def member_row(db: Any, channel_id: Any, matrix_id: str) -> Any:
    """The channel_members row of a person (member_user_id) or an agent/bot
    (member_agent_id) with this Matrix id, or None."""
    return await db.fetchrow(
        """
        SELECT cm.*
        FROM channel_members cm
        LEFT JOIN users u ON u.id = cm.member_user_id
        LEFT JOIN agents a ON a.id = cm.member_agent_id
        WHERE cm.channel_id = $1 AND (u.matrix_id = $2 OR a.matrix_id = $2)
        """,
        channel_id,
        matrix_id,
    )


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


async def wait_indexed(
    db: Any,
    channel_id: Any,
    expected: int,
    timeout: float = 60,
    interval: float = 0.1,
    stall: float | None = None,
) -> float | None:
    """Wait until the channel has at least ``expected`` message rows; returns the seconds
    that took, or None on timeout, or once the count has not moved for ``stall`` seconds
    (then :func:`index_report` tells what is missing)."""
    t0 = last_change = time.monotonic()
    last = -1
    while True:
        n = await db.fetchval("SELECT count(*) FROM messages WHERE channel_id = $1", channel_id)
        now = time.monotonic()
        if n >= expected:
            return now - t0
        if n != last:
            last, last_change = n, now
        if now - t0 > timeout or (stall is not None and now - last_change > stall):
            return None
        await asyncio.sleep(interval)


def fmt_seconds(seconds: float | None) -> str:
    return "(timed out)" if seconds is None else f"{seconds:.2f} s"


@dataclass
class IndexReport:
    """The index compared with a room's history as the client-server API returns it."""

    messages: int  # m.room.message events in the history
    rows: int  # messages rows of the channel
    missing: list[str]  # events without a row (lost)
    doubled: list[str]  # events with more than one row
    extra: list[str]  # rows that match no message of the history
    wrong: list[tuple[str, dict[str, Any], dict[str, Any]]]  # (event id, row, expected)
    unexpected: list[str]  # history differs from what the test sent (sent given)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the messages

    @property
    def ok(self) -> bool:
        return not (self.missing or self.doubled or self.extra or self.wrong or self.unexpected)

    def summary(self) -> str:
        return (
            f"{self.messages} messages, {self.rows} rows: lost {len(self.missing)}, "
            f"doubled {len(self.doubled)}, extra {len(self.extra)}, wrong {len(self.wrong)}"
        )


DELETED = "[deleted]"  # the preview of a redacted message


def replaced_by(event: dict[str, Any]) -> str | None:
    """The event id an edit (m.replace) replaces, None for anything else."""
    content = event.get("content")
    relates = content.get("m.relates_to") if isinstance(content, dict) else None
    if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
        target = relates.get("event_id")
        return target if isinstance(target, str) else None
    return None


def is_redacted(event: dict[str, Any]) -> bool:
    unsigned = event.get("unsigned")
    return isinstance(unsigned, dict) and "redacted_because" in unsigned


async def index_report(
    db: Any,
    reader: Person,
    room_id: str,
    channel_id: Any,
    sent: dict[str, tuple[str, str]] | None = None,
) -> IndexReport:
    """Read the room's history through ``reader`` and the channel's messages rows.

    Each m.room.message must have exactly one row with preview == its body, sender == its
    sender (a human), created_at == its origin_server_ts; no row may match nothing. An
    edit (m.replace) has no row of its own: its target's preview is the body of the
    newest edit; a redacted message's preview is ``[deleted]``. Meant for plain texts
    shorter than the preview length. With ``sent`` (event id -> (sender, body) as the
    test sent them, edits included), the history must hold exactly those (a redacted
    message's body is gone, so only its sender is compared)."""
    timeline = [e for e in await reader.history(room_id) if e["type"] == "m.room.message"]
    newest_edit: dict[str, dict[str, Any]] = {}
    for e in timeline:
        target = replaced_by(e)
        if target is None:
            continue
        seen = newest_edit.get(target)
        if seen is None or (e["origin_server_ts"], e["event_id"]) > (
            seen["origin_server_ts"],
            seen["event_id"],
        ):
            newest_edit[target] = e
    history = [e for e in timeline if replaced_by(e) is None]
    rows = await db.fetch(
        """
        SELECT m.matrix_event_id, m.content_preview, m.sender_type, m.created_at,
               u.matrix_id
        FROM messages m LEFT JOIN users u ON u.id = m.sender_user_id
        WHERE m.channel_id = $1
        """,
        channel_id,
    )
    by_event: dict[str, list[Any]] = {}
    for row in rows:
        by_event.setdefault(row["matrix_event_id"], []).append(row)
    in_history = {e["event_id"] for e in history}

    unexpected: list[str] = []
    if sent is not None:
        in_timeline = {e["event_id"] for e in timeline}
        unexpected += [f"sent, not in history: {i}" for i in sorted(set(sent) - in_timeline)]
        unexpected += [f"in history, not sent: {i}" for i in sorted(in_timeline - set(sent))]
        for e in timeline:
            if e["event_id"] not in sent:
                continue
            sender, body = sent[e["event_id"]]
            if e["sender"] != sender or (not is_redacted(e) and e["content"].get("body") != body):
                unexpected.append(f"history differs from what was sent: {e['event_id']}")

    def expected_preview(e: dict[str, Any]) -> Any:
        if is_redacted(e):
            return DELETED
        edit = newest_edit.get(e["event_id"])
        if edit is not None:
            return (edit["content"].get("m.new_content") or {}).get("body")
        return e["content"].get("body")

    wrong = []
    for e in history:
        found = by_event.get(e["event_id"], [])
        if len(found) != 1:
            continue
        row = found[0]
        expected = {
            "content_preview": expected_preview(e),
            "matrix_id": e["sender"],
            "sender_type": "human",
            "created_at": ts_to_datetime(e["origin_server_ts"]),
        }
        actual = {key: row[key] for key in expected}
        if actual != expected:
            wrong.append((e["event_id"], actual, expected))

    return IndexReport(
        messages=len(history),
        rows=len(rows),
        missing=[e["event_id"] for e in history if e["event_id"] not in by_event],
        doubled=[k for k, v in by_event.items() if len(v) > 1],
        extra=sorted(set(by_event) - in_history),
        wrong=wrong,
        unexpected=unexpected,
        history=history,
    )


def assert_report_clean(r: IndexReport, note: str = "") -> IndexReport:
    """Fail with the first few of whatever :func:`index_report` found wrong. ``note`` (a
    seed, say) is added to every failure message."""
    where = f" ({note})" if note else ""
    assert not r.unexpected, f"test premise{where}: {r.unexpected[:5]}"
    assert not r.missing, f"{len(r.missing)} messages have no row{where}: {r.missing[:5]}"
    assert not r.extra, f"{len(r.extra)} rows match no message{where}: {r.extra[:5]}"
    assert not r.doubled, f"duplicate rows{where}: {r.doubled[:5]}"
    assert not r.wrong, f"{len(r.wrong)} rows with wrong fields{where}: {r.wrong[:3]}"
    assert r.rows == r.messages
    return r


async def assert_index_matches_history(
    db: Any,
    reader: Person,
    room_id: str,
    channel_id: Any,
    sent: dict[str, tuple[str, str]] | None = None,
    note: str = "",
) -> IndexReport:
    """:func:`index_report`, then :func:`assert_report_clean`; returns the report."""
    report = await index_report(db, reader, room_id, channel_id, sent)
    return assert_report_clean(report, note)


# -- pushing transactions by hand -------------------------------------------------------------


def hs_token_of(config: Path) -> str:
    return str(load_yaml(config)["appservice"]["hs_token"])


async def put_transaction(
    session: aiohttp.ClientSession,
    port: int,
    hs_token: str,
    txn_id: str,
    events: list[dict[str, Any]],
    timeout: float = 30,
) -> tuple[int, Any]:
    """PUT a transaction to the bridge on ``port`` as the homeserver would; returns
    ``(status, body)``."""
    url = f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/{q(txn_id)}"
    async with session.put(
        url,
        json={"events": events},
        headers={"Authorization": f"Bearer {hs_token}"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def http_status(session: aiohttp.ClientSession, url: str, timeout: float = 5) -> int:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        await resp.read()
        return resp.status


class RecordingProxy:
    """Sits on the registration's URL in front of a bridge listening elsewhere, forwards
    every request and records each transaction the homeserver pushed: ``(txn id, event
    ids, status the bridge answered)``; a status of 0 means the bridge did not answer.
    Tells "the homeserver never pushed it" from "the bridge said 200 and lost it"."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target = f"http://127.0.0.1:{target_port}"
        self.pushes: list[tuple[str, list[str], int]] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        keep = ("authorization", "content-type")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        event_ids: list[str] | None = None
        if request.method == "PUT" and "/transactions/" in request.path:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                event_ids = [e.get("event_id") for e in json.loads(body).get("events", [])]
        status, data, ctype = 0, b"", "application/json"
        try:
            async with self._client.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as resp:
                status, data = resp.status, await resp.read()
                ctype = resp.headers.get("Content-Type", ctype)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        finally:
            if event_ids is not None:
                self.pushes.append((request.match_info["txn"], event_ids, status))
        if status == 0:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "bridge down"}, status=502)
        return web.Response(status=status, body=data, headers={"Content-Type": ctype})

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("PUT", "/_matrix/app/v1/transactions/{txn}", self._forward)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def fate(self, event_id: str) -> str:
        """What happened to an event on its way to the bridge."""
        answers = [(txn, status) for txn, ids, status in self.pushes if event_id in ids]
        if not answers:
            return "never pushed by the homeserver"
        if any(status == 200 for _, status in answers):
            return f"answered 200 by the bridge (txn {[t for t, s in answers if s == 200]})"
        return f"pushed, never answered 200: {answers}"


def synapse_unsent_transactions(synapse_workdir: Path) -> dict[str, tuple[int, str]]:
    """What Synapse (SQLite) holds as appservice transactions not yet completed:
    event id -> (txn id, appservice state). Once traffic has settled, an event found here
    was never pushed: Synapse left its transaction behind (seen when its recoverer
    declares the service up just as a new transaction is stored for a down service)."""
    db = synapse_workdir / "homeserver.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT as_id, txn_id, event_ids FROM application_services_txns")
        txns = rows.fetchall()
        states = dict(con.execute("SELECT as_id, state FROM application_services_state"))
    finally:
        con.close()
    return {
        event_id: (txn_id, states.get(as_id) or "up")
        for as_id, txn_id, ids in txns
        for event_id in json.loads(ids)
    }


def explain_missing(missing: Iterable[str], synapse_workdir: Path) -> str:
    """A note for the failure message: which missing events Synapse never pushed."""
    missing = list(missing)
    if not missing:
        return ""
    unsent = synapse_unsent_transactions(synapse_workdir)
    stuck = {i: unsent[i] for i in missing if i in unsent}
    if not stuck:
        return "none of them is in Synapse's unsent appservice transactions"
    parts = [f"{i} in txn {txn} (service {state})" for i, (txn, state) in stuck.items()]
    return (
        f"{len(stuck)} of the {len(missing)} missing never pushed by Synapse: it still holds "
        f"them in unsent appservice transactions: {'; '.join(parts[:5])}"
    )


# -- the bridge's log -------------------------------------------------------------------------

CATCH_UP_LINE = re.compile(
    r"Catch-up after (?P<reason>.+?): read back (?P<rooms>\d+) room\(s\) in "
    r"(?P<seconds>[\d.]+) s, (?P<missing>\d+) event\(s\) were missing"
)


@dataclass(frozen=True)
class CatchUpRound:
    reason: str  # "start", "signs of dropped events", "more signs of dropped events"
    rooms: int
    seconds: float
    missing: int  # events the index lacked and the round fed in


def catch_up_rounds(log_file: Path, offset: int = 0) -> list[CatchUpRound]:
    """The catch-up rounds the bridge logged (from byte ``offset`` of its log on)."""
    if not log_file.exists():
        return []
    with log_file.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [
        CatchUpRound(m["reason"], int(m["rooms"]), float(m["seconds"]), int(m["missing"]))
        for m in CATCH_UP_LINE.finditer(text)
    ]


# -- a module's own index and bridge ----------------------------------------------------------


@dataclass
class OwnIndex:
    """A test module's own database, bridge log and config (derived from the session's),
    so its rows never reach other modules' index."""

    config: Path
    database_url: str
    log_file: Path


async def own_index(
    e2e: Any, pg_server_url: str, name: str, edit: Callable[[Any], None]
) -> OwnIndex:
    database_url = await create_database(pg_server_url, f"e2e_{name}")
    log_file = e2e.workdir / f"bridge-{name}.log"

    def with_own_index(cfg: Any) -> None:
        cfg["database"]["url"] = database_url
        cfg["logging"] = file_logging(log_file)
        edit(cfg)

    return OwnIndex(e2e.derived_config(f"config-{name}", with_own_index), database_url, log_file)


@contextlib.asynccontextmanager
async def index_pool(index: OwnIndex, max_size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(index.database_url, min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def running_bridge(e2e: Any, name: str, index: OwnIndex) -> AsyncIterator[BridgeProcess]:
    """The bridge on the registration's port with the module's config (stop the session's
    bridge first: only one can listen there)."""
    proc = e2e.new_bridge(f"bridge-{name}", index.config, log_file=index.log_file)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def running_nats(e2e: Any, name: str) -> AsyncIterator[LocalNats]:
    server = LocalNats(e2e.workdir / f"nats-{name}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
