"""What the bridge wrote to its log."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CATCH_UP_LINE = re.compile(
    r"Catch-up after (?P<reason>.+?): read back (?P<rooms>\d+) room\(s\) in "
    r"(?P<seconds>[\d.]+) s, (?P<missing>\d+) event\(s\) were missing"
    r"(?:, (?P<state>\d+) state event\(s\) newer than the index)?"
)


@dataclass(frozen=True)
class CatchUpRound:
    reason: str  # "start", "signs of dropped events", "more signs of dropped events"
    rooms: int
    seconds: float
    missing: int  # events the index lacked and the round fed in
    state: int = 0  # the room state events newer than what the index applied, fed in


def catch_up_rounds(log_file: Path, offset: int = 0) -> list[CatchUpRound]:
    """The catch-up rounds the bridge logged (from byte ``offset`` of its log on)."""
    if not log_file.exists():
        return []
    with log_file.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [
        CatchUpRound(
            m["reason"],
            int(m["rooms"]),
            float(m["seconds"]),
            int(m["missing"]),
            int(m["state"] or 0),
        )  # fmt: skip
        for m in CATCH_UP_LINE.finditer(text)
    ]
