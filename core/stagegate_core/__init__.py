"""Stagegate's light core: the spec and its CRD, the planner, the stage machine, the status, and
the names every part agrees on. No numeric stack and no Kubernetes client: the operator, the
trainer and the CLI all import it.
"""

__version__ = "0.1.0"
