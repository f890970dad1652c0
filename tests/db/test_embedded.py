"""`database.url: embedded`: a real server from the wheel, started and stopped by us."""

from __future__ import annotations

import sys
from pathlib import Path

import asyncpg

from daarion_bridge.db.embedded import EmbeddedPostgres
from daarion_bridge.devtools.process import ChildProcess, log_line


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
