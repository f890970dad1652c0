"""The index (the bridge's Postgres) read back and compared with what Matrix holds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from daarion_bridge.devtools.people import Person

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_datetime(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


def datetime_to_ms(value: datetime) -> float:
    return (value - EPOCH) / timedelta(milliseconds=1)


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
