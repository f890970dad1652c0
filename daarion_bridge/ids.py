"""One home for the shapes of ids: the platform's (`microdao:`, `agent:`, `user:`) and Matrix's.

Each shape is a compiled, anchored regex; its `.pattern` is also what the admin API's OpenAPI
document carries, so config validation, the admin API and its document cannot disagree.
Patterns stay within the syntax JSON Schema (ECMA-262) and Python share. Match with
`fullmatch`.
"""

from __future__ import annotations

import re

# A Matrix server name: a host name or IP literal, with an optional port.
SERVER_NAME = r"[A-Za-z0-9.-]+(:[0-9]+)?"
# The characters of the localparts the bridge itself creates or accepts in config: the
# spec's user-id grammar for new ids (lower case, no historical characters). The escaped
# hyphen is the text registrations already carry: changing it would flag them as stale.
LOCALPART_CHARS = r"[a-z0-9._=/+\-]"

# Platform ids.
MICRODAO_ID = re.compile(r"^microdao:[a-z0-9-]+$")
AGENT_ID = re.compile(r"^agent:[a-z0-9-]+$")
USER_EXTERNAL_ID = re.compile(r"^user:[a-z0-9-]+$")
BLUEPRINT_CODE = re.compile(r"^[A-Za-z0-9_.-]+$")
# A channel's slug: what `translate.rooms.slugify` makes.
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# Matrix ids.
DOMAIN = re.compile(f"^{SERVER_NAME}$")
LOCALPART = re.compile(f"^{LOCALPART_CHARS}+$")
# A user id the bridge accepts from an admin (config, admin API): modern localparts only.
USER_ID = re.compile(f"^@{LOCALPART_CHARS}+:{SERVER_NAME}$")
# Any user id, historical localparts included (bridge.permissions keys match real users).
ANY_USER_ID = re.compile(rf"^@[^:\s]+:{SERVER_NAME}$")
MXC = re.compile(r"^mxc://[A-Za-z0-9.:-]+/[A-Za-z0-9_-]+$")
# A room alias, or a room id (version 12 room ids, Synapse's default, have no server part).
ROOM_OR_ALIAS = re.compile(rf"^(#[^:\s]+:{SERVER_NAME}|![^:\s]+(:{SERVER_NAME})?)$")

# The bridge's own bot in the index: the platform's system actor, an agent of kind
# `system` with a blueprint of its own. Its id is the platform's (`system:daarion`), not
# an `agent:` one: no config or API declares it, and nothing can invoke it.
SYSTEM_AGENT_ID = "system:daarion"
SYSTEM_BLUEPRINT = "daarion_system"
# An agent as the index holds it: one the config declares, or the bot.
INDEXED_AGENT_ID = re.compile(rf"^(agent:[a-z0-9-]+|{SYSTEM_AGENT_ID})$")
