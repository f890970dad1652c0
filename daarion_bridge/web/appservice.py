"""The appservice HTTP API the homeserver calls, per the Matrix appservice spec.

Unlike the stock mautrix handler, a transaction is answered 200 only after its rows
and its id are committed; any failure answers 5xx so the homeserver retries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..ingest.ingestor import Ingestor
from ..translate.preview import has_unstorable
from .http import (
    HttpError,
    Surface,
    add_route,
    application,
    bearer_token,
    matrix_shape,
    read_json,
    token_matches,
)
from .http import parse_json as parse_json  # bench/ingest.py reads transactions with it

log = logging.getLogger("daarion.web")

PREFIX = "/_matrix/app/v1"


def _describe(request: web.Request) -> str:
    """A transaction's failure in the log: `not committed` is what an operator looks for."""
    if "txn_id" in request.match_info:
        return f"Transaction {request.match_info['txn_id']} not committed"
    return f"{request.method} {request.path}"


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
        # Matrix-style errors, here and for any request no route of the listener takes.
        surface = Surface(matrix_shape, on_database_error=on_database_error, describe=_describe)
        self.app = application(surface, config.appservice.max_body_size)
        for method, path, handler, guard in (
            ("PUT", PREFIX + "/transactions/{txn_id}", self.transaction, True),
            ("GET", PREFIX + "/users/{user_id}", self.query_user, True),
            ("GET", PREFIX + "/rooms/{alias}", self.query_alias, True),
            ("POST", PREFIX + "/ping", self.ping, True),
            ("GET", "/_matrix/mau/live", self.live, False),
            ("GET", "/_matrix/mau/ready", self.ready, False),
        ):
            add_route(
                self.app,
                surface,
                method,
                path,
                handler,
                guard=self._auth if guard else None,
                allow_head=method == "GET",
            )

    def _auth(self, request: web.Request) -> None:
        """Bearer header per the spec; the deprecated access_token query still accepted."""
        header = request.headers.get("Authorization")
        query = request.query.get("access_token")
        token = query
        if header is not None:
            token = bearer_token(header)
            if not token:
                raise HttpError(
                    401, "Authorization must be a Bearer token", errcode="M_MISSING_TOKEN"
                )
            if query is not None and query != token:
                raise HttpError(403, "Header and query tokens disagree", errcode="M_FORBIDDEN")
        if token is None:
            raise HttpError(401, "Missing access token", errcode="M_MISSING_TOKEN")
        if not token_matches(token.strip(), self._hs_token):
            raise HttpError(403, "Invalid access token", errcode="M_FORBIDDEN")

    async def transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["txn_id"]
        if has_unstorable(txn_id):
            raise HttpError(
                400, "Transaction id holds NUL or a lone surrogate", errcode="M_INVALID_PARAM"
            )
        appservice = self.config.appservice
        body = await read_json(
            request, timeout=appservice.body_timeout, max_size=appservice.max_body_size
        )
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            raise HttpError(
                400, "Transaction body must be an object with an events list", errcode="M_BAD_JSON"
            )
        ephemeral = body.get("ephemeral", body.get("de.sorunome.msc2409.ephemeral"))
        ephemeral = ephemeral if isinstance(ephemeral, list) else []
        if self.ingestor.crypto is not None:
            # Only pushed transactions tell what the homeserver's flags let it send (the
            # bridge makes some of its own, of events it read back).
            self.ingestor.crypto.saw_transaction(body)
        # Whatever fails here is answered 5xx by the surface, nothing committed: the
        # homeserver sends the transaction again.
        await self.ingestor.handle_transaction(txn_id, body.get("events", []), ephemeral, body)
        return web.json_response({})

    async def query_user(self, request: web.Request) -> web.Response:
        try:
            exists = await self.user_exists(request.match_info["user_id"])
        except Exception as e:
            # Any failure, the database's included, is "not now" for this one user; it is
            # no reason to start the database recovery.
            log.warning("User query failed: %s", type(e).__name__)
            raise HttpError(500, "Could not set up the user, retry later") from e
        if exists:
            return web.json_response({})
        raise HttpError(404, "No such user in this bridge", errcode="M_NOT_FOUND")

    async def query_alias(self, request: web.Request) -> web.Response:
        raise HttpError(404, "No such room alias in this bridge", errcode="M_NOT_FOUND")

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def live(self, _: web.Request) -> web.Response:
        return web.json_response({})

    async def ready(self, _: web.Request) -> web.Response:
        if self.is_ready():
            return web.json_response({})
        raise HttpError(503, "not ready")
