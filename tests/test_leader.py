"""Leader election: the pure rules, and two electors contending for a Lease on the real API
server. (The chart's two operator replicas, with the leader SIGKILLed mid-run, are in
tests/test_helm.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stagegate_operator.kubeapi import KubeApi as OperatorApi
from stagegate_operator.kubeapi import load_connection
from stagegate_operator.leader import LeaderElector, Seen, Timing, micro_time, next_step

from tests.support.kube import KubeApi
from tests.support.operator import until


def lease(holder: str, renewed: str = "t1", transitions: int = 0, duration: int = 10) -> dict:
    return {
        "spec": {
            "holderIdentity": holder,
            "renewTime": renewed,
            "leaseTransitions": transitions,
            "leaseDurationSeconds": duration,
        }
    }


def test_no_lease_is_created() -> None:
    assert next_step(None, "a", None, 0.0) == ("create", None)


def test_our_own_lease_is_renewed_and_a_handed_back_one_taken() -> None:
    assert next_step(lease("a"), "a", None, 5.0)[0] == "renew"
    assert next_step(lease(""), "a", None, 5.0)[0] == "take"


def test_another_holder_is_waited_for_until_its_record_stands_still_a_whole_lease() -> None:
    held = lease("b", duration=10)
    step, seen = next_step(held, "a", None, 100.0)
    assert step == "wait" and seen == Seen(("b", "t1", 0), 100.0)
    # Standing still for less than the lease: still alive as far as we can tell.
    assert next_step(held, "a", seen, 109.9) == ("wait", seen)
    assert next_step(held, "a", seen, 110.0)[0] == "take"
    # A renewal restarts the clock from when *we* saw it (no trust in the holder's clock).
    step, moved = next_step(lease("b", renewed="t2"), "a", seen, 109.0)
    assert step == "wait" and moved == Seen(("b", "t2", 0), 109.0)
    assert next_step(lease("b", renewed="t2"), "a", moved, 118.9)[0] == "wait"


@given(
    holder=st.sampled_from(["", "a", "b"]),
    renewed=st.sampled_from(["t1", "t2"]),
    seen_record=st.one_of(st.none(), st.sampled_from([("b", "t1", 0), ("b", "t2", 0)])),
    seen_at=st.floats(0, 100),
    elapsed=st.floats(0, 30),
)
def test_a_live_holder_is_never_taken_over(
    holder: str, renewed: str, seen_record: tuple | None, seen_at: float, elapsed: float
) -> None:
    seen = None if seen_record is None else Seen(seen_record, seen_at)
    step, after = next_step(lease(holder, renewed), "a", seen, seen_at + elapsed)
    if holder == "b":
        unchanged_long_enough = seen is not None and seen.record == after.record  # type: ignore[union-attr]
        assert step == ("take" if unchanged_long_enough and elapsed >= 10 else "wait")
    else:
        assert step == {"": "take", "a": "renew"}[holder]


def test_timing_must_leave_the_holder_time_to_step_down() -> None:
    with pytest.raises(ValueError):
        Timing(lease_seconds=5, renew_deadline=6, retry=1)
    assert micro_time(0.5) == "1970-01-01T00:00:00.500000Z"


def test_two_electors_on_the_real_api_server(kube_api: KubeApi) -> None:
    """One leads; when it dies without a word the other takes over after the lease, and when
    the new leader shuts down cleanly the Lease is free at once."""
    asyncio.run(_contend(kube_api))


async def _contend(kube: KubeApi) -> None:
    timing = Timing(lease_seconds=3, renew_deadline=2, retry=0.25)
    api = OperatorApi(load_connection(str(kube.kubeconfig)))
    log: list[tuple[str, str]] = []

    def elector(name: str) -> LeaderElector:
        return LeaderElector(
            api, kube.namespace, "op", name, timing=timing,
            on_start=lambda: log.append((name, "start")),
            on_stop=lambda: log.append((name, "stop")),
        )  # fmt: skip

    electors = {name: elector(name) for name in ("a", "b")}
    tasks = {name: asyncio.create_task(e.run()) for name, e in electors.items()}
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases/op"
    try:
        await until(lambda: any(e.leading for e in electors.values()), 10)
        await asyncio.sleep(1.0)  # several rounds: still exactly one
        leaders = [n for n, e in electors.items() if e.leading]
        assert len(leaders) == 1, leaders
        first = leaders[0]
        other = "b" if first == "a" else "a"
        stored: dict[str, Any] = kube.get(path)
        assert stored["spec"]["holderIdentity"] == first
        assert stored["spec"]["leaseDurationSeconds"] == 3

        # The leader dies without handing the Lease back: the other waits out the lease.
        tasks[first].cancel()
        died = time.monotonic()
        await until(lambda: electors[other].leading, 10)
        waited = time.monotonic() - died
        assert timing.lease_seconds - timing.retry <= waited, waited
        stored = kube.get(path)
        assert stored["spec"]["holderIdentity"] == other
        assert stored["spec"]["leaseTransitions"] == 1

        # A clean shutdown hands it back: free at once, taken by a newcomer within a retry.
        await electors[other].release()
        assert kube.get(path)["spec"]["holderIdentity"] == ""
        tasks[other].cancel()
        newcomer = elector("c")
        tasks["c"] = asyncio.create_task(newcomer.run())
        await until(lambda: newcomer.leading, 2)
        assert log == [(first, "start"), (other, "start"), (other, "stop"), ("c", "start")]
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await api.close()
