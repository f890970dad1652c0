"""What the bridge's three HTTP surfaces share: the appservice API the homeserver calls,
the agents' post endpoint and the admin API, all on the appservice's listener.

- `token_matches`: the one comparison of a presented token with the expected one.
- `read_json`: the one reader of request bodies, bounded in size and in time.
- `HttpError`: the one error a handler raises to answer other than success.
- `answer_errors`: the one middleware that turns whatever a handler raises into a status
  and a JSON body, in the shape of the surface (`Surface`) the route belongs to.

Routes are added with `add_route`, which ties each to its surface and its token check.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..db.errors import is_transient
from ..matrix.bot import HomeserverUnavailable

log = logging.getLogger("daarion.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Raises HttpError (401, 403) unless the request carries the surface's token.
Guard = Callable[[web.Request], None]


class HttpError(Exception):
    """An answer other than success. `errcode` is for the Matrix shape; `field` names the
    input at fault; `retry_after_ms` says when to try again. A surface's shape picks
    what it shows of them."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errcode: str = "M_UNKNOWN",
        field: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errcode = errcode
        self.field = field
        self.retry_after_ms = retry_after_ms


Shape = Callable[[HttpError], dict[str, Any]]


def matrix_shape(error: HttpError) -> dict[str, Any]:
    """The Matrix spec's error body."""
    return {"errcode": error.errcode, "error": error.message}


def problem_shape(error: HttpError) -> dict[str, Any]:
    """`{"error"}`, with the field at fault when one is."""
    body: dict[str, Any] = {"error": error.message}
    if error.field is not None:
        body["field"] = error.field
    return body


def _knows_nothing(_: Exception) -> HttpError | None:
    return None


def _method_and_path(request: web.Request) -> str:
    # The path only: a query string may hold a token.
    return f"{request.method} {request.path}"


@dataclass(frozen=True, slots=True)
class Surface:
    """How one surface answers what its handlers raise."""

    shape: Shape
    # The errors of the service layer behind the surface that carry their own answer.
    known: Callable[[Exception], HttpError | None] = _knows_nothing
    # Told when the database failed (the appservice starts its recovery from it).
    on_database_error: Callable[[], None] | None = None
    # The request as the log names it.
    describe: Callable[[web.Request], str] = _method_and_path

    def as_http_error(self, request: web.Request, error: Exception) -> HttpError:
        if isinstance(error, HttpError):
            return error
        if (known := self.known(error)) is not None:
            if known.status >= 500:
                log.warning("%s: %s", self.describe(request), known.message)
            return known
        if isinstance(error, HomeserverUnavailable):
            log.warning("%s: homeserver unavailable (%s)", self.describe(request), error)
            return HttpError(503, "homeserver unavailable, retry later")
        if is_transient(error):
            log.warning("%s: database %s", self.describe(request), type(error).__name__)
            if self.on_database_error is not None:
                self.on_database_error()
            return HttpError(503, "database unavailable, retry later")
        log.error("%s: unexpected error", self.describe(request), exc_info=error)
        return HttpError(500, "internal error, retry later")

    def answer(self, request: web.Request, error: Exception) -> web.Response:
        http_error = self.as_http_error(request, error)
        return web.json_response(self.shape(http_error), status=http_error.status)


# Which surface each route belongs to, and the one that answers requests no route took.
ROUTE_SURFACES: web.AppKey[dict[web.AbstractRoute, Surface]] = web.AppKey("route_surfaces")
UNROUTED: web.AppKey[Surface] = web.AppKey("unrouted_surface")


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    unrouted = request.app.get(UNROUTED)
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as e:
        # The router's answers to requests no route took.
        if unrouted is None:
            raise
        message = "Unrecognized request"
        if e.status == 405:
            message = "Method not allowed on this endpoint"
        return unrouted.answer(request, HttpError(e.status, message, errcode="M_UNRECOGNIZED"))
    except web.HTTPException:
        raise  # an answer aiohttp made on purpose
    except Exception as e:
        surface = request.app.get(ROUTE_SURFACES, {}).get(request.match_info.route, unrouted)
        if surface is None:
            raise
        return surface.answer(request, e)


def application(unrouted: Surface, client_max_size: int) -> web.Application:
    """The listener's application: `answer_errors` as its middleware, and requests no
    route took answered in the shape of `unrouted`."""
    app = web.Application(middlewares=[answer_errors], client_max_size=client_max_size)
    app[UNROUTED] = unrouted
    app[ROUTE_SURFACES] = {}
    return app


def add_route(
    app: web.Application,
    surface: Surface,
    method: str,
    path: str,
    handler: Handler,
    *,
    guard: Guard | None = None,
    allow_head: bool = False,
) -> None:
    """Route `method path` to `handler` after `guard` (the token check) let it through;
    what either raises is answered by `surface`."""
    if guard is not None:
        check = guard
        inner = handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            check(request)
            return await inner(request)

        handler = guarded
    # An application not made by `application` gets the middleware too.
    if answer_errors not in app.middlewares:
        app.middlewares.append(answer_errors)
    surfaces = app.setdefault(ROUTE_SURFACES, {})
    for each in ("HEAD", method) if allow_head else (method,):
        surfaces[app.router.add_route(each, path, handler)] = surface


# -- tokens --------------------------------------------------------------------------------


def token_matches(presented: str, expected: bytes) -> bool:
    """Whether a presented token is the expected one, compared in constant time.

    aiohttp decodes header values as UTF-8 with surrogateescape, which gives back the
    very bytes the client sent; a value that still cannot be encoded is no token. Never
    raises: anything that is not the token answers like a wrong token.
    """
    try:
        raw = presented.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, expected)


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (the scheme in any case),
    stripped and maybe empty; None for another scheme."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# -- bodies --------------------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    """orjson for speed; what it refuses goes to the standard parser, which takes lone
    surrogates, NaN and big integers (the translator deals with them) or raises the same
    errors as before."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


async def read_json(
    request: web.Request, *, timeout: float | None, max_size: int | None = None
) -> Any:
    """The request's body, parsed as JSON whatever its Content-Type says (clients leave it
    out or get it wrong, and a body is JSON or refused anyway).

    At most `max_size` bytes (the listener's client_max_size by default): a bigger body
    answers 413, before it is read when its Content-Length tells. A body not received
    within `timeout` seconds (None: no limit) answers 408; one that is not JSON, 400.
    """
    limit = request.client_max_size if max_size is None else max_size
    try:
        async with asyncio.timeout(timeout):
            raw = await _read_at_most(request, limit)
    except TimeoutError:
        log.warning("%s: request body not received in time", _method_and_path(request))
        raise HttpError(408, "request body not received in time") from None
    try:
        return parse_json(raw)
    except RecursionError:
        raise HttpError(400, "body is nested too deeply", errcode="M_BAD_JSON") from None
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body is not JSON", errcode="M_NOT_JSON") from None


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    too_large = HttpError(413, f"body over {limit} bytes", errcode="M_TOO_LARGE")
    if (request.content_length or 0) > limit:
        raise too_large
    raw = bytearray()
    while len(raw) <= limit:  # one byte past the limit tells a body over it
        chunk = await request.content.read(limit + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > limit:
        raise too_large
    return bytes(raw)


# -- query arguments -----------------------------------------------------------------------


def query_limit(request: web.Request, default: int, maximum: int) -> int:
    """The `limit` query argument: a whole number from 1 to `maximum`; 400 otherwise."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    problem = f"limit must be a whole number from 1 to {maximum}"
    # Beyond a few digits it is out of range anyway; int() refuses thousands.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= maximum:
        raise HttpError(400, problem, field="limit")
    return int(raw)
