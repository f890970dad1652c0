"""A real Synapse homeserver on loopback, for the dev mode and the end-to-end tests.

``LocalSynapse`` writes a small ``homeserver.yaml`` (SQLite, one client listener on
127.0.0.1, relaxed rate limits, no federation, logs to a file) into a work directory,
runs ``python -m synapse.app.homeserver`` as a child process (``process.ChildProcess``) and
registers users through the shared-secret admin API.

Requires the ``dev`` extra (``matrix-synapse``) in the same interpreter.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from ruamel.yaml import YAML

from .process import ChildProcess, http_ok

log = logging.getLogger(__name__)

DEFAULT_PASSWORD = "daarion-dev-password"

# Generous limits: tests and the dev mode send bursts that the defaults would throttle.
_FAST = {"per_second": 10_000, "burst_count": 100_000}

_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _FAST,
    "rc_registration": _FAST,
    "rc_registration_token_validity": _FAST,
    "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
    "rc_admin_redaction": _FAST,
    "rc_joins": {"local": _FAST, "remote": _FAST},
    "rc_joins_per_room": _FAST,
    "rc_3pid_validation": _FAST,
    "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
    "rc_third_party_invite": _FAST,
    "rc_room_creation": _FAST,
    "rc_media_create": _FAST,
    "rc_presence": {"per_user": _FAST},
    "rc_delayed_event_mgmt": _FAST,
    "rc_reports": _FAST,
    "rc_user_directory": _FAST,
    "rc_profile": _FAST,
    "rc_key_requests": _FAST,
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def distinct_ports(n: int) -> list[int]:
    """``n`` different ports that are free now."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR as servers (aiohttp,
    Twisted) set it, so connections of a stopped server in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _yaml() -> YAML:
    yaml = YAML()  # round trip: keeps comments and any hand edits of an existing file
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


# What homeserver.yaml needs for the bridge's encryption (MSC2409 to-device, MSC3202).
ENCRYPTION_FEATURES = {
    "msc2409_to_device_messages_enabled": True,
    "msc3202_transaction_extensions": True,
}


class LocalSynapse:
    """A Synapse homeserver bound to 127.0.0.1, configured and run from ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        server_name: str = "localhost",
        port: int | None = None,
        registrations: Sequence[Path] = (),
        encryption_flags: bool = True,
    ) -> None:
        """`encryption_flags`: False starts it without ENCRYPTION_FEATURES, as a
        homeserver nobody configured for the bridge's encryption."""
        self.workdir = Path(workdir).absolute()
        self.encryption_flags = encryption_flags
        self.server_name = server_name
        self.port = port if port is not None else free_port()
        self.registrations = [Path(r).absolute() for r in registrations]
        self.registration_shared_secret: str | None = None
        self.start_seconds: float | None = None
        self._child = ChildProcess(
            "Synapse",
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            output=self.stdout_path,
            logs=[self.log_path],
            cwd=self.workdir,
        )

    # -- paths -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "homeserver.stdout.log"

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def running(self) -> bool:
        return self._child.running

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    # -- configuration ---------------------------------------------------------------------

    def write_config(self) -> Path:
        """Create ``homeserver.yaml`` (and its signing key and log config) if missing; always
        rewrite the listener port and ``app_service_config_files``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        yaml = _yaml()
        log_config = self.workdir / "log.config.yaml"
        signing_key = self.workdir / f"{self.server_name}.signing.key"
        if self.config_path.exists():
            with self.config_path.open(encoding="utf-8") as f:
                config = yaml.load(f)
            if config.get("server_name") != self.server_name:
                raise RuntimeError(
                    f"{self.config_path} is for server_name {config.get('server_name')!r}, "
                    f"not {self.server_name!r}; use another workdir or delete this one"
                )
            signing_key = Path(config.get("signing_key_path", signing_key))
        else:
            config = self._default_config(signing_key, log_config)
        config["listeners"] = [
            {
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ]
        config["public_baseurl"] = self.base_url + "/"
        config["app_service_config_files"] = [str(p) for p in self.registrations]
        # The bridge's encryption reads to-device messages, key counts and device lists
        # from its transactions (docs/operations.md, encrypted rooms).
        features = dict(config.get("experimental_features") or {})
        for flag in ENCRYPTION_FEATURES:
            features.pop(flag, None)
        if self.encryption_flags:
            features.update(ENCRYPTION_FEATURES)
        config["experimental_features"] = features
        self.registration_shared_secret = str(config["registration_shared_secret"])
        tmp = self.config_path.with_suffix(".yaml.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            yaml.dump(config, f)
        tmp.chmod(0o600)  # holds registration_shared_secret
        os.replace(tmp, self.config_path)

        if not signing_key.exists():
            from signedjson.key import generate_signing_key, write_signing_keys

            key = generate_signing_key("a_" + secrets.token_hex(2))
            with signing_key.open("w", encoding="utf-8") as f:
                write_signing_keys(f, [key])
        if not log_config.exists():
            log_config.write_text(self._log_config(), encoding="utf-8")
        return self.config_path

    def _default_config(self, signing_key: Path, log_config: Path) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "log_config": str(log_config),
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(signing_key),
            "registration_shared_secret": secrets.token_urlsafe(32),
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "enable_registration": False,
            "report_stats": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "federation_domain_whitelist": [],
            "allow_public_rooms_over_federation": False,
            "user_directory": {"enabled": True, "search_all_users": True},
            "max_upload_size": "10M",
            **_RATE_LIMITS,
        }

    def _log_config(self) -> str:
        return (
            "version: 1\n"
            "disable_existing_loggers: false\n"
            "formatters:\n"
            "  precise:\n"
            "    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
            " - %(request)s - %(message)s'\n"
            "handlers:\n"
            "  file:\n"
            "    class: logging.FileHandler\n"
            "    formatter: precise\n"
            f"    filename: {self.log_path}\n"
            "    encoding: utf8\n"
            "loggers:\n"
            "  synapse.storage.SQL:\n"
            "    level: INFO\n"
            "root:\n"
            "  level: INFO\n"
            "  handlers: [file]\n"
        )

    # -- process ---------------------------------------------------------------------------

    async def start(self, timeout: float = 60) -> None:
        """Start Synapse and wait until the client API answers."""
        if self.running:
            return
        self.write_config()
        url = f"{self.base_url}/_matrix/client/versions"
        self.start_seconds = await self._child.start(http_ok(url), timeout, f"answering {url}")
        log.info("Synapse up at %s in %.2f s", self.base_url, self.start_seconds)

    async def stop(self) -> None:
        """SIGTERM the process group, wait up to 10 s, then SIGKILL."""
        await self._child.stop(10)

    def kill_now(self) -> None:
        """Synchronous SIGKILL, for atexit/finalizers where no event loop runs."""
        self._child.kill()

    async def __aenter__(self) -> LocalSynapse:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of its stdout/stderr (where start-up errors such as
        config problems end up) and of the Synapse log."""
        return self._child.tail(lines)

    # -- users -----------------------------------------------------------------------------

    async def register_user(
        self, localpart: str, password: str = DEFAULT_PASSWORD, admin: bool = False
    ) -> tuple[str, str]:
        """Register ``localpart`` with the shared-secret admin API; log in instead if the user
        exists already. Returns ``(user_id, access_token)``."""
        if self.registration_shared_secret is None:
            self.write_config()
        secret = self.registration_shared_secret
        assert secret is not None
        url = f"{self.base_url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status} {body}")
                nonce = body["nonce"]
            mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
            for i, part in enumerate((nonce, localpart, password)):
                if i:
                    mac.update(b"\x00")
                mac.update(part.encode())
            mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            data = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with session.post(url, json=data) as resp:
                body = await resp.json(content_type=None)
                if resp.status == 200:
                    return body["user_id"], body["access_token"]
                if not (resp.status == 400 and body.get("errcode") == "M_USER_IN_USE"):
                    raise RuntimeError(f"POST {url} for {localpart}: {resp.status} {body}")
            return await self.login(localpart, password, session=session)

    async def login(
        self,
        localpart: str,
        password: str = DEFAULT_PASSWORD,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> tuple[str, str]:
        """Password login; returns ``(user_id, access_token)`` of a new device."""
        url = f"{self.base_url}/_matrix/client/v3/login"
        data = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            async with session.post(url, json=data) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"login of {localpart} failed: {resp.status} {body}")
                return body["user_id"], body["access_token"]
        raise AssertionError("unreachable")  # pragma: no cover
