"""The reference agent runtime: hears `router.invoke.agent` on NATS, reads the question
and the conversation before it through the bridge's context endpoint, and answers
through the post endpoint in place (in the thread when the question is in one), naming
only the asker in `m.mentions`.

    python -m daarion_bridge.devtools.demo_runtime -c config.yaml
    python -m daarion_bridge.devtools.demo_runtime -c config.yaml \\
        --openai-url http://127.0.0.1:8080/v1 --model qwen2.5-7b-instruct

Without `--openai-url` an agent answers `help` and echoes what it was asked. With it,
the history goes to that OpenAI-compatible chat completions server (llama.cpp's
llama-server, Ollama's /v1, vLLM, LM Studio ...) as the conversation, and the model's
answer is posted. It reads the NATS URL, subject prefix, service token and listener
from the bridge's config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import nats

from ..config import Config, load_config
from ..translate.bus import INVOKE_AGENT

log = logging.getLogger("daarion.demo_runtime")

TOKEN_HEADER = "X-Internal-Service-Token"
HISTORY = 20  # messages before the question the model hears
MODEL_TIMEOUT = 120.0  # seconds: a local model on a laptop may be slow
MAX_ANSWER = 10_000  # the post endpoint's cap


def answer(agent_name: str, agent_id: str, text: str) -> str:
    asked = text.strip()
    words = asked.lower().replace(",", " ").replace(":", " ").split()
    if "help" in words:
        return (
            f"Hi, I'm {agent_name} ({agent_id}), a demo agent. Mention me and I repeat "
            "what you asked; in a room with only you and me, just write."
        )
    return f"You asked: {asked}" if asked else "I am here."


def conversation(agent_id: str, agent_name: str, context: dict[str, Any]) -> list[dict]:
    """The context as chat messages: the agent's own words as the assistant's, everyone
    else's as the user's with their name, the question last."""
    chat: list[dict[str, str]] = [
        {
            "role": "system",
            "content": f"You are {agent_name}, an assistant in a group chat. Answer the "
            "last message briefly. Messages from people start with their name.",
        }
    ]
    for m in [*context.get("history", []), context["message"]]:
        if m.get("text") is None:
            continue  # deleted
        if m.get("sender_id") == agent_id:
            chat.append({"role": "assistant", "content": m["text"]})
        else:
            chat.append({"role": "user", "content": f"{m.get('sender_name')}: {m['text']}"})
    return chat


def txn_id_for(agent_id: str, message_id: str) -> str:
    """One per answer: a retry of the same answer is the same post."""
    return f"{agent_id.replace(':', '-')}-{message_id}"[:64]


class DemoRuntime:
    def __init__(
        self, config: Config, openai_url: str | None = None, model: str | None = None
    ) -> None:
        if not config.nats.enabled or not config.api.service_token:
            raise SystemExit("the demo runtime needs nats.url and api.service_token in the config")
        self.config = config
        self.names = {a.external_id: a.name for a in config.roster.agents}
        host = config.appservice.hostname
        self.endpoint = f"http://{host}:{config.appservice.port}/internal/agents"
        self.headers = {TOKEN_HEADER: config.api.service_token or ""}
        self.openai_url = openai_url.rstrip("/") if openai_url else None
        self.model = model or "default"
        self.answered = 0
        self.http: aiohttp.ClientSession | None = None
        self.nc: Any = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self.nc = await nats.connect(self.config.nats.url, max_reconnect_attempts=-1)
        await self.nc.subscribe(self.config.nats.subject(INVOKE_AGENT), cb=self._invoked)
        how = f"model {self.model} at {self.openai_url}" if self.openai_url else "echo"
        log.info("Reference runtime listening on %s (%s)", self.config.nats.url, how)

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        if self.http is not None:
            await self.http.close()

    async def _invoked(self, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
            await self.respond(data["agent_id"], data["payload"])
        except Exception:  # one bad invocation never stops the runtime
            log.exception("invocation not answered")

    async def respond(self, agent_id: str, payload: dict[str, Any]) -> None:
        context = await self._context(agent_id, payload)
        if context is None:
            return
        message = context["message"]
        name = self.names.get(agent_id, agent_id)
        if self.openai_url is not None:
            reply = await self._ask_model(conversation(agent_id, name, context))
        else:
            reply = answer(name, agent_id, message.get("text") or "")
        body = {
            "channel_id": payload["channel_id"],
            "text": reply[:MAX_ANSWER] or "…",
            "reply_to": payload["matrix_event_id"],
            "mentions": [message["sender_matrix_id"]],
            "txn_id": txn_id_for(agent_id, payload["message_id"]),
        }
        if payload.get("thread_root"):
            body["thread_root"] = payload["thread_root"]
        assert self.http is not None
        url = f"{self.endpoint}/{agent_id}/post-to-channel"
        async with self.http.post(url, json=body, headers=self.headers) as resp:
            if resp.status == 200:
                self.answered += 1
            else:
                log.warning(
                    "%s could not answer: HTTP %d %s", agent_id, resp.status, await resp.text()
                )

    async def _context(self, agent_id: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        assert self.http is not None
        query = {
            "channel_id": payload["channel_id"],
            "message_id": payload["message_id"],
            "limit": str(HISTORY),
        }
        url = f"{self.endpoint}/{agent_id}/context"
        async with self.http.get(url, params=query, headers=self.headers) as resp:
            if resp.status == 200:
                return await resp.json()
            log.warning("%s could not read the context: HTTP %d", agent_id, resp.status)
            return None

    async def _ask_model(self, chat: list[dict]) -> str:
        assert self.http is not None and self.openai_url is not None
        body = {"model": self.model, "messages": chat}
        try:
            async with self.http.post(
                f"{self.openai_url}/chat/completions",
                json=body,
                timeout=aiohttp.ClientTimeout(total=MODEL_TIMEOUT),
            ) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            return str(data["choices"][0]["message"]["content"]).strip()
        except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, TypeError) as e:
            log.warning("the model server did not answer: %s", type(e).__name__)
            return "Sorry, I cannot think right now (the model server did not answer)."


async def run(config_path: Path, openai_url: str | None, model: str | None) -> None:
    runtime = DemoRuntime(load_config(config_path), openai_url, model)
    await runtime.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runtime.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    parser.add_argument(
        "--openai-url",
        help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1",
    )
    parser.add_argument("--model", help="the model name to ask for (with --openai-url)")
    args = parser.parse_args(argv)
    if args.model and not args.openai_url:
        parser.error("--model needs --openai-url")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        asyncio.run(run(args.config, args.openai_url, args.model))


if __name__ == "__main__":
    main()
