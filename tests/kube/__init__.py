"""An in-process Kubernetes API emulator for Stagegate's tests (test infrastructure only).

See `tests/support/kube.py` for the pytest fixtures and `python -m tests.kube serve --help` for
standalone use.
"""

from .emulator import Emulator, EmulatorSettings, EmulatorThread, kubeconfig_dict, write_kubeconfig

__all__ = ["Emulator", "EmulatorSettings", "EmulatorThread", "kubeconfig_dict",
           "write_kubeconfig"]
