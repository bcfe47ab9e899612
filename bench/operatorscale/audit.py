"""Reading the API server's audit log: requests by client, and the approval spans."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path


class AuditCounter:
    """Reads the audit log incrementally; counts each auditID once, by client/verb/resource."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.seen: set[str] = set()
        self.counts: Counter[tuple[str, str, str]] = Counter()

    @staticmethod
    def client_of(agent: str, user: str) -> str:
        if user != "admin":
            return user
        if agent.startswith("kopf/"):
            return "kopf"
        if "aiohttp" in agent:
            return "operator"
        if "urllib" in agent:
            return "bench"
        return agent.split("/")[0] or "unknown"

    def read(self) -> Counter[tuple[str, str, str]]:
        if not self.path.exists():
            return Counter(self.counts)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # a partly written last line waits for the next read
        self.offset += cut
        for line in data[:cut].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            audit_id = event.get("auditID", "")
            if audit_id in self.seen:
                continue
            self.seen.add(audit_id)
            ref = event.get("objectRef") or {}
            resource = ref.get("resource") or "nonresource"
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            verb = event.get("verb", "?").upper()
            client = self.client_of(event.get("userAgent", ""), event["user"]["username"])
            self.counts[(client, verb, resource)] += 1
        return Counter(self.counts)


def _server_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def approval_spans(audit_log: Path) -> dict[str, tuple[float, float, float, float]]:
    """Per TrainingJob, in the API server's clock: its approval PATCH received and answered,
    then its first full-stage fold Job's CREATE received and answered (the Job exists)."""
    approvals: dict[str, tuple[float, float]] = {}
    creates: dict[str, tuple[float, float]] = {}
    with open(audit_log, "rb") as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if event.get("stage") != "ResponseComplete" or ref.get("subresource"):
                continue
            span = (_server_time(event["requestReceivedTimestamp"]),
                    _server_time(event["stageTimestamp"]))  # fmt: skip
            name = ref.get("name") or ""
            client = AuditCounter.client_of(event.get("userAgent", ""), event["user"]["username"])
            if (event["verb"], ref.get("resource"), client) == ("patch", "trainingjobs", "bench"):
                approvals.setdefault(name, span)
            elif (event["verb"], ref.get("resource")) == ("create", "jobs") and (
                "-full-fold-" in name
            ):
                owner = name.split("-full-fold-")[0]
                creates[owner] = min(creates.get(owner, span), span)
    return {tj: (*approval, *creates[tj]) for tj, approval in approvals.items() if tj in creates}


def by_client(counts: Counter[tuple[str, str, str]], client: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (c, verb, res), n in counts.items():
        if c == client:
            out[f"{verb} {res}"] += n
    return out
