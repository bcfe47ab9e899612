"""The fault campaign, small (issue 11; the full one is bench/bench_faults.py): on the real
control plane, with the chart's operator and SeaweedFS as S3, a fault-free run and then runs
with a real fault each, at a random moment of a fixed seed. Every run must end Succeeded with
fold metrics byte-identical to the fault-free run's and no fold trained twice, or Failed
naming the cause."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support import faults
from tests.support.kube import KubeBinaries
from tests.support.seaweed import weed_binary

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def test_faults_lose_nothing_and_train_no_fold_twice(
    kube_binaries: KubeBinaries, tmp_path: Path
) -> None:
    rng = random.Random(11)
    with faults.campaign(tmp_path, kube_binaries, weed_binary()) as campaign:
        campaign.s3_down_seconds = (5.0, 20.0)  # the bench takes up to a minute
        reference = campaign.run_reference()
        assert len(campaign.reference) == 6, campaign.reference.keys()  # 2 quick + 4 full folds
        outcomes = [reference]
        for number, fault in enumerate(("operator-pod-killed", "s3-stopped", "fold-pod-killed")):
            at = faults.moment(fault, rng, campaign.reference_seconds)
            outcomes.append(campaign.run(f"run-{number}", fault, at, rng))
        shown = faults.table(outcomes, campaign.reference_seconds)
        print(shown)
        for outcome in outcomes:
            assert outcome.passed, shown
            assert "injection failed" not in outcome.detail, shown
        # The fault really happened mid-run: each injected run says what was done.
        assert all(o.detail for o in outcomes[1:]), shown
