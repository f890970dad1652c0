"""The benchmark's workload with agents: who sends, who is mentioned, and that the
bridge's own mention search finds what the workload counts. Pure: no I/O."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import bench_roster
from bench.workload import Workload
from daarion_bridge.config.roster import parse_roster
from daarion_bridge.translate.agents import AgentDirectory

ROSTER = parse_roster(
    Path("bench.yaml"), bench_roster(30), domain="localhost", template="agent-{name}",
    bot_localpart="daarion",
)  # fmt: skip
ROOMS = [f"!r{i}:localhost" for i in range(20)]
SENDERS = [f"@u{i}:localhost" for i in range(200)]
# Half the rooms have two agents each.
IN_ROOMS = {
    room: [(a.matrix_id, a.name) for a in ROSTER.agents[i : i + 2]]
    for i, room in enumerate(ROOMS[:10])
}


def messages(agents: dict[str, list[tuple[str, str]]] | None) -> tuple[list[dict], Workload]:
    wl = Workload(ROOMS, SENDERS, "@owner:localhost", seed=3, start_ts=0, agents=agents)
    phase = wl.phase("main", 20_000, 100, "t")
    events = [e for t in phase.txns for e in json.loads(t.body)["events"]]
    return [e for e in events if e["type"] == "m.room.message"], phase


def test_agents_speak_only_in_their_rooms_and_people_mention_them() -> None:
    found, phase = messages(IN_ROOMS)
    agents_of = {room: {m for m, _ in pairs} for room, pairs in IN_ROOMS.items()}
    by_agents = [e for e in found if e["sender"].startswith("@agent-")]
    assert by_agents and all(e["sender"] in agents_of[e["room_id"]] for e in by_agents)
    # edits of agents' answers are agents' messages too; new answers are what is counted
    answers = [e for e in by_agents if "m.new_content" not in e["content"]]
    assert len(answers) == phase.agent_messages
    people = [e for e in found if not e["sender"].startswith("@agent-")]
    new_people = [e for e in people if "m.new_content" not in e["content"]]
    assert all("m.mentions" in e["content"] for e in new_people)
    directory = AgentDirectory(ROSTER)
    mentioning = [e for e in new_people if directory.mentioned(e["content"])]
    assert len(mentioning) == phase.mentions
    assert all(
        set(directory.mentioned(e["content"])) <= agents_of.get(e["room_id"], set())
        for e in mentioning
    )


def test_without_agents_nobody_is_an_agent_and_nothing_mentions_one() -> None:
    found, phase = messages(None)
    assert phase.agent_messages == phase.mentions == 0
    assert not [e for e in found if e["sender"].startswith("@agent-")]
    mentioned = {u for e in found for u in e["content"].get("m.mentions", {}).get("user_ids", [])}
    assert mentioned and not {u for u in mentioned if u.startswith("@agent-")}  # replies
