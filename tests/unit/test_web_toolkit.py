"""The HTTP toolkit (web/http.py) on a real aiohttp listener on 127.0.0.1: the token
check, the bounded body reader, and the middleware that answers errors in each surface's
shape. Raw sockets send what a well-behaved client would not (bytes that are not UTF-8
in a header, half a body)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daarion_bridge.config import parse_config
from daarion_bridge.matrix.bot import HomeserverUnavailable
from daarion_bridge.web.admin_api import AdminApi
from daarion_bridge.web.agents_api import AgentsApi
from daarion_bridge.web.appservice import AppserviceApi
from daarion_bridge.web.http import (
    HttpError,
    Surface,
    add_route,
    application,
    bearer_token,
    matrix_shape,
    problem_shape,
    read_json,
    token_matches,
)

TOKEN = "s3cret-token-0123456789"


# -- the token check -----------------------------------------------------------------------


def test_token_matches_only_the_token() -> None:
    expected = TOKEN.encode()
    assert token_matches(TOKEN, expected)
    for wrong in ("", "s3cret-toke", f"{TOKEN}x", TOKEN.upper(), "s3crét-token", "\x00"):
        assert not token_matches(wrong, expected), wrong


def test_token_check_takes_any_header_value_and_never_raises() -> None:
    # aiohttp hands over a header's bytes that are not UTF-8 as surrogate escapes: the
    # comparison is on the very bytes the client sent.
    raw = b"\xff\xfe-token"
    as_aiohttp_decodes = raw.decode("utf-8", "surrogateescape")
    assert token_matches(as_aiohttp_decodes, raw)
    assert not token_matches(as_aiohttp_decodes, TOKEN.encode())
    # Not ASCII, and a lone surrogate no decoder made: no match, no exception.
    assert token_matches("tökén", "tökén".encode())
    assert not token_matches("tökén", TOKEN.encode())
    assert not token_matches("\ud800", TOKEN.encode())
    assert not token_matches("\ud800", "\ud800".encode("utf-8", "surrogatepass"))


def test_bearer_token() -> None:
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"  bEARER   {TOKEN}  ") == TOKEN
    assert bearer_token("Bearer ") == ""
    assert bearer_token("Bearer") == ""
    assert bearer_token(f"Basic {TOKEN}") is None
    assert bearer_token(TOKEN) is None


# -- a listener made of the toolkit --------------------------------------------------------


class Record:
    def __init__(self) -> None:
        self.database_errors = 0


class Refused(Exception):
    """A service layer's own error, with an answer of its own."""


def _known(error: Exception) -> HttpError | None:
    return (
        HttpError(409, f"refused: {error}", field="thing") if isinstance(error, Refused) else None
    )


def _raising(error: BaseException) -> Callable[[web.Request], Any]:
    async def handler(_: web.Request) -> web.Response:
        raise error

    return handler


def _guard(request: web.Request) -> None:
    token = request.headers.get("X-Token")
    if not token:
        raise HttpError(401, "missing X-Token", errcode="M_MISSING_TOKEN")
    if not token_matches(token, TOKEN.encode()):
        raise HttpError(403, "wrong X-Token", errcode="M_FORBIDDEN")


async def _echo(request: web.Request) -> web.Response:
    limit = int(request.query.get("max", "16"))
    return web.json_response({"got": await read_json(request, timeout=0.5, max_size=limit)})


Toolkit = tuple[str, Record]  # the listener's base URL, what it told


@pytest.fixture
async def toolkit() -> AsyncIterator[Toolkit]:
    record = Record()

    def database_failed() -> None:
        record.database_errors += 1

    matrix = Surface(matrix_shape, on_database_error=database_failed)
    problems = Surface(problem_shape, known=_known)
    app = application(matrix, client_max_size=1024)
    routes: list[tuple[Surface, str, Callable[[web.Request], Any]]] = [
        (matrix, "/m/echo", _echo),
        (problems, "/p/echo", _echo),
        (problems, "/p/refused", _raising(Refused("no"))),
        (problems, "/p/homeserver", _raising(HomeserverUnavailable("connection refused"))),
        (problems, "/p/database", _raising(asyncpg.InterfaceError("connection lost"))),
        (matrix, "/m/database", _raising(ConnectionResetError())),
        (problems, "/p/bug", _raising(KeyError("secret detail"))),
        (problems, "/p/redirect", _raising(web.HTTPFound("/elsewhere"))),
    ]
    for surface, path, handler in routes:
        add_route(app, surface, "POST", path, handler, guard=_guard)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), record
    finally:
        await server.close()


async def call(
    base: str, path: str, data: bytes = b"{}", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    sent = {"X-Token": TOKEN} | (headers or {})
    async with aiohttp.ClientSession() as http:
        async with http.post(base + path, data=data, headers=sent, allow_redirects=False) as r:
            return r.status, await r.json(content_type=None) if r.status != 302 else None


async def raw_request(base: str, head: bytes, body: bytes = b"", wait: float = 10) -> bytes:
    """Send `head` and `body` on a socket as they are; the answer's status line."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=wait)
    finally:
        writer.close()


async def test_the_guard_runs_first_and_answers_in_the_surface_shape(toolkit: Toolkit) -> None:
    base, _ = toolkit
    assert await call(base, "/m/echo", headers={"X-Token": ""}) == (
        401,
        {"errcode": "M_MISSING_TOKEN", "error": "missing X-Token"},
    )
    assert await call(base, "/p/echo", headers={"X-Token": "nope"}) == (
        403,
        {"error": "wrong X-Token"},
    )
    assert await call(base, "/p/echo", b'{"a": 1}') == (200, {"got": {"a": 1}})


async def test_header_bytes_that_are_not_utf8_answer_like_a_wrong_token(toolkit: Toolkit) -> None:
    base, _ = toolkit
    head = (
        b"POST /p/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Token: \xff\xfe\x80token\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n"
    )
    assert (await raw_request(base, head, b"{}")).split()[1] == b"403"


async def test_a_body_over_the_limit_is_413(toolkit: Toolkit) -> None:
    base, _ = toolkit
    # Its Content-Length tells: refused before it is read.
    assert await call(base, "/m/echo?max=8", b'{"a": 12}') == (
        413,
        {"errcode": "M_TOO_LARGE", "error": "body over 8 bytes"},
    )

    # Chunked, no length told: refused once one byte too many arrived.
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"a": ', b'"123456789"}'):
            yield part

    async with aiohttp.ClientSession() as http:
        async with http.post(
            base + "/p/echo?max=8", data=chunks(), headers={"X-Token": TOKEN}
        ) as r:
            assert (r.status, await r.json()) == (413, {"error": "body over 8 bytes"})
    # At the limit exactly: read.
    assert await call(base, "/p/echo?max=8", b'{"a": 1}') == (200, {"got": {"a": 1}})


async def test_a_slow_body_times_out_with_408(toolkit: Toolkit) -> None:
    base, _ = toolkit
    head = (
        b"POST /m/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"X-Token: {TOKEN}\r\n".encode()
        + b"Content-Length: 10\r\n"
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    status_line = await raw_request(base, head, b'{"a"')  # 4 of 10 bytes, then nothing
    waited = loop.time() - started
    assert status_line.split()[1] == b"408", status_line
    assert 0.45 <= waited < 5


@pytest.mark.parametrize(
    ("data", "status", "errcode"),
    [
        (b"{", 400, "M_NOT_JSON"),
        (b"", 400, "M_NOT_JSON"),
        (b"\xff\xfe{}", 400, "M_NOT_JSON"),
        (b"[" * 1200 + b"]" * 1200, 400, "M_BAD_JSON"),  # deeper than the parsers go
    ],
)
async def test_a_body_that_is_not_json_is_400(
    toolkit: Toolkit, data: bytes, status: int, errcode: str
) -> None:
    base, _ = toolkit
    answer = await call(base, "/m/echo?max=10000", data)
    assert (answer[0], answer[1]["errcode"]) == (status, errcode), answer


async def test_json_the_fast_parser_refuses_is_read_whatever_the_content_type(
    toolkit: Toolkit,
) -> None:
    base, _ = toolkit
    for content_type in ("application/json", "text/plain", "application/octet-stream"):
        status, body = await call(
            base,
            "/p/echo?max=100",
            b'{"n": NaN, "s": "\\ud800"}',
            headers={"Content-Type": content_type},
        )
        assert status == 200
        assert body["got"]["n"] != body["got"]["n"]  # NaN
        assert body["got"]["s"] == "\ud800"


async def test_the_middleware_maps_errors_to_statuses(toolkit: Toolkit) -> None:
    base, record = toolkit
    assert await call(base, "/p/refused") == (409, {"error": "refused: no", "field": "thing"})
    assert await call(base, "/p/homeserver") == (
        503,
        {"error": "homeserver unavailable, retry later"},
    )
    assert await call(base, "/p/database") == (503, {"error": "database unavailable, retry later"})
    assert record.database_errors == 0  # that surface tells no one
    assert await call(base, "/m/database") == (
        503,
        {"errcode": "M_UNKNOWN", "error": "database unavailable, retry later"},
    )
    assert record.database_errors == 1
    status, body = await call(base, "/p/bug")
    assert (status, body) == (500, {"error": "internal error, retry later"})
    # aiohttp's own answers are left as they are.
    assert (await call(base, "/p/redirect"))[0] == 302


async def test_requests_no_route_took_answer_in_the_listener_shape(toolkit: Toolkit) -> None:
    base, _ = toolkit
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/nowhere") as r:
            assert (r.status, await r.json()) == (
                404,
                {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"},
            )
        async with http.get(base + "/p/echo") as r:
            assert r.status == 405 and (await r.json())["errcode"] == "M_UNRECOGNIZED"


async def test_a_plain_application_gets_the_middleware_from_add_route() -> None:
    app = web.Application()
    add_route(app, Surface(problem_shape), "GET", "/x", _raising(HttpError(418, "teapot")))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http, http.get(server.make_url("/x")) as r:
            assert (r.status, await r.json()) == (418, {"error": "teapot"})
    finally:
        await server.close()


# -- the three surfaces' token checks, with header bytes that are not UTF-8 ----------------


@pytest.fixture
async def surfaces() -> AsyncIterator[str]:
    raw = {
        "homeserver": {"address": "http://127.0.0.1:1", "domain": "localhost"},
        "appservice": {
            "address": "http://127.0.0.1:2",
            "as_token": "as-token-0123456789",
            "hs_token": TOKEN,
        },
        "bridge": {"default_microdao": "microdao:test"},
    }
    config = parse_config(Path("test-config.yaml"), raw, environ={})

    async def nobody(_: str) -> bool:
        return False

    # Nothing past the token check runs here: no ingestor, speaker nor admin service.
    api = AppserviceApi(config, None, lambda: None, lambda: True, nobody)  # type: ignore[arg-type]
    AgentsApi(TOKEN, None, None, 1.0).add_routes(api.app)  # type: ignore[arg-type]
    AdminApi(TOKEN, None).add_routes(api.app)  # type: ignore[arg-type]
    server = TestServer(api.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("request_line", "header", "errcode"),
    [
        (b"PUT /_matrix/app/v1/transactions/1", b"Authorization: Bearer ", b"M_FORBIDDEN"),
        (b"POST /internal/agents/agent:a/post-to-channel", b"X-Internal-Service-Token: ", None),
        (b"GET /internal/agents/agent:a/context", b"X-Internal-Service-Token: ", None),
        (b"GET /_daarion/v1/agents", b"Authorization: Bearer ", None),
    ],
)
async def test_every_surface_refuses_a_token_that_is_not_utf8_with_403(
    surfaces: str, request_line: bytes, header: bytes, errcode: bytes | None
) -> None:
    for value in (b"\xff\xfe\x80", "s3cr\xe9t-token".encode("latin-1"), TOKEN.encode() + b"\xc3"):
        head = (
            request_line
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + header
            + value
            + b"\r\nContent-Length: 2\r\nConnection: close\r\n"
        )
        host, port = surfaces.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(head + b"\r\n{}")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"403", (request_line, value, answer)
        body = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert "error" in body
        if errcode is not None:
            assert body["errcode"] == errcode.decode()
