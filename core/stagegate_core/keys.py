"""The labels and annotations every part reads or writes, defined once.

The operator labels the Jobs and pods it creates with the first four; people (through
`kubectl annotate` or `stagegate approve/reject/cancel`) and the operator exchange the rest.
"""

from __future__ import annotations

from .spec import API_GROUP

LABEL_TJ = f"{API_GROUP}/trainingjob"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_STEP = f"{API_GROUP}/step"
LABEL_FOLD = f"{API_GROUP}/fold"

APPROVAL_ANNOTATION = f"{API_GROUP}/approval"
APPROVED_BY_ANNOTATION = f"{API_GROUP}/approved-by"
REJECTION_REASON_ANNOTATION = f"{API_GROUP}/rejection-reason"
CREATED_BY_ANNOTATION = f"{API_GROUP}/created-by"
CANCEL_ANNOTATION = f"{API_GROUP}/cancel"
