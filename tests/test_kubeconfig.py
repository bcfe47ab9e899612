"""The operator's own kubeconfig reader: the common forms without the Kubernetes client, a
clear error naming the file for a broken one, the client only for credential plugins."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from stagegate_operator.kubeapi import NoCredentials, load_connection
from stagegate_operator.kubeconfig import KubeconfigError, NeedsClient, read_kubeconfig


def write(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
    }))  # fmt: skip
    return path


def test_a_token_and_a_ca_file_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    path = write(tmp_path, {"server": "https://k:6443", "certificate-authority": "ca.crt"},
                 {"token": "abc"})  # fmt: skip
    assert read_kubeconfig(path) == {
        "server": "https://k:6443", "token": "abc", "ca_file": str(tmp_path / "ca.crt"),
        "cert_file": None, "key_file": None, "insecure": False,
    }  # fmt: skip


def test_embedded_certificates_are_written_to_private_files(tmp_path: Path) -> None:
    def data(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path = write(
        tmp_path,
        {"server": "https://k", "certificate-authority-data": data("CA"),
         "insecure-skip-tls-verify": True},
        {"client-certificate-data": data("CERT"), "client-key-data": data("KEY")},
    )  # fmt: skip
    found = read_kubeconfig(path)
    files = [Path(found[k]) for k in ("ca_file", "cert_file", "key_file")]
    assert [f.read_text() for f in files] == ["CA", "CERT", "KEY"]
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)
    assert found["token"] is None and found["insecure"] is True
    assert read_kubeconfig(path) == found  # read again: the same files, none written twice


def test_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    path = write(tmp_path, {"server": "https://k"}, {"tokenFile": str(tmp_path / "token")})
    assert read_kubeconfig(path)["token"] == "from-file"


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({}, {"token": "t"}, "cluster 'c' has no server"),
        ({"server": "https://k"}, None, "no user named 'u' in users"),
    ],
)
def test_a_broken_kubeconfig_names_the_file_and_the_fault(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any] | None, message: str
) -> None:
    path = write(tmp_path, cluster, user or {})
    if user is None:
        config = yaml.safe_load(path.read_text())
        config["users"] = []
        path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeconfigError, match=message) as raised:
        read_kubeconfig(path)
    assert str(path) in str(raised.value)
    with pytest.raises(NoCredentials, match=message):
        load_connection(str(path))


def test_a_credential_plugin_is_left_to_the_kubernetes_client(tmp_path: Path) -> None:
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": "from-plugin"}}  # fmt: skip
    plugin = {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
              "args": ["-c", f"print({json.dumps(json.dumps(credential))})"]}  # fmt: skip
    path = write(tmp_path, {"server": "https://k"}, {"exec": plugin})
    with pytest.raises(NeedsClient):
        read_kubeconfig(path)
    assert load_connection(str(path)).token == "from-plugin"


def test_a_missing_kubeconfig_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoCredentials, match=f"cannot read kubeconfig {tmp_path / 'none'}"):
        load_connection(str(tmp_path / "none"))
