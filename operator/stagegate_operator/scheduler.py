"""When each TrainingJob gets its next reconcile pass.

Passes of one TrainingJob never overlap; what happens during a pass earns one more pass after
it, and bursts of Job events coalesce into that one. A periodic resync gives every TrainingJob that
had no pass lately a pass as well, so nothing depends on seeing one particular event (approvals
are read, timeouts noticed, a restarted operator catches up), while one that reconciles anyway
(its folds finish every few seconds) is not reconciled once more for nothing. While another
replica leads, nothing is scheduled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from math import inf

from stagegate_core.spec import PLURAL

from . import children
from .cache import Key
from .kubeapi import METADATA_LIST, KubeApi

log = logging.getLogger("stagegate.operator")


class Scheduler:
    def __init__(
        self,
        run_pass: Callable[[str, str], Awaitable[None]],
        keys: Callable[[], Iterable[Key]],
        *,
        settle_seconds: float = 1.0,
    ) -> None:
        """`run_pass(namespace, name)` reconciles one TrainingJob and raises nothing;
        `keys()` names every known TrainingJob (those the watches cached). Passes of one
        TrainingJob start at least `settle_seconds` apart unless a trigger is urgent: the
        folds that end meanwhile are written in one status patch, not one each."""
        self.run_pass = run_pass
        self.keys = keys
        self.settle_seconds = settle_seconds
        # False while another replica holds the leader Lease: the cache stays warm, nothing acts.
        self.active = True
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._urgent: set[Key] = set()
        self._ended: dict[Key, float] = {}  # when the last pass of a TrainingJob ended
        self._started: dict[Key, float] = {}  # when the last pass of a TrainingJob started
        self._wake: dict[Key, asyncio.Event] = {}  # an urgent trigger ends the spacing

    def activate(self, active: bool) -> None:
        """Start or stop acting; on start, every known TrainingJob gets a pass."""
        self.active = active
        if active:
            for namespace, name in self.keys():
                self.trigger(namespace, name)

    def trigger(self, namespace: str, name: str, *, urgent: bool = False) -> None:
        """Reconcile soon. `urgent` (a change to the TrainingJob itself, such as an approval: a
        person waits) skips the pause that lets a burst of Job events finish."""
        if not self.active:
            return
        key = (namespace, name)
        if key in self._running:
            self._dirty.add(key)
            if urgent:
                self._urgent.add(key)
                if key in self._wake:
                    self._wake[key].set()
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._loop(key, urgent))

    async def _loop(self, key: Key, urgent: bool) -> None:
        try:
            if not urgent:
                await self._spaced(key)
            while self.active:
                self._dirty.discard(key)
                self._started[key] = asyncio.get_running_loop().time()
                await self.run_pass(*key)
                if key not in self._dirty:
                    break
                if key in self._urgent:
                    self._urgent.discard(key)
                    continue
                # More happened meanwhile (a Job's events come in bursts): let the burst
                # finish, so one pass sees it all instead of one pass per event.
                await asyncio.sleep(self.settle_seconds)
        finally:
            self._running.pop(key, None)
            self._urgent.discard(key)
            self._ended[key] = asyncio.get_running_loop().time()

    def resync(self, keys: Iterable[Key], fresh_seconds: float) -> None:
        """A pass for each of `keys` (every TrainingJob there is) whose last pass started over
        `fresh_seconds` ago; what is not among them any more (deleted) is forgotten."""
        now = asyncio.get_running_loop().time()
        present = set(keys)
        for key in (set(self._started) | set(self._ended)) - present - set(self._running):
            self._started.pop(key, None)
            self._ended.pop(key, None)
        for key in present:
            if key not in self._running and now - self._started.get(key, -inf) >= fresh_seconds:
                self.trigger(*key)

    async def _spaced(self, key: Key) -> None:
        """Wait until `settle_seconds` after the TrainingJob's last pass (or an urgent trigger)."""
        ended = self._ended.pop(key, None)
        if ended is None:
            return
        wait = self.settle_seconds - (asyncio.get_running_loop().time() - ended)
        if wait <= 0:
            return
        self._wake[key] = wake = asyncio.Event()
        try:
            await asyncio.wait_for(wake.wait(), timeout=wait)
        except TimeoutError:
            pass
        finally:
            del self._wake[key]
            self._urgent.discard(key)

    async def idle(self) -> None:
        """Until no pass runs or waits to run."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)


async def resync(
    scheduler: Scheduler, api: KubeApi, namespaces: Sequence[str], every: float
) -> None:
    """Every `every` seconds, a pass of each TrainingJob that had none in the last half of
    that (so none goes more than 1.5 x `every` without one); `namespaces` empty: all."""
    while True:
        await asyncio.sleep(every)
        if not scheduler.active:
            continue
        try:
            scopes: list[str | None] = list(namespaces) or [None]
            keys: list[Key] = []
            for namespace in scopes:
                path = (
                    f"/apis/{children.GROUP_VERSION}/{PLURAL}"
                    if namespace is None
                    else KubeApi.path(children.GROUP_VERSION, namespace, PLURAL)
                )
                # Names are all a resync needs: the bodies (tens of KB each, with every fold's
                # metrics) are in the cache, and decoding them all was a burst every round.
                listing = await api.request("GET", path, accept=METADATA_LIST)
                for item in listing.get("items", []):
                    keys.append((item["metadata"]["namespace"], item["metadata"]["name"]))
            scheduler.resync(keys, every / 2)
        except Exception as exc:  # the next round tries again
            log.warning("resync failed: %s", exc)
