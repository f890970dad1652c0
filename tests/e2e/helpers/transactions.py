"""Transactions pushed by hand as the homeserver would, and a proxy that records the ones
Synapse pushes."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from daarion_bridge.devtools.bridge import load_yaml
from daarion_bridge.devtools.people import q


def hs_token_of(config: Path) -> str:
    return str(load_yaml(config)["appservice"]["hs_token"])


async def put_transaction(
    session: aiohttp.ClientSession,
    port: int,
    hs_token: str,
    txn_id: str,
    events: list[dict[str, Any]],
    timeout: float = 30,
) -> tuple[int, Any]:
    """PUT a transaction to the bridge on ``port`` as the homeserver would; returns
    ``(status, body)``."""
    url = f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/{q(txn_id)}"
    async with session.put(
        url,
        json={"events": events},
        headers={"Authorization": f"Bearer {hs_token}"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def http_status(session: aiohttp.ClientSession, url: str, timeout: float = 5) -> int:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        await resp.read()
        return resp.status


class RecordingProxy:
    """Sits on the registration's URL in front of a bridge listening elsewhere, forwards
    every request and records each transaction the homeserver pushed: ``(txn id, event
    ids, status the bridge answered)``; a status of 0 means the bridge did not answer.
    Tells "the homeserver never pushed it" from "the bridge said 200 and lost it"."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target = f"http://127.0.0.1:{target_port}"
        self.pushes: list[tuple[str, list[str], int]] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        keep = ("authorization", "content-type")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        event_ids: list[str] | None = None
        if request.method == "PUT" and "/transactions/" in request.path:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                event_ids = [e.get("event_id") for e in json.loads(body).get("events", [])]
        status, data, ctype = 0, b"", "application/json"
        try:
            async with self._client.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as resp:
                status, data = resp.status, await resp.read()
                ctype = resp.headers.get("Content-Type", ctype)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        finally:
            if event_ids is not None:
                self.pushes.append((request.match_info["txn"], event_ids, status))
        if status == 0:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "bridge down"}, status=502)
        return web.Response(status=status, body=data, headers={"Content-Type": ctype})

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("PUT", "/_matrix/app/v1/transactions/{txn}", self._forward)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def fate(self, event_id: str) -> str:
        """What happened to an event on its way to the bridge."""
        answers = [(txn, status) for txn, ids, status in self.pushes if event_id in ids]
        if not answers:
            return "never pushed by the homeserver"
        if any(status == 200 for _, status in answers):
            return f"answered 200 by the bridge (txn {[t for t, s in answers if s == 200]})"
        return f"pushed, never answered 200: {answers}"
