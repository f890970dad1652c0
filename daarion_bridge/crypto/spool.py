"""The crypto part of transactions that came while the database was down, on local disk
until it is stored.

Synapse sends a failed transaction again without its to-device messages, so a room key
that could not be committed exists nowhere else. What is kept is what came: to-device
messages (room keys Olm-encrypted to the bridge's devices, unreadable without the
crypto store) and device-list changes. One JSON line per transaction, flushed to disk
before the bridge waits or answers."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("daarion.crypto")


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Kept here too when the file cannot be written: lost only with the process.
        self.in_memory: list[dict[str, Any]] = []

    async def add(self, part: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._append, part)
        except OSError as e:
            log.error(
                "Could not spool room keys to %s (%s): they are kept in memory only",
                self.path,
                e,
            )
            self.in_memory.append(part)

    def _append(self, part: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(orjson.dumps(part) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    async def read(self) -> list[dict[str, Any]]:
        """Every spooled part, oldest first; a line a crash cut short is skipped."""
        return [*await asyncio.to_thread(self._read), *self.in_memory]

    def _read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            log.error("Could not read the spooled room keys in %s: %s", self.path, e)
            return []
        parts = []
        for line in lines:
            try:
                part = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("A cut-short line in %s skipped", self.path)
                continue
            if isinstance(part, dict):
                parts.append(part)
        return parts

    async def keep_only(self, parts: list[dict[str, Any]]) -> None:
        """What is left after a replay: the file rewritten (removed when nothing is)."""
        self.in_memory = []
        try:
            await asyncio.to_thread(self._rewrite, parts)
        except OSError as e:
            log.error("Could not rewrite the room key spool %s: %s", self.path, e)
            self.in_memory = list(parts)

    def _rewrite(self, parts: list[dict[str, Any]]) -> None:
        if not parts:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("wb") as f:
            f.write(b"".join(orjson.dumps(p) + b"\n" for p in parts))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
