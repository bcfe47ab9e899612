"""When reconcile passes run (operator/scheduler.py): never two at once for one TrainingJob,
events during a pass coalesced into one more, nothing while another replica leads."""

from __future__ import annotations

import asyncio

from stagegate_operator.scheduler import Scheduler


class Passes:
    """A pass that records itself; the first one waits until `release` is set."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def __call__(self, namespace: str, name: str) -> None:
        self.names.append(name)
        self.running += 1
        self.most = max(self.most, self.running)
        if len(self.names) == 1:
            await self.release.wait()
        self.running -= 1


def test_events_during_a_pass_earn_one_more_pass_never_an_overlapping_one() -> None:
    async def scenario() -> Passes:
        passes = Passes()
        scheduler = Scheduler(passes, lambda: [], settle_seconds=0)
        scheduler.trigger("ns", "a")
        await asyncio.sleep(0)  # the first pass runs and waits
        for _ in range(5):
            scheduler.trigger("ns", "a")
        passes.release.set()
        await scheduler.idle()
        return passes

    passes = asyncio.run(scenario())
    assert passes.names == ["a", "a"] and passes.most == 1


def test_an_urgent_trigger_skips_the_pause_for_a_burst() -> None:
    async def scenario() -> Passes:
        passes = Passes()
        scheduler = Scheduler(passes, lambda: [], settle_seconds=600)
        scheduler.trigger("ns", "a")
        await asyncio.sleep(0)
        scheduler.trigger("ns", "a", urgent=True)  # an approval: a person waits
        passes.release.set()
        await asyncio.wait_for(scheduler.idle(), timeout=5)
        return passes

    assert asyncio.run(scenario()).names == ["a", "a"]


def test_a_standby_replica_runs_no_pass_and_on_leading_passes_every_known_trainingjob() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        passes = Passes()
        passes.release.set()
        scheduler = Scheduler(passes, lambda: [("ns", "a"), ("ns", "b")], settle_seconds=0)
        scheduler.activate(False)
        scheduler.trigger("ns", "a")
        await scheduler.idle()
        standby = list(passes.names)
        scheduler.activate(True)
        await scheduler.idle()
        return standby, passes.names

    standby, leading = asyncio.run(scenario())
    assert standby == [] and sorted(leading) == ["a", "b"]


def test_passes_of_one_trainingjob_are_spaced_and_an_urgent_trigger_ends_the_wait() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        passes = Passes()
        passes.release.set()
        scheduler = Scheduler(passes, lambda: [], settle_seconds=600)
        scheduler.trigger("ns", "a")
        await scheduler.idle()
        scheduler.trigger("ns", "a")  # a Job ended just after the pass: wait for more
        scheduler.trigger("ns", "b")  # another TrainingJob is not held up
        await asyncio.sleep(0.2)
        spaced = list(passes.names)
        scheduler.trigger("ns", "a")
        await asyncio.sleep(0.2)
        still = list(passes.names)
        scheduler.trigger("ns", "a", urgent=True)  # an approval
        await asyncio.wait_for(scheduler.idle(), timeout=5)
        return spaced, still, passes.names

    spaced, still, done = asyncio.run(scenario())
    assert spaced == ["a", "b"] and still == ["a", "b"]
    assert done == ["a", "b", "a"]


def test_a_resync_passes_only_what_had_no_pass_lately_and_forgets_the_deleted() -> None:
    async def scenario() -> tuple[list[str], list[str], set[tuple[str, str]]]:
        passes = Passes()
        passes.release.set()
        scheduler = Scheduler(passes, lambda: [], settle_seconds=0)
        scheduler.trigger("ns", "busy")  # reconciled just now (a fold finished)
        await scheduler.idle()
        passes.names.clear()
        scheduler.resync([("ns", "busy"), ("ns", "quiet")], fresh_seconds=60)
        await scheduler.idle()
        first = list(passes.names)
        passes.names.clear()
        scheduler.resync([("ns", "busy"), ("ns", "quiet")], fresh_seconds=0)
        await scheduler.idle()
        every = sorted(passes.names)
        scheduler.resync([("ns", "quiet")], fresh_seconds=60)  # busy was deleted
        await scheduler.idle()
        return first, every, set(scheduler._started) | set(scheduler._ended)

    first, every, remembered = asyncio.run(scenario())
    assert first == ["quiet"]
    assert every == ["busy", "quiet"]
    assert remembered == {("ns", "quiet")}
