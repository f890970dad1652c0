"""The benchmark's encrypted workload (bench/e2ee.py), opened with python-olm as a device
of the bridge would: every room key arrives over Olm no later than the first message of
its session, and every sealed message decrypts to the plain workload's event. Pure."""

from __future__ import annotations

import json
from typing import Any

import olm

from bench.e2ee import MEGOLM, OLM, ROTATION_MSGS, TO_DEVICE, BridgeDevice, Sealer
from bench.encrypted import split
from bench.workload import Workload

ROOMS = [f"!r{i}:localhost" for i in range(4)]
SENDERS = [f"@u{i}:localhost" for i in range(12)]
BOT = "@daarion:localhost"


def _phase(sealer: Sealer | None) -> list[dict[str, Any]]:
    wl = Workload(ROOMS, SENDERS, "@owner:localhost", seed=5, start_ts=0)
    phase = wl.phase("p", 1500, 50, "t", sealer.seal if sealer is not None else None)
    return [json.loads(t.body) for t in phase.txns]


def test_sealed_messages_decrypt_with_the_room_keys_sent_to_the_bridge_device() -> None:
    account = olm.Account()
    account.generate_one_time_keys(len(SENDERS))
    otks = list(account.one_time_keys["curve25519"].values())
    device = BridgeDevice(
        BOT, "DAARIONX", account.identity_keys["curve25519"], account.identity_keys["ed25519"]
    )
    # the bot is in every room; one key per sender that will talk to it
    sealer = Sealer(SENDERS, {r: [device] for r in ROOMS}, {(BOT, "DAARIONX"): otks})
    sealed, plain = _phase(sealer), _phase(None)

    olm_sessions: dict[str, olm.InboundSession] = {}
    groups: dict[str, olm.InboundGroupSession] = {}
    opened = keys = top_index = 0
    for body, same in zip(sealed, plain, strict=True):
        for event in body.get(TO_DEVICE, []):
            assert (event["to_user_id"], event["to_device_id"]) == (BOT, "DAARIONX")
            content = event["content"]
            assert content["algorithm"] == OLM
            sender_key = content["sender_key"]
            cipher = content["ciphertext"][device.curve25519]
            message = olm.OlmPreKeyMessage(cipher["body"])  # the bridge never answers
            if sender_key not in olm_sessions:
                olm_sessions[sender_key] = olm.InboundSession(account, message, sender_key)
                account.remove_one_time_keys(olm_sessions[sender_key])
            payload = json.loads(olm_sessions[sender_key].decrypt(message))
            assert payload["type"] == "m.room_key"
            assert payload["sender"] == event["sender"]
            assert payload["recipient"] == BOT
            assert payload["recipient_keys"] == {"ed25519": device.ed25519}
            key = payload["content"]
            assert key["algorithm"] == MEGOLM and key["room_id"] in ROOMS
            groups[key["session_id"]] = olm.InboundGroupSession(key["session_key"])
            keys += 1
        assert body["ephemeral"] == same["ephemeral"]
        for event, original in zip(body["events"], same["events"], strict=True):
            if event["type"] != "m.room.encrypted":
                assert event == original  # redactions, membership, state: plain
                continue
            content = event["content"]
            assert content["algorithm"] == MEGOLM
            # the key came in this transaction or an earlier one
            text, index = groups[content["session_id"]].decrypt(content["ciphertext"])
            top_index = max(top_index, index)
            inner = json.loads(text)
            assert inner["room_id"] == event["room_id"] == original["room_id"]
            assert inner["type"] == original["type"] == "m.room.message"
            relates = original["content"].get("m.relates_to")
            assert content.get("m.relates_to") == relates  # left outside, as Element does
            assert {**inner["content"], **({"m.relates_to": relates} if relates else {})} == (
                original["content"]
            )
            assert {k: v for k, v in event.items() if k not in ("type", "content")} == {
                k: v for k, v in original.items() if k not in ("type", "content")
            }
            opened += 1
    assert opened == sealer.counts.encrypted > 1000
    assert keys == sealer.counts.room_keys == sealer.counts.megolm_sessions
    assert len(olm_sessions) == sealer.counts.olm_sessions <= len(SENDERS)
    # a busy sender's session serves 100 messages, then a new one (and its key) follows
    assert top_index == ROTATION_MSGS - 1


def test_the_split_recovers_what_a_message_and_a_room_key_cost() -> None:
    per_txn = [(85, 0), (80, 4), (90, 12), (84, 1), (70, 20)]
    latencies = [(3.0 + 0.5 * m + 2.0 * k) / 1000 for m, k in per_txn]  # seconds
    assert split(latencies, per_txn, plain_mean_ms=3.0) == {
        "fit_ms_per_decrypted_message": 0.5,
        "fit_ms_per_room_key": 2.0,
    }
