"""How long a TrainingJob's name may be, so that every child Job's name fits Kubernetes' limit.

The operator names its Jobs `<tj>-prepare`, `<tj>-<stage>-fold-<NN>`, `<tj>-<stage>-summary`
and `<tj>-final` (readable, and deterministic so a restarted operator finds them). A Job name
is a DNS label: at most 63 characters (its pods carry it in the `job-name` label). Rather than
shorten long names with a hash, which would make `kubectl get jobs` unreadable, a TrainingJob
whose longest child name could pass 63 is refused at apply: the CRD carries a CEL rule with
this limit (see crd.py), and the operator checks it again on its first pass.
"""

from __future__ import annotations

DNS_LABEL_MAX = 63
# Fold numbers are zero-padded to two digits and grow as needed; four digits are reserved
# (10,000 folds would need 27 years of one-day test periods). A plan with more folds fails
# its first fold Job with a clear API error instead of hanging.
FOLD_DIGITS = 4
LONGEST_SUFFIX = "-quick-fold-" + "9" * FOLD_DIGITS
MAX_NAME_LENGTH = DNS_LABEL_MAX - len(LONGEST_SUFFIX)  # 47


# The CRD's CEL rule and the operator give this same message.
LIMIT_MESSAGE = (
    f"metadata.name: at most {MAX_NAME_LENGTH} characters, because the operator names its Jobs "
    f"<name>{LONGEST_SUFFIX[:-FOLD_DIGITS]}NNNN and Kubernetes allows at most {DNS_LABEL_MAX} "
    "characters in a Job name; choose a shorter name"
)


def name_too_long(name: str) -> str | None:
    """Why `name` cannot be a TrainingJob's name, or None when its children's names fit."""
    if len(name) <= MAX_NAME_LENGTH:
        return None
    return f"{LIMIT_MESSAGE} (got {len(name)})"
