"""Unit tests for the roster (microDAOs, blueprints, agents) in the config, the
bridge.agent_session_idle_after key, and the registration's agent namespace entries.

Pure: configs are built as dicts and parsed in memory, files only in tmp_path.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from daarion_bridge.config import Config, parse_config
from daarion_bridge.config.roster import (
    AGENT_KINDS,
    MEMBER_ROLES,
    Roster,
    agent_localpart,
    parse_roster,
)
from daarion_bridge.errors import ConfigError
from daarion_bridge.matrix.registration import (
    build_registration,
    check_registration,
    uncovered_users,
    user_namespace_regexes,
)

PATH = Path("/etc/daarion/config.yaml")
DOMAIN = "localhost"
TEMPLATE = "agent-{name}"
BOT = "daarion"


# --- builders --------------------------------------------------------------------


def microdao(external_id: str = "microdao:7", **extra: Any) -> dict[str, Any]:
    return {"external_id": external_id, "name": "DAARION Core", "owner": "@alice:localhost"} | extra


def blueprint(code: str = "sofia_prime", **extra: Any) -> dict[str, Any]:
    return {"code": code, "model": "gpt-4.1"} | extra


def agent(external_id: str = "agent:sofia", **extra: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "name": "Sofia",
        "kind": "assistant",
        "blueprint": "sofia_prime",
    } | extra


def raw_roster(
    agents: list[Any] | None = None,
    microdaos: list[Any] | None = None,
    blueprints: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "microdaos": [microdao()] if microdaos is None else microdaos,
        "blueprints": [blueprint()] if blueprints is None else blueprints,
        "agents": [agent()] if agents is None else agents,
    }


def parse(raw: dict[str, Any], template: str = TEMPLATE, bot: str = BOT) -> Roster:
    return parse_roster(PATH, raw, domain=DOMAIN, template=template, bot_localpart=bot)


def roster_error(raw: dict[str, Any], template: str = TEMPLATE, bot: str = BOT) -> str:
    """The one-line message, with the file name checked and stripped off."""
    with pytest.raises(ConfigError) as info:
        parse(raw, template, bot)
    message = str(info.value)
    assert "\n" not in message, message
    prefix = f"{PATH}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


def config_raw(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "homeserver": {"address": "http://localhost:8008", "domain": DOMAIN},
        "appservice": {
            "address": "http://localhost:29333",
            "as_token": "as-token-0123456789",
            "hs_token": "hs-token-0123456789",
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = raw[key] | value
        else:
            raw[key] = value
    return raw


def config_of(**sections: Any) -> Config:
    return parse_config(PATH, config_raw(**sections), environ={})


def config_error(environ: dict[str, str] | None = None, **sections: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(PATH, config_raw(**sections), environ=environ or {})
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{PATH}: "), message
    return message[len(f"{PATH}: ") :]


# --- a valid roster --------------------------------------------------------------


def test_full_roster_parses_every_field() -> None:
    raw = raw_roster(
        microdaos=[
            microdao(
                members={"@bob:localhost": "member", "@carol:localhost": "admin"},
                space="#core:localhost",
            )
        ],
        blueprints=[
            blueprint(description="City guide", capabilities={"tools": ["search", "summarize"]})
        ],
        agents=[
            agent(
                microdao="microdao:7",
                owner="@alice:localhost",
                avatar="mxc://localhost/abc",
                localpart="sofia",
            ),
            agent("agent:helper", name="  Helper  ", kind="system"),
        ],
    )
    roster = parse(raw)

    (dao,) = roster.microdaos
    assert (dao.external_id, dao.name, dao.owner, dao.space) == (
        "microdao:7",
        "DAARION Core",
        "@alice:localhost",
        "#core:localhost",
    )
    assert dict(dao.members) == {"@bob:localhost": "member", "@carol:localhost": "admin"}

    (bp,) = roster.blueprints
    assert (bp.code, bp.model, bp.description) == ("sofia_prime", "gpt-4.1", "City guide")
    assert bp.capabilities == {"tools": ["search", "summarize"]}

    sofia, helper = roster.agents
    assert sofia.external_id == "agent:sofia"
    assert sofia.matrix_id == "@sofia:localhost"  # localpart overrides the template
    assert sofia.localpart == "sofia"
    assert (sofia.microdao, sofia.owner, sofia.avatar) == (
        "microdao:7",
        "@alice:localhost",
        "mxc://localhost/abc",
    )
    assert helper.matrix_id == "@agent-helper:localhost"  # from the template
    assert helper.name == "Helper"  # surrounding blanks are not part of the display name
    assert (helper.kind, helper.microdao, helper.owner, helper.avatar) == (
        "system",
        None,
        None,
        None,
    )
    assert roster.agent("@sofia:localhost") is sofia
    assert roster.agent("@agent-helper:localhost") is helper
    assert roster.agent("@agent-sofia:localhost") is None
    assert roster.microdao("microdao:7") is dao
    assert roster.microdao("microdao:8") is None


def test_empty_and_missing_lists_give_an_empty_roster() -> None:
    for raw in (
        {},
        {"microdaos": None, "blueprints": None, "agents": None},
        raw_roster([], [], []),
    ):
        roster = parse(raw)
        assert (roster.microdaos, roster.blueprints, roster.agents) == ((), (), ())
        assert dict(roster.by_mxid) == {}


def test_capabilities_come_out_as_plain_json_values() -> None:
    """ruamel's round-trip maps and lists are stored as jsonb: they must be plain."""
    text = (
        "blueprints:\n"
        "  - code: sofia_prime\n"
        "    model: gpt-4.1\n"
        "    capabilities: {tools: [search, summarize], depth: 2}  # comment\n"
    )
    loaded = YAML().load(text)
    (bp,) = parse(dict(loaded)).blueprints
    assert bp.capabilities == {"tools": ["search", "summarize"], "depth": 2}
    assert type(bp.capabilities) is dict
    assert type(bp.capabilities["tools"]) is list


def test_list_capabilities_are_allowed() -> None:
    (bp,) = parse(raw_roster(blueprints=[blueprint(capabilities=["a", "b"])])).blueprints
    assert bp.capabilities == ["a", "b"]


@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_every_documented_kind_is_accepted(kind: str) -> None:
    assert parse(raw_roster([agent(kind=kind)])).agents[0].kind == kind


@pytest.mark.parametrize("role", MEMBER_ROLES)
def test_every_documented_member_role_is_accepted(role: str) -> None:
    raw = raw_roster(microdaos=[microdao(members={"@bob:localhost": role})])
    assert parse(raw).microdaos[0].members == {"@bob:localhost": role}


@pytest.mark.parametrize(
    "space", ["!abcDEF123:localhost", "#core:localhost", "#core:hs.example:8448"]
)
def test_space_may_be_a_room_id_or_an_alias(space: str) -> None:
    assert parse(raw_roster(microdaos=[microdao(space=space)])).microdaos[0].space == space


def test_template_with_a_suffix() -> None:
    roster = parse(raw_roster([agent("agent:sofia")]), template="{name}-bot")
    assert roster.agents[0].matrix_id == "@sofia-bot:localhost"
    assert agent_localpart("x{name}y", "agent:abc") == "xabcy"


# --- one-line errors naming the entry --------------------------------------------

AGENT_MISTAKES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown blueprint", {"blueprint": "nope"}, ["blueprint", "'nope'"]),
    ("bad kind", {"kind": "robot"}, ["kind", "'robot'", "system | assistant | node | quest"]),
    ("missing kind", {"kind": None}, ["kind"]),
    ("unknown microdao", {"microdao": "microdao:8"}, ["microdao", "'microdao:8'"]),
    ("bad microdao id", {"microdao": "dao7"}, ["microdao", "'dao7'"]),
    ("owner not a user id", {"owner": "alice"}, ["owner", "'alice'"]),
    ("owner room id", {"owner": "!room:localhost"}, ["owner"]),
    ("avatar http", {"avatar": "https://x/y.png"}, ["avatar"]),
    ("avatar no media id", {"avatar": "mxc://localhost/"}, ["avatar"]),
    ("localpart upper case", {"localpart": "Sofia"}, ["localpart", "'Sofia'"]),
    ("localpart with colon", {"localpart": "so:fia"}, ["localpart"]),
    ("localpart empty", {"localpart": ""}, ["localpart"]),
    ("name missing", {"name": None}, ["name"]),
    ("name blank", {"name": "   "}, ["name"]),
    ("name not a string", {"name": 5}, ["name"]),
    ("unknown key", {"colour": "red"}, ["unknown key", "'colour'"]),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in AGENT_MISTAKES],
    ids=[name for name, _, _ in AGENT_MISTAKES],
)
def test_agent_mistake_names_the_entry_and_the_problem(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    good = agent("agent:helper", name="Helper", microdao="microdao:7")
    bad = agent() | overrides
    message = roster_error(raw_roster([good, bad]))
    assert message.startswith("agents[1] (agent:sofia): "), message
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize(
    "external_id", ["sofia", "agent:", "agent:Sofia", "agent:so fia", "microdao:sofia", 7]
)
def test_bad_agent_external_id(external_id: Any) -> None:
    message = roster_error(raw_roster([agent(external_id)]))
    assert message.startswith("agents[0]"), message
    assert "external_id" in message


def test_missing_agent_external_id_names_the_index() -> None:
    bad = agent()
    del bad["external_id"]
    message = roster_error(raw_roster([agent("agent:a"), bad]))
    assert message.startswith("agents[1]: "), message
    assert "external_id" in message


def test_duplicate_agent_external_id_names_both_entries() -> None:
    message = roster_error(raw_roster([agent(), agent("agent:x"), agent(name="Other")]))
    assert message.startswith("agents[2] (agent:sofia): "), message
    assert "duplicate external_id 'agent:sofia'" in message
    assert "agents[0] (agent:sofia)" in message


def test_duplicate_matrix_id_between_two_agents() -> None:
    # agent:x's localpart is exactly what the template gives agent:sofia.
    raw = raw_roster([agent("agent:x", localpart="agent-sofia"), agent()])
    message = roster_error(raw)
    assert message.startswith("agents[1] (agent:sofia): "), message
    assert "duplicate Matrix id '@agent-sofia:localhost'" in message
    assert "agents[0] (agent:x)" in message


def test_agent_cannot_take_the_bots_matrix_id() -> None:
    message = roster_error(raw_roster([agent(localpart="daarion")]))
    assert message.startswith("agents[0] (agent:sofia): "), message
    assert "'@daarion:localhost'" in message
    assert "appservice.bot_username" in message


def test_agent_clash_with_the_bot_follows_bot_username() -> None:
    # The same localpart is fine when the bot has another name.
    assert parse(raw_roster([agent(localpart="daarion")]), bot="bridgebot").agents
    message = roster_error(raw_roster([agent("agent:bot")]), bot="agent-bot")
    assert "appservice.bot_username" in message


@pytest.mark.parametrize("entry", ["agent:sofia", ["agent:sofia"], 5, None])
def test_agent_entry_that_is_not_a_mapping(entry: Any) -> None:
    message = roster_error(raw_roster([agent("agent:a"), entry]))
    assert message.startswith("agents[1]: must be a mapping"), message


@pytest.mark.parametrize("section", ["agents", "microdaos", "blueprints"])
@pytest.mark.parametrize("value", [{"a": 1}, "x", 5])
def test_section_that_is_not_a_list(section: str, value: Any) -> None:
    raw = raw_roster() | {section: value}
    assert roster_error(raw) == f"{section} must be a list"


BLUEPRINT_MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    ("missing model", {"model": None}, "model"),
    ("empty model", {"model": ""}, "model"),
    ("bad code", {"code": "sofia prime"}, "code"),
    ("capabilities scalar", {"capabilities": "search"}, "capabilities"),
    ("description not a string", {"description": 5}, "description"),
    ("unknown key", {"temperature": 0.2}, "'temperature'"),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in BLUEPRINT_MISTAKES],
    ids=[name for name, _, _ in BLUEPRINT_MISTAKES],
)
def test_blueprint_mistake(overrides: dict[str, Any], expected: str) -> None:
    bp = blueprint() | overrides
    message = roster_error(raw_roster(blueprints=[blueprint("other"), bp], agents=[]))
    code = bp["code"]
    assert message.startswith(f"blueprints[1] ({code}): "), message
    assert expected in message, message


def test_duplicate_blueprint_code() -> None:
    message = roster_error(raw_roster(blueprints=[blueprint(), blueprint()]))
    assert message.startswith("blueprints[1] (sofia_prime): duplicate code 'sofia_prime'")
    assert "blueprints[0] (sofia_prime)" in message


MICRODAO_MISTAKES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("bad external id", {"external_id": "dao7"}, ["external_id", "'dao7'"]),
    ("missing name", {"name": None}, ["name"]),
    ("missing owner", {"owner": None}, ["owner"]),
    ("owner not a user", {"owner": "alice"}, ["owner", "'alice'"]),
    ("members a list", {"members": ["@bob:localhost"]}, ["members"]),
    ("member bad role", {"members": {"@bob:localhost": "boss"}}, ["@bob:localhost", "'boss'"]),
    ("member role missing", {"members": {"@bob:localhost": None}}, ["@bob:localhost", "None"]),
    ("member not a user id", {"members": {"bob": "member"}}, ["members", "'bob'"]),
    ("bad space", {"space": "core"}, ["space", "'core'"]),
    ("space without server", {"space": "#core"}, ["space"]),
    ("unknown key", {"agents": []}, ["unknown key", "'agents'"]),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in MICRODAO_MISTAKES],
    ids=[name for name, _, _ in MICRODAO_MISTAKES],
)
def test_microdao_mistake(overrides: dict[str, Any], expected: list[str]) -> None:
    dao = microdao("microdao:8") | overrides
    message = roster_error(raw_roster(microdaos=[microdao(), dao], agents=[]))
    assert message.startswith("microdaos[1]"), message
    if isinstance(dao["external_id"], str):
        assert message.startswith(f"microdaos[1] ({dao['external_id']}): "), message
    for part in expected:
        assert part in message, (part, message)


def test_member_role_error_names_the_member() -> None:
    dao = microdao(members={"@bob:localhost": "member", "@carol:localhost": "king"})
    message = roster_error(raw_roster(microdaos=[dao], agents=[]))
    assert message.startswith("microdaos[0] (microdao:7): members.@carol:localhost "), message
    assert "owner | admin | member | guest" in message


def test_duplicate_microdao_id() -> None:
    message = roster_error(raw_roster(microdaos=[microdao(), microdao(name="Again")]))
    assert message.startswith("microdaos[1] (microdao:7): duplicate external_id 'microdao:7'")


def test_microdaos_are_checked_before_agents() -> None:
    """Any order of mistakes still gives exactly one line, for the first section checked."""
    raw = raw_roster(
        agents=[agent(kind="robot")], microdaos=[microdao(owner="nobody")], blueprints=[]
    )
    assert roster_error(raw).startswith("microdaos[0]")


def test_parse_roster_does_not_modify_its_input() -> None:
    raw = raw_roster(
        microdaos=[microdao(members={"@bob:localhost": "member"})],
        blueprints=[blueprint(capabilities={"tools": ["a"]})],
        agents=[agent(localpart="sofia")],
    )
    before = copy.deepcopy(raw)
    parse(raw)
    assert raw == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("external_id", "agent:sofia\n"),
        ("localpart", "sofia\n"),
        ("owner", "@alice:localhost\n"),
        ("avatar", "mxc://localhost/abc\n"),
    ],
)
def test_trailing_newline_is_not_a_valid_id(field: str, value: str) -> None:
    """`$` in Python matches before a final newline: a quoted "agent:sofia\\n" or a `|`
    block scalar must not slip through as an id (it would become the Matrix id
    '@agent-sofia\\n:localhost')."""
    message = roster_error(raw_roster([agent(**{field: value})]))
    assert field in message, message


def test_error_for_an_id_with_a_newline_is_one_line() -> None:
    # roster_error asserts that the message is a single line.
    message = roster_error(raw_roster([agent("agent:so\nfia")]))
    assert "external_id" in message


# --- through parse_config -------------------------------------------------------


def test_parse_config_builds_the_roster_with_the_template_domain_and_bot() -> None:
    config = config_of(
        homeserver={"domain": "daarion.city"},
        bridge={"agent_localpart_template": "ai_{name}"},
        **raw_roster([agent(microdao="microdao:7")]),
    )
    (sofia,) = config.roster.agents
    assert sofia.matrix_id == "@ai_sofia:daarion.city"
    assert config.roster.microdaos[0].external_id == "microdao:7"
    assert config.roster.agent("@ai_sofia:daarion.city") is sofia


def test_parse_config_roster_errors_name_the_file_and_entry() -> None:
    message = config_error(**raw_roster([agent(blueprint="nope")]))
    assert message.startswith("agents[0] (agent:sofia): blueprint 'nope'"), message


def test_parse_config_agent_clash_with_a_configured_bot_username() -> None:
    message = config_error(appservice={"bot_username": "agent-sofia"}, **raw_roster([agent()]))
    assert message.startswith("agents[0] (agent:sofia): duplicate Matrix id"), message
    assert "appservice.bot_username" in message


def test_config_without_roster_sections_has_an_empty_roster() -> None:
    config = config_of()
    assert config.roster == Roster()
    assert config.bridge.agent_session_idle_after == 30 * 60


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30m", 1800),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("45s", 45),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        ("1500ms", 1.5),
        (90, 90),
        ("90", 90),  # a number in a string, as the environment gives it
        (2.5, 2.5),
        (1, 1),
    ],
)
def test_agent_session_idle_after(value: Any, seconds: float) -> None:
    config = config_of(bridge={"agent_session_idle_after": value})
    assert config.bridge.agent_session_idle_after == seconds
    assert isinstance(config.bridge.agent_session_idle_after, float)


@pytest.mark.parametrize(
    "value",
    ["", "m", "30x", "0", "30 s x", "1.2.3", "30M", "m30", "-5s", "1e3s", "30m junk", "0s",
     0, 0.5, -1, True, None, [30], {"m": 30}, "400d", 10**9, float("nan"), float("inf")],
)  # fmt: skip
def test_bad_agent_session_idle_after(value: Any) -> None:
    message = config_error(bridge={"agent_session_idle_after": value})
    assert message.startswith("bridge.agent_session_idle_after "), message


def test_agent_session_idle_after_from_the_environment() -> None:
    env = {"DAARION_BRIDGE_BRIDGE_AGENT_SESSION_IDLE_AFTER": "2m"}
    config = parse_config(PATH, config_raw(), environ=env)
    assert config.bridge.agent_session_idle_after == 120


def test_agent_session_idle_after_from_the_environment_in_seconds() -> None:
    """The example config documents 'A number of seconds': in a container the
    environment is the only way to set it, and a number there must work too."""
    env = {"DAARION_BRIDGE_BRIDGE_AGENT_SESSION_IDLE_AFTER": "90"}
    config = parse_config(PATH, config_raw(), environ=env)
    assert config.bridge.agent_session_idle_after == 90


# --- registration ----------------------------------------------------------------


def roster_config(*agents: dict[str, Any], template: str = TEMPLATE) -> Config:
    return config_of(
        bridge={"agent_localpart_template": template}, **raw_roster(list(agents), [], None)
    )


def test_agents_inside_the_template_add_no_entry() -> None:
    plain = user_namespace_regexes(config_of())
    config = roster_config(agent(), agent("agent:helper", localpart="agent-other"))
    assert user_namespace_regexes(config) == plain
    assert len(plain) == 2


def test_one_exclusive_entry_per_agent_outside_the_template() -> None:
    config = roster_config(
        agent(localpart="sofia"),
        agent("agent:helper", localpart="helper.bot"),
        agent("agent:guide"),  # in the template
    )
    regexes = user_namespace_regexes(config)
    base = user_namespace_regexes(config_of())
    assert regexes[: len(base)] == base
    extra = regexes[len(base) :]
    assert len(extra) == 2
    assert re.match(extra[0], "@sofia:localhost")
    assert re.match(extra[1], "@helper.bot:localhost")
    # Each extra entry is exactly one user on our server, nothing around it.
    for user in ("@sofia:otherserver", "@sofia:localhost.evil.org", "@xsofia:localhost",
                 "@sofiax:localhost", "@helperxbot:localhost"):  # fmt: skip
        assert not any(re.match(r, user) for r in extra), user
    users = build_registration(config)["namespaces"]["users"]
    assert [u["regex"] for u in users] == regexes
    assert all(u["exclusive"] is True for u in users)
    assert uncovered_users(config, build_registration(config)) == []


def write_registration_data(path: Path, data: Any) -> Path:
    YAML(typ="safe").dump(data, path)
    return path


def test_check_registration_names_the_agent_it_does_not_cover(tmp_path: Path) -> None:
    config = roster_config(agent(localpart="sofia"), agent("agent:guide"))
    old = build_registration(config_of())  # made before the agent was configured
    old["as_token"], old["hs_token"] = config.appservice.as_token, config.appservice.hs_token
    reg = write_registration_data(tmp_path / "registration.yaml", old)
    assert uncovered_users(config, old) == ["agent agent:sofia (@sofia:localhost)"]
    with pytest.raises(ConfigError) as info:
        check_registration(config, reg)
    message = str(info.value)
    assert "\n" not in message
    assert str(reg) in message
    assert "agent:sofia" in message and "@sofia:localhost" in message
    assert "agent:guide" not in message  # the template covers it


def test_check_registration_names_the_bot_when_it_is_missing(tmp_path: Path) -> None:
    config = roster_config(agent())
    data = build_registration(config)
    data["namespaces"]["users"] = data["namespaces"]["users"][1:]
    reg = write_registration_data(tmp_path / "registration.yaml", data)
    with pytest.raises(ConfigError) as info:
        check_registration(config, reg)
    assert "the bot @daarion:localhost" in str(info.value)


def test_check_registration_in_step_with_agents(tmp_path: Path) -> None:
    config = roster_config(agent(localpart="sofia"), agent("agent:guide"))
    reg = write_registration_data(tmp_path / "registration.yaml", build_registration(config))
    assert check_registration(config, reg) == []


@pytest.mark.parametrize(
    "users",
    [
        None,
        "x",
        [{"exclusive": False, "regex": "^@sofia:localhost$"}],
        [{"exclusive": True, "regex": "(["}],
        [{"exclusive": True, "regex": 5}],
        ["^@sofia:localhost$"],
    ],
)
def test_uncovered_users_with_malformed_namespaces(users: Any) -> None:
    """Non-exclusive, invalid or malformed entries cover nobody; nothing raises."""
    config = roster_config(agent(localpart="sofia"))
    registration = {"namespaces": {"users": users}}
    assert uncovered_users(config, registration) == [
        "the bot @daarion:localhost",
        "agent agent:sofia (@sofia:localhost)",
    ]


def test_uncovered_users_of_a_registration_that_is_not_a_mapping() -> None:
    config = roster_config(agent(localpart="sofia"))
    assert len(uncovered_users(config, ["x"])) == 2


NAMES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,11}", fullmatch=True)
LOCALPARTS = st.from_regex(r"[a-z0-9._=/+-]{1,12}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(NAMES, st.none() | LOCALPARTS), max_size=5, unique_by=lambda t: t[0]),
    st.sampled_from(["agent-{name}", "{name}-bot", "ai.{name}.x"]),
)
def test_registration_covers_every_agent(
    specs: list[tuple[str, str | None]], template: str
) -> None:
    agents = [agent(f"agent:{name}", **({"localpart": lp} if lp else {})) for name, lp in specs]
    try:
        config = roster_config(*agents, template=template)
    except ConfigError as e:
        assert "duplicate Matrix id" in str(e)  # two agents drawn onto one localpart
        return
    regexes = user_namespace_regexes(config)
    assert uncovered_users(config, build_registration(config)) == []
    for a in config.roster.agents:
        assert any(re.match(r, a.matrix_id) for r in regexes)
        # ... and only on our own server.
        assert not any(re.match(r, a.matrix_id + ".evil.org") for r in regexes)
        assert not any(re.match(r, a.matrix_id.replace(":localhost", ":other")) for r in regexes)
    outside = [a for a in config.roster.agents if not re.match(regexes[1], a.matrix_id)]
    assert len(regexes) == 2 + len(outside)
