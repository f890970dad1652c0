"""Unit tests for bot commands: recognising `!daarion` in a message, parsing, who may do
what, the answers' text, and how translate_event carries a command. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daarion_bridge.commands import parse as commands
from daarion_bridge.commands.parse import (
    ADMIN,
    SPECS,
    USER,
    AgentHere,
    Command,
    Refuse,
    Run,
    Status,
    agents_text,
    decide,
    find_agent,
    help_text,
    level_of,
    microdao_ref,
    parse,
    status_text,
)
from daarion_bridge.config.roster import parse_roster
from daarion_bridge.policy.invites import command_invite_allowed
from daarion_bridge.translate.agents import AgentDirectory
from daarion_bridge.translate.commands import command_text
from daarion_bridge.translate.events import (
    AgentInvited,
    Membership,
    NewMessage,
    translate_event,
)

BOT = "@daarion:localhost"
ROOM = "!room:localhost"
ALICE = "@alice:localhost"
BOB = "@bob:localhost"
OWNER = "@owner:localhost"
SOFIA = "@agent-sofia:localhost"
CITY = "@agent-city:localhost"

ROSTER = parse_roster(
    Path("c.yaml"),
    {
        "microdaos": [{"external_id": "microdao:core", "name": "Core", "owner": OWNER}],
        "blueprints": [{"code": "bp", "model": "m"}],
        "agents": [
            {
                "external_id": "agent:sofia",
                "name": "Sofia Testova",
                "kind": "assistant",
                "blueprint": "bp",
                "microdao": "microdao:core",
                "owner": ALICE,
            },
            {
                "external_id": "agent:city",
                "name": "City Helper",
                "kind": "system",
                "blueprint": "bp",
            },
            {"external_id": "agent:twin-a", "name": "Twin", "kind": "node", "blueprint": "bp"},
            {"external_id": "agent:twin-b", "name": "twin", "kind": "node", "blueprint": "bp"},
        ],
    },  # fmt: skip
    domain="localhost",
    template="agent-{name}",
    bot_localpart="daarion",
)
SOFIA_SPEC, CITY_SPEC = ROSTER.by_mxid[SOFIA], ROSTER.by_mxid[CITY]
AGENTS = AgentDirectory(ROSTER)


def text(body: str, msgtype: str = "m.text", **extra: Any) -> dict[str, Any]:
    return {"msgtype": msgtype, "body": body, **extra}


# --- recognising a command -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("!daarion help", "help"),
        ("!daarion", ""),
        ("  !daarion   status  ", "status"),
        ("!DAARION Help", "Help"),  # phones capitalise
        ("!daarion\tinvite  agent:sofia", "invite  agent:sofia"),
        ("!daarion\nlink microdao:x", "link microdao:x"),
        ("!daarionx help", None),
        ("!daarion-help", None),
        ("please !daarion help", None),
        ("daarion help", None),
        ("", None),
    ],
)
def test_command_text(body: str, expected: str | None) -> None:
    assert command_text(text(body)) == expected


@pytest.mark.parametrize("msgtype", ["m.notice", "m.emote", "m.image", None])
def test_only_text_messages_are_commands(msgtype: str | None) -> None:
    assert command_text(text("!daarion help", msgtype)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [None, 5, ["!daarion"], {"x": 1}])
def test_body_that_is_not_a_string_is_no_command(body: Any) -> None:
    assert command_text({"msgtype": "m.text", "body": body}) is None


def test_an_edit_is_never_a_command() -> None:
    content = text(
        "* !daarion help",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "!daarion help"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        },
    )
    assert command_text(content) is None


def test_a_reply_with_the_legacy_fallback_is_a_command() -> None:
    relates = {"m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}
    body = "> <@bob:localhost> hello\n> there\n\n!daarion status"
    assert command_text(text(body, **relates)) == "status"
    # The fallback is only stripped from replies.
    assert command_text(text(body)) is None
    # A reply quoting a command is not one.
    assert command_text(text("> !daarion link x\n\nthanks", **relates)) is None


@pytest.mark.parametrize(
    ("text_", "command"),
    [
        ("", Command("help")),
        ("   ", Command("help")),
        ("help", Command("help")),
        ("STATUS", Command("status")),
        ("invite Sofia  Testova", Command("invite", ("Sofia", "Testova"))),
        ("link microdao:x", Command("link", ("microdao:x",))),
    ],
)
def test_parse(text_: str, command: Command) -> None:
    assert parse(text_) == command


def test_command_arg_joins_the_words() -> None:
    assert parse("invite Sofia Testova").arg == "Sofia Testova"


# --- who may do what -------------------------------------------------------------------

PERMISSIONS = {
    "@root:elsewhere.org": ADMIN,
    "@alice:localhost": ADMIN,
    "@muted:localhost": USER,
    "localhost": USER,
    "partner.org": USER,
}


@pytest.mark.parametrize(
    ("user", "permissions", "level"),
    [
        (ALICE, PERMISSIONS, ADMIN),  # by Matrix id
        (BOB, PERMISSIONS, USER),  # by domain
        ("@root:elsewhere.org", PERMISSIONS, ADMIN),
        ("@someone:elsewhere.org", PERMISSIONS, None),
        ("@x:PARTNER.org", PERMISSIONS, USER),  # domains ignore case
        ("@x:localhost.evil.org", PERMISSIONS, None),
        ("@x:evil.org", {"*": USER, "localhost": ADMIN}, USER),  # * is anyone
        (BOB, {"*": USER, "localhost": ADMIN}, ADMIN),  # a domain beats *
        (ALICE, {"localhost": ADMIN, ALICE: USER}, USER),  # a Matrix id beats its domain
        (BOB, {}, None),
        ("not-a-user-id", PERMISSIONS, None),
    ],
)
def test_level_of(user: str, permissions: dict[str, str], level: str | None) -> None:
    assert level_of(user, permissions) == level


def test_every_command_is_open_to_admins_and_users_get_all_but_link_and_unlink() -> None:
    for name, spec in SPECS.items():
        args = {"none": (), "one": ("x",), "rest": ("x", "y")}[spec.args]
        assert isinstance(decide(Command(name, args), ADMIN), Run), name
        user = decide(Command(name, args), USER)
        if name in ("link", "unlink"):
            assert isinstance(user, Refuse), name
            assert user.text == f"!daarion {name} needs the admin level; you have user."
        else:
            assert isinstance(user, Run) and user.spec is spec, name


def test_no_level_may_use_nothing_not_even_help() -> None:
    for name in [*SPECS, "frobnicate"]:
        decision = decide(Command(name), None)
        assert isinstance(decision, Refuse)
        assert "may not use" in decision.text and "bridge.permissions" in decision.text


def test_unknown_command_is_one_line_that_names_it() -> None:
    decision = decide(Command("frobnicate"), USER)
    assert decision == Refuse("Unknown command 'frobnicate'. Say !daarion help for the list.")


def test_unknown_command_word_is_shown_short_and_printable() -> None:
    decision = decide(Command("x\u202e\u0000" + "y" * 100), ADMIN)
    assert isinstance(decision, Refuse)
    assert "\n" not in decision.text and "\u202e" not in decision.text
    assert "\u0000" not in decision.text
    assert len(decision.text) < 100


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (Command("status", ("now",)), "Usage: !daarion status"),
        (Command("link"), "Usage: !daarion link <microdao>"),
        (Command("link", ("a", "b")), "Usage: !daarion link <microdao>"),
        (Command("invite"), "Usage: !daarion invite <agent>"),
        (Command("unlink", ("x",)), "Usage: !daarion unlink"),
    ],
)
def test_wrong_arguments_get_the_usage(command: Command, usage: str) -> None:
    assert decide(command, ADMIN) == Refuse(usage)


def test_rights_are_checked_before_arguments() -> None:
    assert "needs the admin level" in decide(Command("link"), USER).text  # type: ignore[union-attr]


def test_help_lists_what_the_level_may_use() -> None:
    admin, user = help_text(ADMIN), help_text(USER)
    for name in SPECS:
        assert f"!daarion {SPECS[name].usage}" in admin
    assert "!daarion link" not in user and "!daarion unlink" not in user
    for name in ("help", "status", "agents", "invite"):
        assert f"!daarion {SPECS[name].usage}" in user


@pytest.mark.parametrize(
    ("arg", "ref"),
    [
        ("microdao:core", "microdao:core"),
        ("core", "microdao:core"),
        ("my-dao-7", "microdao:my-dao-7"),
        ("Core", None),
        ("microdao:", None),
        ("agent:sofia", None),
        ("micro dao", None),
    ],
)
def test_microdao_ref(arg: str, ref: str | None) -> None:
    assert microdao_ref(arg) == ref


@pytest.mark.parametrize(
    ("ref", "external_id"),
    [
        ("agent:sofia", "agent:sofia"),
        ("sofia", "agent:sofia"),
        (SOFIA, "agent:sofia"),
        ("Sofia Testova", "agent:sofia"),
        ("sofia testova", "agent:sofia"),
        ("city helper", "agent:city"),
        ("twin", None),  # two agents have that name
        ("agent:twin-a", "agent:twin-a"),
        ("agent:nobody", None),
        ("Sofia", None),  # not her whole name
    ],
)
def test_find_agent(ref: str, external_id: str | None) -> None:
    found = find_agent(ref, ROSTER.agents)
    assert (found.external_id if found else None) == external_id


@pytest.mark.parametrize(
    ("level", "user", "agent", "role", "visibility", "ours", "allowed"),
    [
        (ADMIN, BOB, SOFIA_SPEC, None, "private", True, True),  # a bridge admin: any agent
        (ADMIN, "@root:far.org", SOFIA_SPEC, None, "private", False, True),
        (USER, ALICE, SOFIA_SPEC, None, "private", True, True),  # the agent's owner
        (USER, BOB, SOFIA_SPEC, "admin", "private", True, True),  # its microDAO's admin
        (USER, BOB, SOFIA_SPEC, "member", "private", True, False),  # member: open rooms
        (USER, BOB, SOFIA_SPEC, "member", "public", True, True),
        (USER, BOB, SOFIA_SPEC, None, "public", True, False),  # not in its microDAO
        (USER, BOB, CITY_SPEC, None, "public", True, True),  # the city's agent: open rooms
        (USER, BOB, CITY_SPEC, None, "microdao", True, True),
        (USER, BOB, CITY_SPEC, None, "private", True, False),
        (USER, BOB, CITY_SPEC, None, None, True, False),
        # Another server's user, without allow_federated_invites: as for their invites.
        (USER, "@x:far.org", CITY_SPEC, None, "public", False, False),
    ],
)
def test_may_invite_is_the_users_own_right(
    level: str,
    user: str,
    agent: Any,
    role: str | None,
    visibility: str | None,
    ours: bool,
    allowed: bool,
) -> None:
    assert command_invite_allowed(level, user, agent, role, visibility, ours, True) is allowed
    # Whoever lacks the room's invite level may bring no one: the bot lends no power.
    assert not command_invite_allowed(level, user, agent, role, visibility, ours, False)


def test_stale_commands() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert not commands.is_stale(now - timedelta(minutes=4, seconds=59), now)
    assert commands.is_stale(now - timedelta(minutes=5, seconds=1), now)
    text_ = commands.stale_text(now - timedelta(minutes=12, seconds=30), now)
    assert "12 min ago" in text_ and "\n" not in text_


# --- answers -----------------------------------------------------------------------------


def test_status_text_all_well() -> None:
    out = status_text(Status(None, 12.4, None, "connected", 3))
    assert out.splitlines() == [
        "Bridge status:",
        "  Homeserver: reachable (12 ms)",
        "  Database: reachable",
        "  NATS: connected",
        "  Outbox backlog: 3 event(s) not yet published",
        "  Encryption: off",
    ]
    with_crypto = Status(None, 1, None, "off", 0, "on: 2 of 2 devices ready")
    assert status_text(with_crypto).splitlines()[-1] == "  Encryption: on: 2 of 2 devices ready"


def test_status_text_all_down() -> None:
    out = status_text(Status("ClientConnectorError", None, "TimeoutError", "not connected", None))
    assert "Homeserver: NOT reachable (ClientConnectorError)" in out
    assert "Database: NOT reachable (TimeoutError)" in out
    assert "NATS: NOT connected (events wait in the outbox)" in out
    assert "Outbox backlog: unknown" in out
    assert "NATS: off" in status_text(Status(None, 1, None, "off", 0))


def test_agents_text() -> None:
    out = agents_text(
        [AgentHere(SOFIA_SPEC, True, "active"), AgentHere(CITY_SPEC, False, None)]
    ).splitlines()
    assert out == [
        "Agents:",
        "  Sofia Testova (agent:sofia): in this room, session active",
        "  City Helper (agent:city): not in this room, no open session here",
    ]
    assert agents_text([]).startswith("No agents are configured")


# --- in translate_event ----------------------------------------------------------------


def message(body: str, sender: str = ALICE, msgtype: str = "m.text", **content: Any) -> Any:
    event = {
        "type": "m.room.message",
        "room_id": ROOM,
        "event_id": "$cmd",
        "sender": sender,
        "origin_server_ts": 1_732_530_000_123,
        "content": {"msgtype": msgtype, "body": body, **content},
    }
    return translate_event(event, bot_mxid=BOT, preview_length=100, agents=AGENTS)


def test_a_persons_command_is_carried_and_indexed_like_any_message() -> None:
    op = message("!daarion invite Sofia Testova")
    assert isinstance(op, NewMessage)
    assert op.command == "invite Sofia Testova"
    assert op.preview == "!daarion invite Sofia Testova"
    # A command is for the bridge: the agents it names are not mentioned (no invoke).
    assert op.mentions == ()
    assert "command=" not in repr(op), "the command field stays out of reprs"


def test_plain_messages_carry_no_command() -> None:
    op = message("Sofia Testova, hello")
    assert isinstance(op, NewMessage) and op.command is None
    assert op.mentions == (SOFIA,)


@pytest.mark.parametrize("sender", [BOT, SOFIA, CITY])
def test_the_bot_and_agents_never_give_commands(sender: str) -> None:
    op = message("!daarion link microdao:core", sender=sender)
    assert isinstance(op, NewMessage)
    assert op.command is None


def test_the_bots_answers_mention_no_agent() -> None:
    op = message("Agents:\n  Sofia Testova (agent:sofia): in this room", BOT, "m.notice")
    assert isinstance(op, NewMessage)
    assert op.mentions == () and op.command is None
    # The same text from a person mentions her.
    assert message("Sofia Testova (agent:sofia): in this room").mentions == (SOFIA,)


def test_a_sticker_is_no_command() -> None:
    event = {
        "type": "m.sticker",
        "room_id": ROOM,
        "event_id": "$s",
        "sender": ALICE,
        "origin_server_ts": 1,
        "content": {"msgtype": "m.text", "body": "!daarion help", "url": "mxc://x/y"},
    }
    op = translate_event(event, bot_mxid=BOT, preview_length=100, agents=AGENTS)
    assert isinstance(op, NewMessage) and op.command is None


def invite(agent: str, sender: str) -> Any:
    event = {
        "type": "m.room.member",
        "room_id": ROOM,
        "event_id": "$inv",
        "sender": sender,
        "state_key": agent,
        "origin_server_ts": 1_732_530_000_123,
        "content": {"membership": "invite"},
    }
    return translate_event(event, bot_mxid=BOT, preview_length=100, agents=AGENTS)


def test_an_agent_invited_by_the_bot_is_membership_news_not_an_invite_to_decide() -> None:
    """The bot invites an agent only on an `invite` command whose user's rights were
    checked, and the command joins the puppet; the puppet's invite rules (which would
    refuse the bot) must not make it leave again."""
    op = invite(SOFIA, BOT)
    assert isinstance(op, Membership)
    assert (op.user_id, op.membership) == (SOFIA, "invite")
    # Anyone else's invite is still the puppet's to decide.
    assert isinstance(invite(SOFIA, BOB), AgentInvited)
    assert isinstance(invite(SOFIA, "@daarion:elsewhere.org"), AgentInvited)
