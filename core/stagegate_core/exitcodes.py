"""Exit codes of every `stagegate` command, local and cluster alike (the README lists them)."""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2  # bad input, or a cluster that cannot be reached or refuses: the message says which
AWAITING_APPROVAL = 3  # `stagegate run --approve no` stopped at the gate
REJECTED = 4
GATES_FAILED = 5  # Succeeded, but the last stage that ran failed its gates
TIMEOUT = 124  # `watch --timeout` ran out, as timeout(1) reports it
CANCELLED = 130
TERMINATED = 143  # SIGTERM, as a shell reports it

# `stagegate run` ends with the run; a stop at the gate is an outcome of its own.
RUN = {
    "Succeeded": OK,
    "Failed": FAILED,
    "AwaitingApproval": AWAITING_APPROVAL,
    "Rejected": REJECTED,
    "Cancelled": CANCELLED,
}
# `stagegate watch` follows a run someone else steers: reaching the gate is success.
WATCH = {**RUN, "AwaitingApproval": OK}
