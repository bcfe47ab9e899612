"""The podman runtime's pure parts (tests/cluster/podman.py): quantities, the effective user
under runAsNonRoot, and the `podman run` command line a pod spec becomes. The runtime itself
runs in tests/test_podman_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.cluster import podman


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("64Mi", 64 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1500k", 1_500_000),
     ("1000", 1000), ("1e9", 10**9), ("0.5Gi", 2**29)],
)  # fmt: skip
def test_memory_quantities(quantity: str, expected: int) -> None:
    assert podman.memory_bytes(quantity) == expected


@pytest.mark.parametrize("bad", ["", "Gi", "12 Mi", "1.2.3Gi", "5Xi", "-1Gi"])
def test_memory_quantity_errors_name_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        podman.memory_bytes(bad)


@given(st.integers(min_value=1, max_value=64_000))
def test_millicpus_are_cpus_over_a_thousand(milli: int) -> None:
    assert podman.cpus(f"{milli}m") == pytest.approx(milli / 1000)


def _pod(pod_sc: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "0123456789abcdef"},
        "spec": {"securityContext": pod_sc or {}, "containers": [{"name": "c", **container}]},
    }


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "image_user", "user", "refused"),
    [
        ({}, {}, "", None, None),  # nothing asked: the image's own user, even root
        ({"runAsNonRoot": True}, {}, "10001:10001", None, None),
        ({"runAsNonRoot": True}, {}, "", None, "image will run as root"),
        ({"runAsNonRoot": True}, {}, "root", None, "image will run as root"),
        ({"runAsNonRoot": True}, {}, "app", None, "non-numeric user (app)"),
        ({"runAsUser": 5}, {"runAsNonRoot": True}, "", "5", None),  # pod's user, container's rule
        ({"runAsUser": 5, "runAsGroup": 6}, {"runAsUser": 7}, "", "7:6", None),
        ({"runAsNonRoot": True}, {"runAsUser": 0}, "10001", None, "image will run as root"),
    ],
)
def test_effective_user_follows_the_kubelet(
    pod_sc: dict[str, Any], container_sc: dict[str, Any], image_user: str,
    user: str | None, refused: str | None,
) -> None:  # fmt: skip
    pod = _pod(pod_sc, securityContext=container_sc)
    got_user, got_refused = podman.effective_user(pod, pod["spec"]["containers"][0], image_user)
    assert got_user == user
    assert (got_refused is None) == (refused is None)
    if refused:
        assert refused in str(got_refused)


def test_a_step_pod_becomes_a_locked_down_podman_run() -> None:
    container = {
        "name": "trainer",
        "image": "localhost/stagegate-trainer:dev",
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "resources": {"limits": {"memory": "1Gi", "cpu": "1500m"}},
    }  # fmt: skip
    pod = _pod({"runAsNonRoot": True, "fsGroup": 10001}, **container)
    argv = podman.run_argv(
        pod, container, name="n", node="node", user=None, env_names=["A", "B"],
        mounts=[("/host/tmp", "/tmp", False), ("/host/tok", "/var/run/sa", True)],
        command=["stagegate", "fold"], args=["--fold", "1"],
    )  # fmt: skip
    joined = " ".join(argv)
    for flag in ("--read-only --read-only-tmpfs=false", "--cap-drop=all",
                 "--security-opt no-new-privileges", f"--memory {2**30}", "--cpus 1.5",
                 "--volume /host/tmp:/tmp:rw", "--volume /host/tok:/var/run/sa:ro",
                 "--env A --env B", "--group-add 10001", "--pull=never", "--network=host",
                 '--entrypoint ["stagegate", "fold"]'):  # fmt: skip
        assert flag in joined, flag
    # Environment values never reach the command line; the image and its args come last.
    assert "=" not in " ".join(a for a in argv if a.startswith(("A", "B")))
    assert argv[-3:] == ["localhost/stagegate-trainer:dev", "--fold", "1"]
    assert "--user" not in argv  # runAsNonRoot alone: the image's USER, checked elsewhere
