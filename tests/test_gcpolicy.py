"""The operator's garbage collection policy (operator/stagegate_operator/gcpolicy.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from stagegate_operator import gcpolicy


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_what_lives_at_start_is_frozen_and_full_collections_are_spaced(restored: None) -> None:
    before = gc.get_threshold()
    gcpolicy.settle()
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions loaded by now
    assert gc.get_threshold() == (before[0], before[1], gcpolicy.FULL_EVERY)
    assert gc.isenabled()


def test_cyclic_garbage_made_later_is_still_collected(restored: None) -> None:
    gcpolicy.settle()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle: reference counting alone never frees it
    gc.collect()
    assert gone() is None


def test_a_frozen_object_is_still_freed_when_nothing_refers_to_it(restored: None) -> None:
    kept = Node()
    gcpolicy.settle()
    gone = weakref.ref(kept)
    del kept
    assert gone() is None
