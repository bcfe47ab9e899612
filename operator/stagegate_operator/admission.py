"""Specs that cannot work in a cluster, refused on the operator's first pass. Pure.

The CRD's schema and CEL rules refuse what they can at apply; what depends on the operator's
cluster-wide defaults (Helm values) can only be judged here, before any pod starts. Each
refusal says what to do instead: a run that cannot share its artifacts would otherwise fail
late, or loop, with an error that does not name the cause.
"""

from __future__ import annotations

from stagegate_core.naming import name_too_long
from stagegate_core.spec import TrainingJobSpec

_STORE_CHOICES = (
    "set spec.artifacts.uri to s3://bucket/prefix with spec.artifacts.secretRef, or to "
    "file:///path with spec.artifacts.volumeClaim (a ReadWriteMany PersistentVolumeClaim), or "
    "install the operator with a default store (Helm chart value artifacts.uri, with "
    "artifacts.secretName for S3)"
)


def refusal(name: str, spec: TrainingJobSpec) -> str | None:
    """Why this TrainingJob cannot run in the cluster, or None.

    `spec` is the effective spec: the TrainingJob's own, with the operator's defaults applied
    (a scheme-less artifacts folder is replaced by the chart's `artifacts.uri` when it has one).
    """
    too_long = name_too_long(name)
    if too_long:
        return too_long
    artifacts = spec.artifacts
    uri = artifacts.uri
    if "://" not in uri:
        return (
            f"spec.artifacts.uri {uri!r} is a relative folder and the operator has no default "
            "store: every step pod would write its own copy and no pod would see another's "
            f"results; {_STORE_CHOICES}"
        )
    if uri.startswith("s3://") and artifacts.secret_ref is None:
        # The chart's artifacts.secretName is given only with its own artifacts.uri, never to
        # a bucket the TrainingJob names itself.
        return (
            f"spec.artifacts.uri {uri!r} has no credentials: set spec.artifacts.secretRef to a "
            "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL), or "
            "leave spec.artifacts.uri unset to use the operator's default store (Helm chart "
            "values artifacts.uri and artifacts.secretName)"
        )
    # An absolute file:// URI stays allowed: the operator cannot tell whether the path is a
    # shared mount on every node (the README says it must be); volumeClaim makes it one.
    return None
