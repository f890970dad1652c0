"""The spool of room keys a database outage left unstored: kept on disk, read back in
order, emptied once stored; a line a crash cut short costs only itself."""

from __future__ import annotations

from pathlib import Path

from daarion_bridge.crypto.spool import Spool

KEY = {"type": "m.room.encrypted", "to_user_id": "@a:x", "to_device_id": "D", "content": {}}


async def test_parts_come_back_in_order_and_survive_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "data" / "spool.jsonl"
    spool = Spool(path)
    await spool.add({"to_device": [KEY]})
    await spool.add({"to_device": [], "device_lists": {"changed": ["@b:x"], "left": []}})
    again = Spool(path)  # as after a restart
    assert await again.read() == [
        {"to_device": [KEY]},
        {"to_device": [], "device_lists": {"changed": ["@b:x"], "left": []}},
    ]
    await again.keep_only([{"to_device": [KEY]}])
    assert await Spool(path).read() == [{"to_device": [KEY]}]
    await again.keep_only([])
    assert not path.exists()
    assert await again.read() == []


async def test_a_line_cut_short_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path)
    await spool.add({"to_device": [KEY]})
    with path.open("ab") as f:
        f.write(b'{"to_device": [{"ty')  # the crash came mid-write
    assert await spool.read() == [{"to_device": [KEY]}]


async def test_an_unwritable_spool_keeps_the_keys_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spool = Spool(blocker / "spool.jsonl")
    await spool.add({"to_device": [KEY]})
    assert await spool.read() == [{"to_device": [KEY]}]
    await spool.keep_only([])
    assert await spool.read() == []
