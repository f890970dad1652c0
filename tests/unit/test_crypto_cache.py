"""The crypto stores' shared cache (crypto/store.py), its pure part: bounded, and the
account it names as holding a session is one whose session it still keeps."""

from __future__ import annotations

from typing import Any, cast

from mautrix.crypto import InboundGroupSession
from mautrix.types import RoomID, SessionID

from daarion_bridge.crypto.store import CryptoCache, Lru

ROOM = RoomID("!room:localhost")


def session() -> InboundGroupSession:
    return cast(InboundGroupSession, object())


def test_the_least_recently_used_entry_goes_first() -> None:
    gone: list[str] = []
    lru: Lru[str, Any] = Lru(2, gone.append)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert gone == ["b"] and lru.keys() == ["a", "c"]


def test_an_entry_is_read_again_once_its_time_is_up() -> None:
    """Another bridge on the same database may have replaced it meanwhile."""
    now = [100.0]
    gone: list[str] = []
    lru: Lru[str, Any] = Lru(8, gone.append, ttl=30, clock=lambda: now[0])
    lru.put("a", 1)
    now[0] += 29.9
    assert lru.get("a") == 1
    now[0] += 0.2
    assert lru.get("a") is None
    assert gone == ["a"] and lru.keys() == []


def test_an_evicted_or_forgotten_session_has_no_holder() -> None:
    cache = CryptoCache(sessions=2)
    cache.keep_session(("@bot:x", ROOM, SessionID("s1")), session())
    cache.keep_session(("@sofia:x", ROOM, SessionID("s1")), session())
    assert cache.holder(ROOM, "s1") in {"@bot:x", "@sofia:x"}
    cache.keep_session(("@bot:x", ROOM, SessionID("s2")), session())  # evicts the bot's s1
    assert cache.holder(ROOM, "s1") == "@sofia:x"
    cache.drop_session(("@sofia:x", ROOM, SessionID("s1")))
    assert cache.holder(ROOM, "s1") is None
    assert cache.holder(ROOM, "s2") == "@bot:x"
    cache.forget_sessions("@sofia:x")
    assert cache.holder(ROOM, "s2") == "@bot:x"
    cache.forget_sessions()
    assert cache.holder(ROOM, "s2") is None and len(cache.sessions) == 0
