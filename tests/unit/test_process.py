"""Process set-up: what a full garbage collection has to walk after start-up."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from daarion_bridge.process import freeze_long_lived_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _garbage_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_start_up_objects_are_frozen_and_its_garbage_collected(thawed: None) -> None:
    dead = _garbage_cycle()
    freeze_long_lived_objects()
    assert dead() is None  # collected first, not frozen for good
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # this test process's modules, as the bridge's are
    later = [[] for _ in range(100)]
    assert len(gc.get_objects()) < frozen  # what a full collection walks now
    assert any(obj is later for obj in gc.get_objects())


def test_freezing_again_collects_what_was_frozen_and_is_now_garbage(thawed: None) -> None:
    """A config reload freezes again: an old roster's cycles must not stay for good."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    old = weakref.ref(a)
    freeze_long_lived_objects()
    del a, b
    assert old() is not None  # frozen: no collection reaches it
    gc.collect()
    assert old() is not None
    freeze_long_lived_objects()
    assert old() is None
