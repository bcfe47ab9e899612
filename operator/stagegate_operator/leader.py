"""Leader election on a coordination.k8s.io Lease, so that two operator replicas never both act.

Every replica watches and caches (the watches only read), but only the holder of the Lease
reconciles. The rules are client-go's: a Lease is expired when its record has not changed for
`leaseDurationSeconds` *as seen by this replica's own clock* (so clock skew between nodes does
not matter); the holder renews every `retry` seconds and steps down when it has not renewed for
`renew_deadline` seconds, which is shorter than the lease, so it stops acting before anyone
else may start; a replica that shuts down cleanly hands the Lease back at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .kubeapi import ApiError, KubeApi

log = logging.getLogger("stagegate.operator")
GROUP_VERSION = "coordination.k8s.io/v1"
Step = Literal["create", "renew", "take", "wait"]


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.lease_seconds:
            raise ValueError("leader election needs 0 < retry < renew deadline < lease duration")


@dataclass(frozen=True)
class Seen:
    """The last Lease record this replica saw, and when (its own monotonic clock)."""

    record: tuple[Any, ...]
    at: float


def record_of(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    spec = lease.get("spec") or {}
    return (spec.get("holderIdentity") or "", spec.get("renewTime"), spec.get("leaseTransitions"))


def next_step(
    lease: Mapping[str, Any] | None, me: str, seen: Seen | None, now: float
) -> tuple[Step, Seen | None]:
    """What to do with the Lease as read now, and what to remember of it."""
    if lease is None:
        return "create", None
    record = record_of(lease)
    holder = record[0]
    if holder == me:
        return "renew", Seen(record, now)
    if not holder:  # handed back
        return "take", Seen(record, now)
    if seen is None or seen.record != record:  # it moved: its holder is alive, time from now
        return "wait", Seen(record, now)
    duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or 0)
    return ("take" if now - seen.at >= duration else "wait"), seen


def micro_time(epoch: float) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(
    me: str, timing: Timing, now: float, *, acquired: str | None, transitions: int
) -> dict[str, Any]:
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": round(timing.lease_seconds),
        "acquireTime": acquired or micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": transitions,
    }


class LeaderElector:
    """Holds (or waits for) one Lease; calls `on_start` when it leads and `on_stop` when not."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_start: Callable[[], None],
        on_stop: Callable[[], None],
        timing: Timing | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.path = KubeApi.path(GROUP_VERSION, namespace, "leases", name)
        self.collection = KubeApi.path(GROUP_VERSION, namespace, "leases")
        self.name = name
        self.identity = identity
        self.timing = timing or Timing()
        self.on_start = on_start
        self.on_stop = on_stop
        self.monotonic = monotonic
        self.wall = wall
        self.leading = False
        self._seen: Seen | None = None
        self._renewed = 0.0

    async def run(self) -> None:
        """Until cancelled: try to lead, and keep leading."""
        while True:
            try:
                await self.attempt()
            except (ApiError, OSError, TimeoutError) as exc:  # aiohttp errors are OSErrors
                log.warning("leader election: %s", exc)
            if self.leading and self.monotonic() - self._renewed > self.timing.renew_deadline:
                self._step_down("could not renew the Lease in time")
            await asyncio.sleep(self.timing.retry)

    async def attempt(self) -> None:
        """One look at the Lease, and the write it calls for."""
        try:
            lease: dict[str, Any] | None = await self.api.request("GET", self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            lease = None
        step, self._seen = next_step(lease, self.identity, self._seen, self.monotonic())
        if step == "wait":
            if self.leading:  # someone took it: they judged ours expired
                self._step_down("the Lease is held by another replica")
            return
        now = self.wall()
        if step == "create":
            body = {
                "apiVersion": GROUP_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": lease_spec(self.identity, self.timing, now, acquired=None, transitions=0),
            }
            written = await self._write("POST", self.collection, body)
        else:
            assert lease is not None
            spec = lease.get("spec") or {}
            transitions = int(spec.get("leaseTransitions") or 0)
            acquired = spec.get("acquireTime") if step == "renew" else None
            lease["spec"] = lease_spec(
                self.identity, self.timing, now, acquired=acquired,
                transitions=transitions if step == "renew" else transitions + 1,
            )  # fmt: skip
            # A PUT carries the resourceVersion read above: two replicas taking an expired
            # Lease at once cannot both succeed.
            written = await self._write("PUT", self.path, lease)
        if written:
            self._renewed = self.monotonic()
            if not self.leading:
                self.leading = True
                log.info("leader election: %s now leads (Lease %s)", self.identity, self.name)
                self.on_start()

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> bool:
        try:
            await self.api.request(method, path, body=body)
        except ApiError as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise
        return True

    def _step_down(self, why: str) -> None:
        self.leading = False
        log.warning("leader election: %s stops leading: %s", self.identity, why)
        self.on_stop()

    async def release(self) -> None:
        """Hand the Lease back (clean shutdown), so a standby takes over without waiting."""
        if not self.leading:
            return
        self.leading = False
        self.on_stop()
        try:
            lease = await self.api.request("GET", self.path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.api.request("PUT", self.path, body=lease)
        except (ApiError, OSError, TimeoutError) as exc:  # it expires on its own
            log.warning("leader election: could not hand the Lease back: %s", exc)
