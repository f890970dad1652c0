"""Process set-up shared by the bridge and its publisher process: logging, event loop,
garbage collection."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OperatorError


def configure_logging(logging_config: dict[str, Any] | None, where: Path | str) -> None:
    """The config's `logging` (a dictConfig), or INFO lines on stderr without one; the
    bridge and its publisher process (bus/process.py) log alike."""
    if logging_config:
        try:
            logging.config.dictConfig(logging_config)
        except (ValueError, TypeError, AttributeError, ImportError) as e:
            raise OperatorError(f"{where}: logging is not a valid dictConfig: {e}") from None
    else:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: each database round trip and each request costs the
    bridge a fraction of the CPU it costs on asyncio's own loop, on the hot path of every
    transaction."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def freeze_long_lived_objects() -> None:
    """Take what start-up built (modules, config, pools) out of the collector's sight.

    A full collection walks every tracked object, tens of thousands after start-up, on
    whichever transaction triggers it (every few seconds under load): a visible pause.
    Frozen, they are never walked again, and a full collection walks only what came
    later. Garbage start-up left is collected first. Called again after a config reload:
    what was frozen is thawed and collected with the rest, so an old roster's cycles are
    not kept for good."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
