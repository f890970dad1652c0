"""A message indexed as `[encrypted]` whose room key came later, decrypted and written as
a transaction of its own (Ingestor.write_late, as _decrypted_late does): with
`bridge.encryption.plaintext_previews: true` its preview becomes its text, announced as
one `messaging.message.updated`, unless an edit shows (the edit wins) or it was redacted
(it stays `[deleted]`, and its text runs no command); with previews off nothing changes.
An edit decrypted late shows its text the same way. Real PostgreSQL, the real crypto
store's tables, the ingestor as the transaction handler drives it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from mautrix.util.async_db import Database

from daarion_bridge.config import Config, parse_config
from daarion_bridge.crypto.service import open_crypto
from daarion_bridge.ingest.ingestor import Ingestor
from daarion_bridge.translate.agents import LiveDirectory
from tests.db.matrix_events import ALICE, event, text
from tests.db.test_writer import previews, setup

MEGOLM = "m.megolm.v1.aes-sha2"


def config(plaintext_previews: bool) -> Config:
    raw = {
        "homeserver": {"address": "http://127.0.0.1:1", "domain": "localhost"},
        "appservice": {"address": "http://127.0.0.1:2", "as_token": "a" * 20, "hs_token": "h" * 20},
        "bridge": {
            "default_microdao": "microdao:test",
            "encryption": {"plaintext_previews": plaintext_previews, "pickle_key": "k" * 32},
        },
        "nats": {"url": "nats://127.0.0.1:1"},  # on: the outbox is written
    }
    return parse_config(Path("test-config.yaml"), raw, environ={})


async def make_ingestor(
    database_url: str, databases: tuple[Database, Database], plaintext_previews: bool
) -> AsyncIterator[Ingestor]:
    cfg = config(plaintext_previews)
    async with aiohttp.ClientSession() as http:
        crypto = await open_crypto(database_url, databases[0], cfg, http)
        ingestor = Ingestor(
            databases[0].pool,  # type: ignore[attr-defined]
            None,  # type: ignore[arg-type]
            LiveDirectory(cfg.roster),
            cfg,
            crypto=crypto,
        )
        await ingestor.write_setups("setup", [setup()])
        await databases[0].pool.execute("DELETE FROM bridge_outbox")  # type: ignore[attr-defined]
        yield ingestor


@pytest.fixture
async def previews_on(database_url, databases) -> AsyncIterator[Ingestor]:
    async for ingestor in make_ingestor(database_url, databases, True):
        yield ingestor


@pytest.fixture
async def previews_off(database_url, databases) -> AsyncIterator[Ingestor]:
    async for ingestor in make_ingestor(database_url, databases, False):
        yield ingestor


def sealed(relates_to: str | None = None) -> dict[str, Any]:
    """An m.room.encrypted message whose session no device of the bridge holds."""
    content: dict[str, Any] = {
        "algorithm": MEGOLM,
        "sender_key": "s" * 43,
        "session_id": "x" * 43,
        "device_id": "ALICEDEVICE",
        "ciphertext": "c" * 64,
    }
    if relates_to is not None:  # an edit: the relation stays in the clear
        content["m.relates_to"] = {"rel_type": "m.replace", "event_id": relates_to}
    return event("m.room.encrypted", content)


def opened(raw: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """What Crypto.decrypt makes of it: same id, sender, room and time."""
    kept = ("room_id", "event_id", "sender", "origin_server_ts")
    return {"type": "m.room.message", **{k: raw[k] for k in kept}, "content": content}


def body(text_: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": text_}


def edit_of(target: str, text_: str) -> dict[str, Any]:
    return {
        **body(f"* {text_}"),
        "m.new_content": body(text_),
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await pool.fetch("SELECT subject, msg_id, payload::text FROM bridge_outbox ORDER BY id")
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


async def index_sealed(ingestor: Ingestor, raw: dict[str, Any]) -> None:
    await ingestor.handle_transaction(f"t-{raw['event_id']}", [raw])


async def test_a_late_message_shows_its_text_announced_once(
    previews_on: Ingestor, pool: asyncpg.Pool
) -> None:
    raw = sealed()
    await index_sealed(previews_on, raw)
    assert (await previews(pool))[raw["event_id"]] == "[encrypted]"
    await pool.execute("DELETE FROM bridge_outbox")
    late = opened(raw, body("the plan"))
    await previews_on.write_late(raw["event_id"], late)
    assert (await previews(pool))[raw["event_id"]] == "the plan"
    ((subject, msg_id, payload),) = await outbox(pool)
    assert subject == "messaging.message.updated"
    assert msg_id == f"messaging.message.updated:{raw['event_id']}:decrypted"
    assert payload["content_preview"] == "the plan"
    assert payload["matrix_event_id"] == payload["edit_event_id"] == raw["event_id"]
    await previews_on.write_late(raw["event_id"], late)  # again: a replay changes nothing
    assert len(await outbox(pool)) == 1


async def test_with_previews_off_nothing_changes(
    previews_off: Ingestor, pool: asyncpg.Pool
) -> None:
    raw = sealed()
    await index_sealed(previews_off, raw)
    await pool.execute("DELETE FROM bridge_outbox")
    await previews_off.write_late(raw["event_id"], opened(raw, body("the plan")))
    assert (await previews(pool))[raw["event_id"]] == "[encrypted]"
    assert await outbox(pool) == []


async def test_an_edit_that_came_meanwhile_still_wins(
    previews_on: Ingestor, pool: asyncpg.Pool
) -> None:
    raw = sealed()
    await index_sealed(previews_on, raw)
    # The edit's key was here (another session): its text shows.
    edit = text("", sender=ALICE)
    edit["content"] = edit_of(raw["event_id"], "the new plan")
    await previews_on.handle_transaction("edit", [edit])
    await pool.execute("DELETE FROM bridge_outbox")
    await previews_on.write_late(raw["event_id"], opened(raw, body("the old plan")))
    assert (await previews(pool))[raw["event_id"]] == "the new plan"
    assert await outbox(pool) == []
    # The edit removed: the original's text comes back, not `[encrypted]`.
    removal = event("m.room.redaction", {}, ALICE, redacts=edit["event_id"])
    await previews_on.handle_transaction("removal", [removal])
    assert (await previews(pool))[raw["event_id"]] == "the old plan"


async def test_an_edit_decrypted_late_shows_its_text(
    previews_on: Ingestor, pool: asyncpg.Pool
) -> None:
    """Element encrypts an edit with the message's session: both wait for one key."""
    raw = sealed()
    raw_edit = sealed(relates_to=raw["event_id"])
    await index_sealed(previews_on, raw)
    await index_sealed(previews_on, raw_edit)
    assert (await previews(pool))[raw["event_id"]] == "[encrypted]"
    await pool.execute("DELETE FROM bridge_outbox")
    await previews_on.write_late(raw["event_id"], opened(raw, body("draft")))
    assert (await previews(pool))[raw["event_id"]] == "[encrypted]"  # the edit shows
    await previews_on.write_late(
        raw_edit["event_id"], opened(raw_edit, edit_of(raw["event_id"], "final"))
    )
    assert (await previews(pool))[raw["event_id"]] == "final"
    ((subject, msg_id, payload),) = await outbox(pool)
    assert subject == "messaging.message.updated"
    assert msg_id == f"messaging.message.updated:{raw_edit['event_id']}:decrypted"
    assert (payload["edit_event_id"], payload["content_preview"]) == (raw_edit["event_id"], "final")


async def test_a_message_redacted_meanwhile_stays_deleted_and_runs_nothing(
    previews_on: Ingestor, pool: asyncpg.Pool
) -> None:
    raw = sealed()
    await index_sealed(previews_on, raw)
    redaction = event("m.room.redaction", {}, ALICE, redacts=raw["event_id"])
    await previews_on.handle_transaction("redaction", [redaction])
    await pool.execute("DELETE FROM bridge_outbox")
    handed: list[Any] = []
    previews_on.on_commands = handed.extend
    await previews_on.write_late(raw["event_id"], opened(raw, body("!daarion help")))
    assert (await previews(pool))[raw["event_id"]] == "[deleted]"
    assert await outbox(pool) == []
    assert handed == []  # a deleted command is no command


async def test_a_late_command_runs(previews_on: Ingestor, pool: asyncpg.Pool) -> None:
    """The counterpart of the test above: what it asserts could fail."""
    raw = sealed()
    await index_sealed(previews_on, raw)
    handed: list[Any] = []
    previews_on.on_commands = handed.extend
    await previews_on.write_late(raw["event_id"], opened(raw, body("!daarion help")))
    assert [op.event_id for op in handed] == [raw["event_id"]]
