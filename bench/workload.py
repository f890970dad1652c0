"""The benchmark's Synapse transactions: a realistic, seeded mix of room events.

Everything is generated up front and serialized the way Synapse serializes it (compact
JSON, non-ASCII escaped), so sending costs the driver nothing but the HTTP request.

Mix of room events (per event, by weight): 85 % ``m.room.message`` (m.text; bodies of 1
to 2,000 characters, ~15 % with emoji and ZWJ sequences, ~10 % replies with the legacy
fallback, ~20 % with an HTML ``formatted_body``), 5 % edits (``m.replace`` with
``m.new_content``) and 3 % redactions of earlier messages of the same phase, 5 %
membership changes (a sender joins, or leaves if joined), 2 % state changes cycling
``m.room.name`` → ``m.room.power_levels`` → ``m.room.join_rules``. Each transaction also
carries 1 to 4 ephemeral events (typing, read receipts), which the bridge ignores.

Agents: in rooms that have agents (puppets the benchmark invited), 3 % of the messages
are an agent's answer and 6 % of people's messages mention one of the room's agents by
name (a pill, as Element sends it). Every person's message carries ``m.mentions``, as
Element's do; a reply mentions the sender it replies to, so replying to an agent calls it.

Rooms are picked with Zipf-like weights (a few busy rooms, a long tail); each room has a
pool of members (every sender is in 1 to ~8 rooms) and messages come from that pool.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

# Message body length classes: (weight, min, max) in code points.
LENGTHS = ((55, 1, 60), (30, 61, 300), (10, 301, 1000), (5, 1001, 2000))
KIND_WEIGHTS = {"message": 85, "edit": 5, "redaction": 3, "membership": 5, "state": 2}
REPLY_SHARE = 0.10
EMOJI_SHARE = 0.15
HTML_SHARE = 0.20
STATE_CYCLE = ("m.room.name", "m.room.power_levels", "m.room.join_rules")
HISTORY = 64  # recent messages per room that edits, redactions and replies can target
AGENT_SHARE = 0.03  # of the messages in a room with agents: an agent's answer
MENTION_SHARE = 0.06  # of people's messages in a room with agents: one mentions an agent

WORDS = (
    "the a to and of in is it you that for on we this with be are have not at"
    " meeting agent proposal vote budget node microdao channel release deploy review"
    " tomorrow today please thanks ok yes no maybe link docs issue fix merged test build"
    " привіт дякую завтра зустріч голосування пропозиція агент спільнота бюджет так ні"
    " Grüße café naïve über señor façade"
).split()
LINKS = ("https://daarion.city/docs", "https://github.com/daarion/bridge/pull/42", "`make test`")
EMOJI = (
    "👍",
    "🙂",
    "🎉",
    "🚀",
    "❤️",
    "🔥",
    "👍🏽",
    "👋🏿",
    "🇺🇦",
    "🏳️‍🌈",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "🧑🏽‍🚀",
    "👩🏻‍❤️‍💋‍👨🏼",
    "🤦‍♀️",
    "😂",
)


def _corpus(rng: random.Random, size: int, emoji_every: int) -> str:
    """Running text to slice bodies from: words, links, line breaks, some emoji."""
    parts: list[str] = []
    total = 0
    while total < size:
        r = rng.random()
        if emoji_every and rng.randrange(emoji_every) == 0:
            token = rng.choice(EMOJI)
        elif r < 0.01:
            token = rng.choice(LINKS)
        else:
            token = rng.choice(WORDS)
        sep = "\n" if r > 0.985 else (". " if r > 0.95 else " ")
        parts.append(token + sep)
        total += len(token) + len(sep)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Txn:
    txn_id: str
    body: bytes
    events: int


@dataclass
class Phase:
    """One run of transactions, and what the floor needs to attribute rows to them."""

    name: str
    txns: list[Txn] = field(default_factory=list)
    events: int = 0
    ephemeral: int = 0
    body_bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    # event id of each new message -> index of its transaction
    message_txn: dict[str, int] = field(default_factory=dict)
    # message event id -> index of the last transaction that edited or redacted it
    state_txn: dict[str, int] = field(default_factory=dict)
    # (room id, user id) -> index of the transaction with the first join in this phase
    join_txn: dict[tuple[str, str], int] = field(default_factory=dict)
    # agents' messages, and people's messages that mention an agent (part of "message")
    agent_messages: int = 0
    mentions: int = 0
    redacted: set[str] = field(default_factory=set)  # messages this phase redacted


@dataclass
class _Room:
    room_id: str
    members: list[str]
    joined: set[str] = field(default_factory=set)
    recent: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    public: bool = False
    agents: list[tuple[str, str]] = field(default_factory=list)  # (Matrix id, name)


class Workload:
    """A deterministic event stream over the benchmark's rooms and senders."""

    def __init__(
        self,
        rooms: list[str],
        senders: list[str],
        owner: str,
        *,
        seed: int,
        start_ts: int,
        agents: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        """``agents``: room id -> the (Matrix id, name) of the agents in that room."""
        if not rooms or not senders:
            raise ValueError("need at least one room and one sender")
        self.rng = rng = random.Random(seed)
        self.owner = owner
        self.ts = start_ts
        self.state_n = 0
        self.plain = _corpus(rng, 400_000, 0)
        self.emoji = _corpus(rng, 200_000, 4)
        members: dict[str, list[str]] = {r: [] for r in rooms}
        for sender in senders:
            for room in rng.sample(rooms, min(len(rooms), 1 + min(7, int(rng.expovariate(0.5))))):
                members[room].append(sender)
        for pool in members.values():
            while len(set(pool)) < min(2, len(senders)):  # everyone has someone to talk to
                pool.append(rng.choice(senders))
        self.rooms = [_Room(r, members[r], agents=list((agents or {}).get(r, ()))) for r in rooms]
        weights = [1 / (i + 1) ** 0.8 for i in range(len(rooms))]
        rng.shuffle(weights)
        self.room_weights = weights
        self.kinds = list(KIND_WEIGHTS)
        self.kind_weights = list(KIND_WEIGHTS.values())

    # -- pieces ---------------------------------------------------------------------------

    def _event_id(self) -> str:
        return "$" + base64.urlsafe_b64encode(self.rng.randbytes(32)).decode().rstrip("=")

    def _text(self) -> str:
        rng = self.rng
        (_, lo, hi) = rng.choices(LENGTHS, weights=[w for w, _, _ in LENGTHS])[0]
        n = rng.randint(lo, hi)
        corpus = self.emoji if rng.random() < EMOJI_SHARE else self.plain
        start = rng.randrange(len(corpus) - n)
        text = corpus[start : start + n]
        return text if text.strip() else rng.choice(EMOJI)[:n] or "k"

    def _envelope(self, etype: str, room: _Room, sender: str, content: Any) -> dict[str, Any]:
        self.ts += self.rng.randint(1, 400)
        return {
            "type": etype,
            "room_id": room.room_id,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.ts,
            "event_id": self._event_id(),
            "unsigned": {"age": self.rng.randint(0, 250)},
        }

    def _message(self, room: _Room, phase: Phase) -> dict[str, Any]:
        rng = self.rng
        if room.agents and rng.random() < AGENT_SHARE:
            return self._agent_answer(room, phase)
        sender = rng.choice(room.members)
        body = self._text()
        content: dict[str, Any] = {"msgtype": "m.text", "body": body, "m.mentions": {}}
        if room.agents and rng.random() < MENTION_SHARE:
            agent_id, name = rng.choice(room.agents)
            body = f"{name}: {body}"
            content = {
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": f'<a href="https://matrix.to/#/{agent_id}">{escape(name)}</a>'
                f": {escape(body[len(name) + 2 :])}",
                "m.mentions": {"user_ids": [agent_id]},
            }
            phase.mentions += 1
        elif room.recent and rng.random() < REPLY_SHARE:
            parent_id, parent_sender, parent_body = rng.choice(room.recent)
            quoted = "\n".join(
                f"> {line}" for line in f"<{parent_sender}> {parent_body}".split("\n")
            )
            content = {
                "msgtype": "m.text",
                "body": f"{quoted}\n\n{body}",
                "format": "org.matrix.custom.html",
                "formatted_body": (
                    f'<mx-reply><blockquote><a href="https://matrix.to/#/{room.room_id}/'
                    f'{parent_id}">In reply to</a> <a href="https://matrix.to/#/{parent_sender}">'
                    f"{parent_sender}</a><br>{escape(parent_body)}</blockquote></mx-reply>"
                    f"{escape(body)}"
                ),
                "m.relates_to": {"m.in_reply_to": {"event_id": parent_id}},
                "m.mentions": {"user_ids": [parent_sender]},
            }
            if any(parent_sender == agent_id for agent_id, _ in room.agents):
                phase.mentions += 1
        elif rng.random() < HTML_SHARE:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = "<p>" + escape(body).replace("\n", "<br>") + "</p>"
        event = self._envelope("m.room.message", room, sender, content)
        room.recent.append((event["event_id"], sender, body))
        return event

    def _agent_answer(self, room: _Room, phase: Phase) -> dict[str, Any]:
        """An agent's answer as its puppet posts it: Markdown rendered to HTML, no mentions."""
        sender, _ = self.rng.choice(room.agents)
        body = self._text()
        content = {
            "msgtype": "m.text",
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": "<p>" + escape(body).replace("\n", "<br>") + "</p>",
        }
        event = self._envelope("m.room.message", room, sender, content)
        room.recent.append((event["event_id"], sender, body))
        phase.agent_messages += 1
        return event

    def _edit(self, room: _Room) -> dict[str, Any]:
        target, sender, _ = self.rng.choice(room.recent)
        body = self._text()
        content = {
            "msgtype": "m.text",
            "body": f"* {body}",
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        }
        return self._envelope("m.room.message", room, sender, content)

    def _redaction(self, room: _Room) -> dict[str, Any]:
        i = self.rng.randrange(len(room.recent))
        target, sender, _ = room.recent[i]
        del room.recent[i]  # nobody edits or replies to a deleted message
        by = sender if self.rng.random() < 0.8 else self.owner  # sometimes a moderator
        content: dict[str, Any] = {"redacts": target}
        if by != sender:
            content["reason"] = "spam"
        event = self._envelope("m.room.redaction", room, by, content)
        event["redacts"] = target  # room v11+: in content; Synapse also sends it on top
        return event

    def _membership(self, room: _Room) -> dict[str, Any]:
        user = self.rng.choice(room.members)
        if user in room.joined:
            room.joined.discard(user)
            content = {"membership": "leave"}
        else:
            room.joined.add(user)
            content = {"membership": "join", "displayname": user[1:].split(":")[0]}
        event = self._envelope("m.room.member", room, user, content)
        event["state_key"] = user
        return event

    def _state(self, room: _Room) -> dict[str, Any]:
        rng = self.rng
        etype = STATE_CYCLE[self.state_n % len(STATE_CYCLE)]
        self.state_n += 1
        if etype == "m.room.name":
            content: dict[str, Any] = {"name": f"{rng.choice(WORDS)} {rng.randint(1, 999)}"}
        elif etype == "m.room.join_rules":
            room.public = not room.public
            content = {"join_rule": "public" if room.public else "invite"}
        else:
            mods = rng.sample(room.members, min(len(room.members), rng.randint(0, 3)))
            content = {
                "users": {m: 50 for m in mods},
                "users_default": 0,
                "events": {
                    "m.room.name": 50,
                    "m.room.power_levels": 100,
                    "m.room.history_visibility": 100,
                    "m.room.canonical_alias": 50,
                    "m.room.avatar": 50,
                    "m.room.tombstone": 150,
                    "m.room.server_acl": 100,
                    "m.room.encryption": 100,
                },
                "events_default": 0,
                "state_default": 50,
                "ban": 50,
                "kick": 50,
                "redact": 50,
                "invite": 0,
                "historical": 100,
            }
        event = self._envelope(etype, room, self.owner, content)
        event["state_key"] = ""
        return event

    def _ephemeral(self) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            room = rng.choices(self.rooms, weights=self.room_weights)[0]
            if room.recent and rng.random() < 0.5:
                event_id = room.recent[-1][0]
                user = rng.choice(room.members)
                content = {event_id: {"m.read": {user: {"ts": self.ts}}}}
                out.append({"type": "m.receipt", "room_id": room.room_id, "content": content})
            else:
                typing = rng.sample(room.members, min(len(room.members), rng.randint(0, 2)))
                out.append(
                    {"type": "m.typing", "room_id": room.room_id, "content": {"user_ids": typing}}
                )
        return out

    # -- phases ---------------------------------------------------------------------------

    def phase(
        self,
        name: str,
        events: int,
        batch: int,
        txn_prefix: str,
        seal: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> Phase:
        """``events`` events in transactions of ``batch``, ids ``<txn_prefix>-00000001`` on.
        ``seal``: encrypts a transaction's events in place and returns what else its
        body carries (the to-device room keys; see e2ee.py)."""
        phase = Phase(name)
        for room in self.rooms:
            room.recent.clear()  # edits/redactions target only this phase's messages
        rng = self.rng
        n = 0
        while n < events:
            idx = len(phase.txns)
            size = min(batch, events - n)
            batch_events = []
            for _ in range(size):
                room = rng.choices(self.rooms, weights=self.room_weights)[0]
                kind = rng.choices(self.kinds, weights=self.kind_weights)[0]
                if kind in ("edit", "redaction") and not room.recent:
                    kind = "message"
                if kind == "message":
                    event = self._message(room, phase)
                    phase.message_txn[event["event_id"]] = idx
                elif kind == "edit":
                    event = self._edit(room)
                    phase.state_txn[event["content"]["m.relates_to"]["event_id"]] = idx
                elif kind == "redaction":
                    event = self._redaction(room)
                    phase.state_txn[event["redacts"]] = idx
                    phase.redacted.add(event["redacts"])
                elif kind == "membership":
                    event = self._membership(room)
                    if event["content"]["membership"] == "join":
                        phase.join_txn.setdefault((room.room_id, event["state_key"]), idx)
                else:
                    event = self._state(room)
                    kind = event["type"]
                phase.kinds[kind] += 1
                batch_events.append(event)
            ephemeral = self._ephemeral()
            extras = seal(batch_events) if seal is not None else {}
            body = json.dumps(
                {"events": batch_events, "ephemeral": ephemeral, **extras}, separators=(",", ":")
            ).encode()
            phase.txns.append(Txn(f"{txn_prefix}-{idx + 1:08d}", body, size))
            phase.events += size
            phase.ephemeral += len(ephemeral)
            phase.body_bytes += len(body)
            n += size
        return phase
