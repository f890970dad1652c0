"""Reading and writing config-like YAML files: one-line errors, atomic writes, file modes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..errors import ConfigError


def round_trip_yaml() -> YAML:
    yaml = YAML()  # round-trip mode keeps comments when -g writes tokens back
    yaml.preserve_quotes = True
    # Keep `null` as written instead of an empty value.
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def read_yaml(path: Path, *, round_trip: bool = True) -> Any:
    """The file's YAML. Round trip keeps comments for writing it back; without, the C
    parser (ruamel.yaml.clib) reads a config with a thousand agents several times
    faster, with the same YAML 1.2 values."""
    yaml = round_trip_yaml() if round_trip else YAML(typ="safe", pure=False)
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}") from None
    except ValueError as e:  # a tag such as !!int on a value that is not one
        raise ConfigError(f"{path}: invalid value: {e}") from None


def write_yaml_atomic(path: Path, data: Any, mode: int | None = None) -> None:
    """Write via a temp file and rename so a crash never leaves half a config."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            round_trip_yaml().dump(data, fh)
        os.chmod(tmp, mode if mode is not None else existing_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def existing_mode(path: Path) -> int:
    """The file's permission bits, or owner-only for a file yet to be written."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o600
