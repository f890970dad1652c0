"""A demo agent runtime: hears `router.invoke.agent` on NATS and answers through the
bridge's post endpoint. Sofia (or any agent) answers `help` and echoes what she was asked.

    python -m daarion_bridge.devtools.demo_runtime -c config.yaml

It reads the NATS URL, subject prefix, service token and listener from the bridge's
config. The message text comes from `messaging.message.created`, which the bridge
publishes before the invocation it causes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import aiohttp
import nats

from ..config import Config, load_config
from ..translate.bus import INVOKE_AGENT, MESSAGE_CREATED

log = logging.getLogger("daarion.demo_runtime")

REMEMBERED = 10_000
TEXT_WAIT_SECONDS = 2.0


def answer(agent_name: str, agent_id: str, text: str) -> str:
    asked = text.strip()
    words = asked.lower().replace(",", " ").replace(":", " ").split()
    if "help" in words:
        return (
            f"Hi, I'm {agent_name} ({agent_id}), a demo agent. Mention me and I repeat "
            "what you asked; in a room with only you and me, just write."
        )
    return f"You asked: {asked}" if asked else "I am here."


class DemoRuntime:
    def __init__(self, config: Config) -> None:
        if not config.nats.enabled or not config.api.service_token:
            raise SystemExit("the demo runtime needs nats.url and api.service_token in the config")
        self.config = config
        self.names = {a.external_id: a.name for a in config.roster.agents}
        self.texts: OrderedDict[str, str] = OrderedDict()
        host = config.appservice.hostname
        self.endpoint = f"http://{host}:{config.appservice.port}/internal/agents"
        self.answered = 0
        self.http: aiohttp.ClientSession | None = None
        self.nc: Any = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self.nc = await nats.connect(self.config.nats.url, max_reconnect_attempts=-1)
        await self.nc.subscribe(self.config.nats.subject(MESSAGE_CREATED), cb=self._created)
        await self.nc.subscribe(self.config.nats.subject(INVOKE_AGENT), cb=self._invoked)
        log.info("Demo runtime listening on %s", self.config.nats.url)

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.http is not None:
            await self.http.close()

    async def _created(self, msg: Any) -> None:
        data = json.loads(msg.data)
        self.texts[data["message_id"]] = data.get("content_preview") or ""
        while len(self.texts) > REMEMBERED:
            self.texts.popitem(last=False)

    async def _text_of(self, message_id: str) -> str:
        for _ in range(int(TEXT_WAIT_SECONDS / 0.05)):
            if message_id in self.texts:
                return self.texts[message_id]
            await asyncio.sleep(0.05)
        return ""

    async def _invoked(self, msg: Any) -> None:
        data = json.loads(msg.data)
        agent_id, payload = data["agent_id"], data["payload"]
        text = await self._text_of(payload["message_id"])
        reply = answer(self.names.get(agent_id, agent_id), agent_id, text)
        assert self.http is not None
        async with self.http.post(
            f"{self.endpoint}/{agent_id}/post-to-channel",
            json={
                "channel_id": payload["channel_id"],
                "text": reply,
                "reply_to": payload["matrix_event_id"],
            },
            headers={"X-Internal-Service-Token": self.config.api.service_token or ""},
        ) as resp:
            if resp.status == 200:
                self.answered += 1
            else:
                log.warning(
                    "%s could not answer: HTTP %d %s", agent_id, resp.status, await resp.text()
                )


async def run(config_path: Path) -> None:
    runtime = DemoRuntime(load_config(config_path))
    await runtime.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runtime.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        asyncio.run(run(args.config))


if __name__ == "__main__":
    main()
