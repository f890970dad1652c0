"""What a JetStream stream holds: the events the bridge published, read back."""

from __future__ import annotations

import json
from typing import Any

import nats


async def stream_events(url: str, stream: str, subject: str) -> list[dict[str, Any]]:
    """Every event on `subject` (prefix included) the stream holds, oldest first; none
    before the publisher made the stream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        found: list[dict[str, Any]] = []
        if not info.state.messages:
            return found  # an empty stream's first sequence is 0, which get_msg refuses
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject == subject:
                found.append(json.loads(msg.data))
        return found
    finally:
        await nc.close()
