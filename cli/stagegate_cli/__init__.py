"""The `stagegate` command line: the root group, the cluster commands and the rendering both the
cluster commands and the local runner print with. Light on purpose: with only `stagegate[cli]`
installed (the Kubernetes client and rich, no numeric stack) every cluster command works, and
the trainer image, which has no Kubernetes client, runs its steps through the same entry point.
"""
