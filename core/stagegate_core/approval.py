"""Who decided a gate, how and when: one record for the operator, the local runner, the status
and the model card.

`by` is a person (the Kubernetes user named in `stagegate.io/approved-by`, whom the chart's
admission policy checks against the requesting user; locally the OS user) or `gates` when the
gates decided (`approval.policy: auto`). `via` says how the decision came: `annotation`,
`prompt`, `flag` (`--approve yes`), `policy-auto` or `gates`.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

Via = Literal["annotation", "prompt", "flag", "policy-auto", "gates"]
UNKNOWN = "unknown"  # an annotation without stagegate.io/approved-by (no policy enforced)
# The record, as JSON, in the environment of the operator's final-model pod.
APPROVAL_ENV = "STAGEGATE_APPROVAL"


def record(
    decision: str, by: str, via: Via, at: str, gate: str, reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"decision": decision, "by": by, "via": via, "at": at, "gate": gate}
    if reason:
        out["reason"] = reason
    return out


def from_env() -> dict[str, Any] | None:
    text = os.environ.get(APPROVAL_ENV)
    return dict(json.loads(text)) if text else None


def os_user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def condition_reason(approval: Mapping[str, Any]) -> str:
    """`Annotation`, `PolicyAuto` …: a Kubernetes condition reason (CamelCase, no spaces)."""
    via = str(approval.get("via") or "annotation")
    return "".join(part.title() for part in via.split("-"))


def status_fields(approval: Mapping[str, Any] | None) -> dict[str, str]:
    """`approvedBy`/`approvedAt` (or `rejectedBy`/`rejectedAt`/`rejectionReason`) for the
    status top level, where `kubectl get -o wide` and scripts find them."""
    if not approval or approval.get("decision") not in ("approved", "rejected"):
        return {}
    verb = str(approval["decision"])
    fields = {f"{verb}By": str(approval["by"]), f"{verb}At": str(approval["at"])}
    if verb == "rejected" and approval.get("reason"):
        fields["rejectionReason"] = str(approval["reason"])
    return fields


def describe(approval: Mapping[str, Any]) -> str:
    """`full gate approved by alice (annotation) at 2026-…Z: reason`, for Events and the CLI."""
    text = (
        f"{approval.get('gate', '?')} gate {approval['decision']} by {approval.get('by', '?')} "
        f"({approval.get('via', '?')}) at {approval.get('at', '?')}"
    )
    return text + (f": {approval['reason']}" if approval.get("reason") else "")
