"""Who may bring whom: the bot and agents' puppets into rooms.

Pure. Every path that brings the bot or an agent into a room asks here: the bot's own
invites and the puppets' (ingest/invites.py) and `!daarion invite` (commands/run.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import ADMIN_LEVEL, BridgeConfig
from ..config.roster import AgentSpec

# Roles in an agent's microDAO that may bring it into any room, and into open rooms.
ANY_ROOM_ROLES = frozenset({"owner", "admin"})
OPEN_ROOM_ROLES = frozenset({"member"})
OPEN_VISIBILITIES = frozenset({"public", "microdao"})


def bot_invite_allowed(inviter: str, domain: str, bridge: BridgeConfig) -> bool:
    """Only people of our own homeserver may bring the bot in, unless the admin opens it."""
    return inviter.split(":", 1)[-1] == domain or bridge.allow_federated_invites


def spaces_open_to(agent: AgentSpec, linked: Mapping[str, str]) -> frozenset[str]:
    """The spaces (of `linked`: space -> microDAO) a restricted room must name for it to
    count as open (`microdao`) where this agent is concerned: its microDAO's space; for
    an agent of no microDAO, any microDAO's. A room restricted to any other room is
    private to the agent's rules."""
    if agent.microdao is None:
        return frozenset(linked)
    return frozenset(s for s, microdao in linked.items() if microdao == agent.microdao)


def agent_invite_allowed(
    inviter: str, agent: AgentSpec, inviter_role: str | None, visibility: str | None
) -> bool:
    """Whether the puppet accepts an invite: its owner, its microDAO's owners and admins,
    and its microDAO's members for rooms open to the microDAO or the city. An agent with
    neither owner nor microDAO serves the whole city: anyone may bring it into open rooms.
    Private rooms (or rooms whose join rule is unknown) need an owner or admin.
    `visibility` is the room's as `translate.rooms.open_to` gives it for
    `spaces_open_to(agent)`: `microdao` only for a room restricted to such a space."""
    if agent.owner is not None and inviter == agent.owner:
        return True
    if agent.microdao is not None:
        if inviter_role in ANY_ROOM_ROLES:
            return True
        return inviter_role in OPEN_ROOM_ROLES and visibility in OPEN_VISIBILITIES
    return agent.owner is None and visibility in OPEN_VISIBILITIES


def command_invite_allowed(
    level: str,
    user_id: str,
    agent: AgentSpec,
    role_in_agents_microdao: str | None,
    visibility: str | None,
    from_our_server: bool,
    holds_invite_level: bool,
) -> bool:
    """`!daarion invite <agent>`: only someone who may invite into the room themselves
    (the room's `invite` power level): the bot must not lend its own power. Then a bridge
    admin may bring any agent; anyone else exactly as if they invited the agent
    themselves (its owner, its microDAO's owners and admins, its members into open rooms,
    anyone into open rooms for the city's agents; people of other servers only with
    bridge.allow_federated_invites)."""
    if not holds_invite_level:
        return False
    if level == ADMIN_LEVEL:
        return True
    return from_our_server and agent_invite_allowed(
        user_id, agent, role_in_agents_microdao, visibility
    )
