"""The appservice HTTP API the homeserver calls, per the Matrix appservice spec.

Unlike the stock mautrix handler, a transaction is answered 200 only after its rows
and its id are committed; any failure answers 5xx so the homeserver retries.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..config import Config
from ..db.errors import is_transient
from ..ingest.ingestor import Ingestor
from ..matrix.bot import HomeserverUnavailable
from ..translate.preview import has_unstorable

log = logging.getLogger("daarion.web")

PREFIX = "/_matrix/app/v1"


def parse_json(raw: bytes) -> Any:
    """orjson for speed; what it refuses goes to the standard parser, which takes lone
    surrogates, NaN and big integers (the translator deals with them) or raises the same
    errors as before."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


@web.middleware
async def unrecognized_as_json(request: web.Request, handler: Callable[..., Awaitable[Any]]):
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return error(405, "M_UNRECOGNIZED", "Method not allowed on this endpoint")
    except web.HTTPNotFound:
        return error(404, "M_UNRECOGNIZED", "Unrecognized request")


class AppserviceApi:
    def __init__(
        self,
        config: Config,
        ingestor: Ingestor,
        on_database_error: Callable[[], None],
        is_ready: Callable[[], bool],
        user_exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.config = config
        self.ingestor = ingestor
        self.on_database_error = on_database_error
        self.is_ready = is_ready
        self.user_exists = user_exists
        self._hs_token = config.appservice.hs_token.encode()
        # aiohttp stops reading a body at this size and raises 413.
        self.app = web.Application(
            middlewares=[unrecognized_as_json],
            client_max_size=config.appservice.max_body_size,
        )
        self.app.router.add_put(PREFIX + "/transactions/{txn_id}", self.transaction)
        self.app.router.add_get(PREFIX + "/users/{user_id}", self.query_user)
        self.app.router.add_get(PREFIX + "/rooms/{alias}", self.query_alias)
        self.app.router.add_post(PREFIX + "/ping", self.ping)
        self.app.router.add_get("/_matrix/mau/live", self.live)
        self.app.router.add_get("/_matrix/mau/ready", self.ready)

    def _auth(self, request: web.Request) -> web.Response | None:
        """Bearer header per the spec; the deprecated access_token query still accepted."""
        header = request.headers.get("Authorization")
        query = request.query.get("access_token")
        token = query
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return error(401, "M_MISSING_TOKEN", "Authorization must be a Bearer token")
            if query is not None and query != token:
                return error(403, "M_FORBIDDEN", "Header and query tokens disagree")
        if token is None:
            return error(401, "M_MISSING_TOKEN", "Missing access token")
        if not hmac.compare_digest(token.strip().encode(), self._hs_token):
            return error(403, "M_FORBIDDEN", "Invalid access token")
        return None

    async def transaction(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        txn_id = request.match_info["txn_id"]
        if has_unstorable(txn_id):
            return error(400, "M_INVALID_PARAM", "Transaction id holds NUL or a lone surrogate")
        try:
            async with asyncio.timeout(self.config.appservice.body_timeout):
                raw = await request.read()
            body = parse_json(raw)
        except TimeoutError:
            log.warning("Transaction %s: body not received in time", txn_id)
            return error(408, "M_UNKNOWN", "Request body not received in time")
        except web.HTTPRequestEntityTooLarge:
            limit = self.config.appservice.max_body_size
            return error(413, "M_TOO_LARGE", f"Transaction body over {limit} bytes")
        except (ValueError, UnicodeDecodeError):
            return error(400, "M_NOT_JSON", "Transaction body is not JSON")
        except RecursionError:
            return error(400, "M_BAD_JSON", "Transaction body is nested too deeply")
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            return error(
                400, "M_BAD_JSON", "Transaction body must be an object with an events list"
            )
        ephemeral = body.get("ephemeral", body.get("de.sorunome.msc2409.ephemeral"))
        ephemeral = ephemeral if isinstance(ephemeral, list) else []
        try:
            await self.ingestor.handle_transaction(txn_id, body.get("events", []), ephemeral)
        except HomeserverUnavailable as e:
            log.warning("Transaction %s not committed: homeserver unavailable (%s)", txn_id, e)
            return error(503, "M_UNKNOWN", "Homeserver unavailable, retry later")
        except Exception as e:
            if is_transient(e):
                log.warning("Transaction %s not committed: database %s", txn_id, type(e).__name__)
                self.on_database_error()
                return error(503, "M_UNKNOWN", "Database unavailable, retry later")
            log.exception("Transaction %s not committed: unexpected error", txn_id)
            return error(500, "M_UNKNOWN", "Internal error, retry later")
        return web.json_response({})

    async def query_user(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            exists = await self.user_exists(request.match_info["user_id"])
        except Exception as e:
            log.warning("User query failed: %s", type(e).__name__)
            return error(500, "M_UNKNOWN", "Could not set up the user, retry later")
        if exists:
            return web.json_response({})
        return error(404, "M_NOT_FOUND", "No such user in this bridge")

    async def query_alias(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return error(404, "M_NOT_FOUND", "No such room alias in this bridge")

    async def ping(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return web.json_response({})

    async def live(self, _: web.Request) -> web.Response:
        return web.json_response({})

    async def ready(self, _: web.Request) -> web.Response:
        if self.is_ready():
            return web.json_response({})
        return web.json_response({"errcode": "M_UNKNOWN", "error": "not ready"}, status=503)
