"""Unit tests for agents in events: mentions, who may invite an agent, agent invites and
the loop rule in translate_event, space parents in room snapshots, and the idle sweep's
interval. Pure: no I/O."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from daarion_bridge.config.roster import AgentSpec, Roster, parse_roster
from daarion_bridge.db.maintenance import sweep_interval
from daarion_bridge.policy.invites import agent_invite_allowed
from daarion_bridge.translate import agents as agents_module
from daarion_bridge.translate.agents import (
    AgentDirectory,
    LiveDirectory,
    trie_pattern,
)
from daarion_bridge.translate.events import (
    AgentInvited,
    BotInvited,
    EditMessage,
    Membership,
    NewMessage,
    translate_event,
)
from daarion_bridge.translate.preview import reply_fallback_sender
from daarion_bridge.translate.rooms import Access, snapshot_from_state

BOT = "@daarion:localhost"
ROOM = "!core:localhost"
ALICE, BOB = "@alice:localhost", "@bob:localhost"
SOFIA = "@agent-sofia:localhost"
PRIME = "@agent-prime:localhost"
HELPER = "@helper:localhost"


def roster(*agents: tuple[str, str, dict[str, Any]]) -> Roster:
    raw = {
        "microdaos": [{"external_id": "microdao:7", "name": "Core", "owner": ALICE}],
        "blueprints": [{"code": "bp", "model": "m"}],
        "agents": [
            {"external_id": ext, "name": name, "kind": "assistant", "blueprint": "bp", **extra}
            for ext, name, extra in agents
        ],
    }
    return parse_roster(
        Path("c.yaml"), raw, domain="localhost", template="agent-{name}", bot_localpart="daarion"
    )


ROSTER = roster(
    ("agent:sofia", "Sofia", {}),
    ("agent:prime", "Sofia Prime", {}),
    ("agent:helper", "R2.D2", {"localpart": "helper"}),
)
AGENTS = AgentDirectory(ROSTER)


def mentioned(**content: Any) -> tuple[str, ...]:
    return AGENTS.mentioned(content)


# --- mentions ---------------------------------------------------------------------


def test_directory_knows_the_configured_agents() -> None:
    assert SOFIA in AGENTS and PRIME in AGENTS and HELPER in AGENTS
    assert ALICE not in AGENTS and BOT not in AGENTS
    assert "@agent-nobody:localhost" not in AGENTS


def test_m_mentions_user_ids() -> None:
    ids = {"user_ids": [ALICE, SOFIA, "@agent-nobody:localhost", 5, None, HELPER]}
    assert mentioned(body="no names here", **{"m.mentions": ids}) == (SOFIA, HELPER)


@pytest.mark.parametrize("value", [None, "x", 5, [SOFIA], {"user_ids": SOFIA}, {"room": True}])
def test_malformed_m_mentions_are_ignored(value: Any) -> None:
    assert mentioned(body="hello", **{"m.mentions": value}) == ()


def test_matrix_id_in_the_body() -> None:
    assert mentioned(body=f"{SOFIA}: where is the museum?") == (SOFIA,)
    assert mentioned(body=f"ask {HELPER}.") == (HELPER,)


def test_pill_in_formatted_body() -> None:
    # The link text is neither agent's name: only the Matrix id in the href counts.
    pill = f'<a href="https://matrix.to/#/{HELPER}">the droid</a> hi'
    assert mentioned(body="the droid hi", formatted_body=pill) == (HELPER,)


@pytest.mark.parametrize(
    "body",
    ["Sofia, hi", "hi sofia", "HEY SOFIA!", "(sofia)", "sofia's map", "«Sofia»", "sofia\nnext"],
)
def test_display_name_as_a_whole_word_any_case(body: str) -> None:
    assert mentioned(body=body) == (SOFIA,)


@pytest.mark.parametrize(
    "body", ["Sofiana", "asofia", "sofia_bot", "sofia2", "sofiaprime", "philosofia", "so fia"]
)
def test_display_name_inside_another_word_is_not_a_mention(body: str) -> None:
    assert mentioned(body=body) == ()


def test_longer_name_wins_over_its_prefix() -> None:
    assert mentioned(body="Sofia Prime, plan my day") == (PRIME,)
    assert set(mentioned(body="sofia and sofia prime")) == {SOFIA, PRIME}


def test_name_with_regex_characters_is_literal() -> None:
    assert mentioned(body="r2.d2 come here") == (HELPER,)
    assert mentioned(body="R2xD2 come here") == ()


def test_each_agent_once_in_order_of_m_mentions_then_text() -> None:
    found = mentioned(
        body=f"Sofia, {SOFIA}, R2.D2",
        formatted_body=f'<a href="https://matrix.to/#/{SOFIA}">Sofia</a>',
        **{"m.mentions": {"user_ids": [HELPER, HELPER]}},
    )
    assert found == (HELPER, SOFIA)


def test_a_reply_fallback_quoting_a_mention_is_not_one() -> None:
    """Older clients prepend the parent to a reply (`> <@bob> Sofia, ...` and an
    `<mx-reply>` block): the quote is Bob's mention, not the replier's."""
    reply = {"m.in_reply_to": {"event_id": "$parent"}}
    quoted = f"> <{BOB}> Sofia, where is it?\n> and {PRIME}?\n\nthanks, found it"
    html = (
        f'<mx-reply><blockquote><a href="https://matrix.to/#/{BOB}">{BOB}</a><br>'
        f'Sofia, <a href="https://matrix.to/#/{PRIME}">p</a>?</blockquote></mx-reply>thanks'
    )
    assert mentioned(body=quoted, formatted_body=html, **{"m.relates_to": reply}) == ()
    # What the replier writes after the quote still counts; without m.in_reply_to a
    # leading quote is the sender's own text.
    assert mentioned(body=quoted + ", R2.D2", **{"m.relates_to": reply}) == (HELPER,)
    assert mentioned(body=quoted) == (SOFIA, PRIME)
    assert mentioned(formatted_body=html + " sofia", **{"m.relates_to": reply}) == (SOFIA,)


def test_a_legacy_reply_to_an_agent_mentions_it() -> None:
    """A client without intentional mentions addresses the parent's sender through its
    fallback's `> <@sender>`; a client with m.mentions says whom it mentions itself."""
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}
    fallback = f"> <{SOFIA}> it is in the drawer\n\nthanks"
    assert mentioned(body=fallback, **reply) == (SOFIA,)
    assert mentioned(body=fallback + ", R2.D2", **reply) == (SOFIA, HELPER)
    assert mentioned(body=fallback, **reply, **{"m.mentions": {}}) == ()
    assert mentioned(body=fallback, **reply, **{"m.mentions": {"user_ids": [SOFIA]}}) == (SOFIA,)
    assert mentioned(body=f"> <{BOB}> Sofia?\n\nthanks", **reply) == ()  # a person's message


@pytest.mark.parametrize(
    ("body", "sender"),
    [
        ("> <@a:b> hi", "@a:b"),
        ("> <@a:b>", "@a:b"),
        ("> <@a b> hi", None),
        ("> <@a:b hi", None),
        ("> <> hi", None),
        ("> @a:b hi", None),
        ("<@a:b> hi", None),
    ],
)
def test_reply_fallback_sender(body: str, sender: str | None) -> None:
    assert reply_fallback_sender(body) == sender


def test_mentions_among_a_rooms_agents() -> None:
    """In a room, as if only its agents were configured: a name that is the start of a
    longer one is its own when the longer one's agent is elsewhere."""
    body = {"body": "Sofia Prime, and R2.D2?"}
    assert AGENTS.mentioned(body) == (PRIME, HELPER)
    assert AGENTS.mentioned(body, among={SOFIA}) == (SOFIA,)
    assert AGENTS.mentioned(body, among={PRIME, SOFIA}) == (PRIME,)
    assert AGENTS.mentioned(body, among={HELPER, BOB}) == (HELPER,)
    assert AGENTS.mentioned(body, among=()) == ()
    assert AGENTS.mentioned(body, among={BOB}) == ()
    explicit = {"body": "hi", "m.mentions": {"user_ids": [PRIME, HELPER]}}
    assert AGENTS.mentioned(explicit, among={HELPER}) == (HELPER,)
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}
    fallback = {"body": f"> <{SOFIA}> it is in the drawer\n\nthanks", **reply}
    assert AGENTS.mentioned(fallback, among={PRIME}) == ()
    assert AGENTS.mentioned(fallback, among={SOFIA}) == (SOFIA,)


def test_of_two_agents_with_one_name_a_room_means_its_own() -> None:
    twins = AgentDirectory(roster(("agent:a", "Vega", {}), ("agent:b", "Vega", {})))
    a, b = "@agent-a:localhost", "@agent-b:localhost"
    assert twins.mentioned({"body": "Vega?"}) == (a,)
    assert twins.mentioned({"body": "Vega?"}, among={b}) == (b,)


def test_the_rooms_searches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents_module, "_MAX_ROOM_PATTERNS", 2)
    directory = AgentDirectory(ROSTER)
    rooms = [{SOFIA}, {PRIME}, {HELPER}, {SOFIA, HELPER}, {SOFIA}]
    found = [directory.mentioned({"body": "Sofia, R2.D2"}, among=r) for r in rooms]
    assert found == [(SOFIA,), (), (HELPER,), (SOFIA, HELPER), (SOFIA,)]
    assert directory._room_search.cache_info().currsize <= 2


def test_a_full_cache_of_rooms_searches_drops_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A city with more sets of agents than the cache holds keeps its busy rooms' sets."""
    monkeypatch.setattr(agents_module, "_MAX_ROOM_PATTERNS", 2)
    directory = AgentDirectory(ROSTER)
    busy, quiet, new = frozenset({SOFIA}), frozenset({PRIME}), frozenset({HELPER})
    kept = directory._room_search(busy)
    directory._room_search(quiet)
    assert directory._room_search(busy) is kept  # used again: now the most recent
    directory._room_search(new)  # the cache is full: `quiet` goes
    assert directory._room_search(busy) is kept
    assert directory._room_search.cache_info().misses == 3  # busy, quiet, new


def test_other_content_keys_are_not_searched() -> None:
    assert mentioned(body="hi", filename="sofia.png", url="mxc://x/sofia") == ()


def test_empty_directory_finds_nothing() -> None:
    content = {"body": "Sofia", "m.mentions": {"user_ids": [SOFIA]}}
    assert AgentDirectory.empty().mentioned(content) == ()
    assert SOFIA not in AgentDirectory.empty()


def test_name_with_a_sharp_s_matches_its_own_spelling() -> None:
    """Matched text is looked up by casefold(); 'ß'.casefold() is 'ss', so a name whose
    case folding changes its length never finds itself."""
    directory = AgentDirectory(roster(("agent:gauss", "Gauß", {})))
    assert directory.mentioned({"body": "Gauß, bitte rechnen"}) == ("@agent-gauss:localhost",)


def test_a_longer_matrix_id_of_another_user_is_not_a_mention() -> None:
    """`@helper:localhost.evil.org` and `@helper:localhost:8448` are other users."""
    for other in (f"{HELPER}.evil.org", f"{HELPER}:8448"):
        assert mentioned(body=f"hello {other}") == (), other


def test_live_directory_swaps_whole() -> None:
    live = LiveDirectory(Roster())
    before = live.current
    assert live.current.mentioned({"body": "Sofia"}) == ()
    live.replace(ROSTER)
    assert live.current is not before
    assert live.current.mentioned({"body": "Sofia"}) == (SOFIA,)
    assert before.mentioned({"body": "Sofia"}) == ()  # an old directory is never edited


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
TEXT = st.text() | st.lists(
    st.sampled_from(["Sofia", "sofia", "Prime", SOFIA, HELPER, "R2.D2", "ß", "İ", " ", "_",
                     "\x00", "\ud800", "<a href=", "\n", "é"]),
    max_size=10,
).map("".join)  # fmt: skip
CONTENT = st.fixed_dictionaries(
    {},
    optional={
        "body": TEXT | JSON,
        "formatted_body": TEXT | JSON,
        "m.mentions": JSON
        | st.fixed_dictionaries({"user_ids": st.lists(st.sampled_from([SOFIA, ALICE, 1]) | JSON)}),
    },
)


@settings(max_examples=300, deadline=None)
@given(CONTENT)
def test_mentioned_never_raises_and_finds_only_agents(content: dict[str, Any]) -> None:
    found = AGENTS.mentioned(content)
    assert isinstance(found, tuple)
    assert len(set(found)) == len(found)
    assert all(mxid in AGENTS for mxid in found)


WORDS = st.text(alphabet="abcdefghij ,.!?-", max_size=20)


@settings(max_examples=200, deadline=None)
@given(WORDS, WORDS, st.lists(st.booleans(), min_size=5, max_size=5))
def test_name_between_separators_is_always_found(
    before: str, after: str, upper: list[bool]
) -> None:
    name = "".join(c.upper() if u else c for c, u in zip("sofia", upper, strict=True))
    found = AGENTS.mentioned({"body": f"{before} {name} {after}"})
    assert SOFIA in found or PRIME in found  # "sofia prime" may follow in `after`


# --- who may invite an agent ------------------------------------------------------


def spec(owner: str | None = None, microdao: str | None = None) -> AgentSpec:
    return AgentSpec(
        external_id="agent:x",
        name="X",
        kind="assistant",
        blueprint="bp",
        matrix_id="@agent-x:localhost",
        microdao=microdao,
        owner=owner,
    )


ROLES = (None, "owner", "admin", "member", "guest")
VISIBILITIES = (None, "private", "microdao", "public")
DAO = "microdao:7"

INVITE_CASES = [
    # agent's owner and microDAO, inviter, the inviter's role in that microDAO, visibility
    ((ALICE, DAO), ALICE, None, "private", True),
    ((ALICE, DAO), BOB, "owner", "private", True),
    ((ALICE, DAO), BOB, "admin", None, True),
    ((ALICE, DAO), BOB, "member", "private", False),
    ((ALICE, DAO), BOB, "member", None, False),
    ((ALICE, DAO), BOB, "member", "public", True),
    ((ALICE, DAO), BOB, "member", "microdao", True),
    ((ALICE, DAO), BOB, "guest", "public", False),
    ((ALICE, DAO), BOB, None, "public", False),
    ((None, DAO), BOB, "member", "public", True),
    ((None, DAO), BOB, None, "public", False),
    ((None, DAO), BOB, "admin", "private", True),
    ((ALICE, None), ALICE, None, None, True),
    ((ALICE, None), BOB, None, "public", False),
    ((ALICE, None), BOB, "owner", "public", False),  # no microDAO: a role means nothing
    ((None, None), BOB, None, "public", True),
    ((None, None), BOB, None, "microdao", True),
    ((None, None), BOB, None, "private", False),
    ((None, None), BOB, None, None, False),
]


@pytest.mark.parametrize(("agent", "inviter", "role", "visibility", "allowed"), INVITE_CASES)
def test_agent_invite_allowed(
    agent: tuple[str | None, str | None],
    inviter: str,
    role: str | None,
    visibility: str | None,
    allowed: bool,
) -> None:
    owner, microdao = agent
    assert agent_invite_allowed(inviter, spec(owner, microdao), role, visibility) is allowed


@pytest.mark.parametrize(
    ("owner", "microdao"), [(ALICE, DAO), (ALICE, None), (None, DAO), (None, None)]
)
def test_invite_rules_are_monotonic(owner: str | None, microdao: str | None) -> None:
    """The owner always may; what is allowed into a private room is allowed into an open
    one; what a member may, an admin and an owner may too."""
    agent = spec(owner, microdao)
    for role, visibility in itertools.product(ROLES, VISIBILITIES):
        if owner is not None:
            assert agent_invite_allowed(owner, agent, role, visibility)
        if agent_invite_allowed(BOB, agent, role, "private"):
            assert agent_invite_allowed(BOB, agent, role, "public")
            assert agent_invite_allowed(BOB, agent, role, "microdao")
        if agent_invite_allowed(BOB, agent, "member", visibility):
            assert agent_invite_allowed(BOB, agent, "admin", visibility)
            assert agent_invite_allowed(BOB, agent, "owner", visibility)
        if agent_invite_allowed(BOB, agent, None, visibility) and microdao is not None:
            assert agent_invite_allowed(BOB, agent, "member", visibility)


# --- translate_event with agents ----------------------------------------------------


def event(etype: str, content: Any, sender: str = ALICE, **extra: Any) -> dict[str, Any]:
    return {
        "type": etype,
        "room_id": ROOM,
        "event_id": "$ev",
        "sender": sender,
        "origin_server_ts": 1_732_530_000_123,
        "content": content,
        **extra,
    }


def invite(user: str, sender: str = ALICE, **extra: Any) -> dict[str, Any]:
    return event("m.room.member", {"membership": "invite"}, sender, state_key=user, **extra)


def translate(ev: dict[str, Any], agents: AgentDirectory | None = AGENTS) -> Any:
    if agents is None:
        return translate_event(ev, bot_mxid=BOT, preview_length=100)
    return translate_event(ev, bot_mxid=BOT, preview_length=100, agents=agents)


def join_rules_state(rule: Any, allow: Any = None) -> dict[str, Any]:
    content = {"join_rule": rule} if allow is None else {"join_rule": rule, "allow": allow}
    return {"unsigned": {"invite_room_state": [
        {"type": "m.room.name", "state_key": "", "content": {"name": "Lobby"}},
        {"type": "m.room.join_rules", "state_key": "", "content": content},
    ]}}  # fmt: skip


SPACE_ALLOW = [{"type": "m.room_membership", "room_id": "!space:localhost"}]


@pytest.mark.parametrize(
    ("rule", "allow", "access"),
    [("public", None, Access("public")),
     ("restricted", SPACE_ALLOW, Access("restricted", ("!space:localhost",))),
     ("knock_restricted", SPACE_ALLOW, Access("knock_restricted", ("!space:localhost",))),
     ("restricted", None, Access("restricted")),
     ("invite", None, Access("invite")), ("knock", None, Access("knock")),
     (None, None, Access(None))],
)  # fmt: skip
def test_agent_invite_with_access_from_invite_room_state(
    rule: Any, allow: Any, access: Access
) -> None:
    op = translate(invite(SOFIA, BOB, **join_rules_state(rule, allow)))
    assert op == AgentInvited(ROOM, "$ev", SOFIA, BOB, access)


@pytest.mark.parametrize(
    "unsigned",
    [
        None,
        {},
        {"invite_room_state": None},
        {"invite_room_state": "x"},
        {"invite_room_state": [5, "x", {"type": "m.room.name", "content": {}}]},
        {"invite_room_state": [{"type": "m.room.join_rules", "content": "public"}]},
    ],
)
def test_agent_invite_without_join_rules_has_no_access(unsigned: Any) -> None:
    extra = {} if unsigned is None else {"unsigned": unsigned}
    op = translate(invite(HELPER, **extra))
    assert op == AgentInvited(ROOM, "$ev", HELPER, ALICE, None)


def test_invites_of_others_are_not_agent_invites() -> None:
    assert isinstance(translate(invite(BOT)), BotInvited)
    op = translate(invite(BOB))
    assert isinstance(op, Membership) and op.membership == "invite" and op.user_id == BOB
    # An agent's id in the namespace but not configured is only a membership.
    assert isinstance(translate(invite("@agent-nobody:localhost")), Membership)
    # Without a directory no one is an agent.
    assert isinstance(translate(invite(SOFIA), agents=None), Membership)


@pytest.mark.parametrize("membership", ["join", "leave", "ban"])
def test_agent_membership_other_than_invite(membership: str) -> None:
    op = translate(event("m.room.member", {"membership": membership}, SOFIA, state_key=SOFIA))
    assert isinstance(op, Membership)
    assert (op.user_id, op.membership) == (SOFIA, membership)


def text(body: str, sender: str = ALICE, **content: Any) -> dict[str, Any]:
    return event("m.room.message", {"msgtype": "m.text", "body": body, **content}, sender)


def test_human_message_carries_the_agents_it_mentions() -> None:
    op = translate(text("Sofia, ask R2.D2", **{"m.mentions": {"user_ids": [PRIME]}}))
    assert isinstance(op, NewMessage)
    assert op.mentions == (PRIME, SOFIA, HELPER)
    assert op.sender == ALICE


def test_agent_message_mentions_no_one_loop_rule() -> None:
    content = {"m.mentions": {"user_ids": [PRIME]}, "formatted_body": f"{HELPER}"}
    op = translate(text("Sofia Prime, R2.D2: over to you", sender=SOFIA, **content))
    assert isinstance(op, NewMessage)
    assert op.mentions == ()
    # The same content from a person does mention them.
    assert translate(text("Sofia Prime, R2.D2: over to you", **content)).mentions


def test_message_without_agents_directory_has_no_mentions() -> None:
    assert translate(text("Sofia!"), agents=None).mentions == ()


def test_edit_mentioning_an_agent_stays_an_edit() -> None:
    content = {
        "m.new_content": {"msgtype": "m.text", "body": "Sofia"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
    }
    assert isinstance(translate(text("* Sofia", **content)), EditMessage)


def test_redacted_message_mentions_no_one() -> None:
    ev = text("Sofia")
    ev["unsigned"] = {"redacted_because": {"type": "m.room.redaction"}}
    op = translate(ev)
    assert isinstance(op, NewMessage) and op.mentions == ()


# --- space parents in a room snapshot ---------------------------------------------


def state(etype: str, content: Any, key: str = "") -> dict[str, Any]:
    return {"type": etype, "state_key": key, "sender": ALICE, "content": content}


def test_space_parents_need_a_non_empty_via() -> None:
    snap = snapshot_from_state(
        ROOM,
        [
            state("m.room.create", {"room_version": "12"}),
            state("m.space.parent", {"via": ["localhost"], "canonical": True}, "!space1:localhost"),
            state("m.space.parent", {"via": []}, "!gone:localhost"),  # removed link
            state("m.space.parent", {}, "!novia:localhost"),
            state("m.space.parent", {"via": "localhost"}, "!strvia:localhost"),
            state("m.space.parent", {"via": ["localhost"]}, ""),  # no parent id
            state("m.space.child", {"via": ["localhost"]}, "!child:localhost"),
            state("m.space.parent", {"via": ["other.org"]}, "!space2:other.org"),
        ],
    )
    assert snap.space_parents == ("!space1:localhost", "!space2:other.org")


def test_no_space_parents_by_default() -> None:
    snap = snapshot_from_state(ROOM, [state("m.room.create", {"room_version": "12"})])
    assert snap.space_parents == ()


# --- the idle sweep's interval ----------------------------------------------------


@pytest.mark.parametrize(
    ("idle_after", "interval"), [(1, 1), (3, 1), (4, 1), (8, 2), (120, 30), (240, 60), (1800, 60)]
)
def test_sweep_interval(idle_after: float, interval: float) -> None:
    assert sweep_interval(idle_after) == interval


@given(st.floats(min_value=1, max_value=365 * 86400))
def test_sweep_interval_bounds(idle_after: float) -> None:
    interval = sweep_interval(idle_after)
    assert 1 <= interval <= 60
    if idle_after >= 4:  # a session turns idle at most a quarter of the timeout late
        assert interval <= idle_after / 4
    assert sweep_interval(idle_after * 2) >= interval


# A small alphabet, so that words often extend one another and texts often hold them.
_WORD = st.text(alphabet="abAB .:-é", min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    words=st.lists(_WORD, min_size=1, max_size=12), text=st.text(alphabet="abAB .:-é!", max_size=60)
)
def test_trie_pattern_matches_what_a_longest_first_alternation_matches(
    words: list[str], text: str
) -> None:
    """The mention pattern is a trie for speed; what it finds must be what the plain
    alternation, longest word first, finds: same spans, with the word edges around. Case
    counts (the directory lowercases both sides): under IGNORECASE two branches of the
    trie that differ only in case could both match, the shorter one first."""
    edges = r"(?<!\w)({})(?!\w|[.:-]\w)"
    flat = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    want = [m.span(1) for m in re.finditer(edges.format(flat), text)]
    got = [m.span(1) for m in re.finditer(edges.format(trie_pattern(words)), text)]
    assert got == want


def test_mentions_among_a_thousand_agents() -> None:
    """Names that extend one another (Agent 1, Agent 10, Agent 100) and Matrix ids."""
    many = roster(*((f"agent:n{i}", f"Agent {i}", {}) for i in range(1000)))
    directory = AgentDirectory(many)
    text = "ask agent 10, then Agent 100. and @agent-n7:localhost, not Agent 1000 or Agent 5x"
    assert directory.mentioned({"body": text}) == (
        "@agent-n10:localhost",
        "@agent-n100:localhost",
        "@agent-n7:localhost",
    )


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(_WORD.filter(lambda w: w.strip() == w and w.strip()), min_size=1, max_size=8),
    text=st.text(alphabet="abAB .:-é!x", max_size=60),
)
@example(names=["Vega", "Luma Vega"], text="xLuma Vega")  # a name inside a rejected match
def test_mentioned_finds_the_names_a_lookbehind_pattern_finds(names: list[str], text: str) -> None:
    """The directory checks a match's left word edge after the search (so `re` can skip to
    the letters a name starts with); it must find what the pattern with the edge inside
    finds, in the order of the text."""
    directory = AgentDirectory(roster(*((f"agent:n{i}", n, {}) for i, n in enumerate(names))))
    owner: dict[str, str] = {}
    for i, name in enumerate(names):
        owner.setdefault(name.lower(), f"@agent-n{i}:localhost")
    flat = "|".join(re.escape(w) for w in sorted(owner, key=len, reverse=True))
    edges = re.compile(rf"(?<!\w)({flat})(?!\w|[.:-]\w)")
    want = list(dict.fromkeys(owner[m.group(1)] for m in edges.finditer(text.lower())))
    assert directory.mentioned({"body": text}) == tuple(want)


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(_WORD.filter(lambda w: w.strip() == w and w.strip()), min_size=1, max_size=6),
    room=st.lists(st.booleans(), min_size=6, max_size=6),
    text=st.text(alphabet="abAB .:-é!x", max_size=60),
)
def test_a_rooms_mentions_are_those_of_a_city_of_its_agents(
    names: list[str], room: list[bool], text: str
) -> None:
    agents = [(f"agent:n{i}", name, {}) for i, name in enumerate(names)]
    here = [agent for agent, present in zip(agents, room, strict=False) if present]
    among = {f"@agent-n{ext.split(':n')[1]}:localhost" for ext, _, _ in here}
    want = AgentDirectory(roster(*here)).mentioned({"body": text}) if here else ()
    assert AgentDirectory(roster(*agents)).mentioned({"body": text}, among=among) == want
