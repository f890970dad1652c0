"""A reader for the subset of DBML that docs/messaging-erd.dbml uses.

The schema test compares the migrated database with this file, so the ERD stays the
single source of truth for the platform's tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ERD_PATH = Path(__file__).resolve().parents[2] / "docs" / "messaging-erd.dbml"
_TABLE = re.compile(r"^Table (\w+) \{$")
_COLUMN = re.compile(r"^(\w+) (\w+)(?: \[(.*)\])?$")
_INDEX = re.compile(r"^(\(([\w, ]+)\)|\w+)(?: \[(.*)\])?$")
_REF = re.compile(r"ref: > (\w+)\.(\w+)")


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    primary_key: bool
    unique: bool
    references: tuple[str, str] | None


@dataclass
class Index:
    columns: tuple[str, ...]
    unique: bool


@dataclass
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    indexes: list[Index] = field(default_factory=list)
    conceptual: bool = False


def parse_erd(path: Path = ERD_PATH) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    table: Table | None = None
    in_indexes = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        if m := _TABLE.match(line):
            table = tables.setdefault(m[1], Table(m[1]))
            continue
        if table is None:
            continue
        if line == "indexes {":
            in_indexes = True
        elif line == "}":
            if in_indexes:
                in_indexes = False
            else:
                table = None
        elif line.startswith("note:"):
            table.conceptual = "Stored in Matrix Homeserver" in line
        elif in_indexes and (m := _INDEX.match(line)):
            cols = tuple(c.strip() for c in (m[2] or m[1]).split(","))
            table.indexes.append(Index(cols, "unique" in (m[3] or "")))
        elif m := _COLUMN.match(line):
            attrs = m[3] or ""
            ref = _REF.search(attrs)
            table.columns[m[1]] = Column(
                name=m[1],
                type=m[2],
                not_null="not null" in attrs or "pk" in attrs.split(","),
                primary_key="pk" in [a.strip() for a in attrs.split(",")],
                unique="unique" in attrs,
                references=(ref[1], ref[2]) if ref else None,
            )
    return {name: t for name, t in tables.items() if not t.conceptual}
