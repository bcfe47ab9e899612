"""Runs one container process and records how it ended (what conmon does for a real runtime).

    python -S shim.py STATE_DIR MOUNTS_JSON -- ARGV...

Started by the node agent in a new session. It starts ARGV in that session (so the agent's
SIGTERM/SIGKILL to the group reaches it), with stdout and stderr into STATE_DIR/log, then writes
STATE_DIR/exit when it ends. Because the outcome is on disk, a restarted node agent adopts
running containers instead of losing them. MOUNTS_JSON lists [source, target, read_only]
bind mounts made in a private mount namespace for the container alone (as root); when that is
not possible the list must be empty. Standard library only (`-S`), so it starts in ~20 ms.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _mounter(mounts: list[list[object]]):  # type: ignore[no-untyped-def]
    libc = ctypes.CDLL(None, use_errno=True)

    def call(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def setup() -> None:
        call(libc.unshare(CLONE_NEWNS), "unshare")
        call(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for source, target, read_only in mounts:
            src, dst = str(source).encode(), str(target).encode()
            call(libc.mount(src, dst, None, MS_BIND | MS_REC, None), f"bind {target}")
            if read_only:
                flags = MS_BIND | MS_REMOUNT | MS_RDONLY
                call(libc.mount(b"none", dst, None, flags, None), f"read-only {target}")

    return setup


def main() -> int:
    state, mounts_json, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv
    mounts = json.loads(mounts_json)
    # Survive the signals aimed at the container's group long enough to record its end; a
    # handler (unlike SIG_IGN) is not inherited by the container.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    with open(os.path.join(state, "log"), "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_mounter(mounts) if mounts else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.write(f"cannot start {argv[0]}: {exc}\n".encode())
            code, reason = 128, "StartError"
        else:
            with open(os.path.join(state, "pid"), "w") as f:
                f.write(str(proc.pid))
            while True:
                try:
                    raw = proc.wait()
                    break
                except InterruptedError:
                    continue
            code = raw if raw >= 0 else 128 - raw
            reason = "Completed" if code == 0 else "Error"
    tmp = os.path.join(state, "exit.tmp")
    with open(tmp, "w") as f:
        json.dump({"exitCode": code, "reason": reason}, f)
    os.replace(tmp, os.path.join(state, "exit"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
