"""The root `stagegate` group (also `kubectl stagegate`): the cluster commands from this
package, the local commands (run, plan and the steps a Job runs) from the trainer's.

Exit codes (stagegate_core.exitcodes): 0 success; 2 an expected error, as one line on stderr
(bad options or manifest, no kubeconfig, an unreachable API server, no such TrainingJob, a
refused decision, a local command without `stagegate[trainer]`). `run` ends with the run's
outcome; `watch` with 0 at AwaitingApproval or Succeeded, 1 Failed, 4 Rejected, 5 gates
failed, 130 Cancelled, 124 on --timeout.
"""

from __future__ import annotations

import faulthandler
import signal
import sys

import click
from stagegate_core import exitcodes
from stagegate_trainer.commands import COMMANDS as LOCAL_COMMANDS

from .decide import approve, cancel, reject
from .logs import logs
from .status import status
from .submit import submit
from .watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stagegate")
def main() -> None:
    """Stagegate: two-stage walk-forward training of LightGBM trading models."""
    # In a pod this process is PID 1, which ignores SIGTERM unless it handles it: without this
    # a deleted Job's pod would wait out its whole grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(exitcodes.TERMINATED))
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a run that seems stuck
    # is diagnosed without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


@click.command()
def crd() -> None:
    """Print the TrainingJob CRD generated from the spec model."""
    from stagegate_core.crd import render_crd

    click.echo(render_crd(), nl=False)


CLUSTER_COMMANDS = (submit, approve, reject, status, watch, logs, cancel)

for command in (*CLUSTER_COMMANDS, crd, *LOCAL_COMMANDS):
    main.add_command(command)

if __name__ == "__main__":
    main()
