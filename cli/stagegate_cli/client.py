"""A thin synchronous Kubernetes client for the `stagegate` cluster commands.

It reads the kubeconfig as kubectl does (`--kubeconfig`, else $KUBECONFIG, else ~/.kube/config;
`--context`; the context's namespace unless `-n` is given) and turns every expected failure
(no kubeconfig, an unreachable API server, a missing TrainingJob or CRD) into a `ClusterError`
whose message is one line, so the CLI can print it without a traceback.

`kubernetes` is imported lazily: the trainer image runs its steps through the same `stagegate`
entry point without the client, and the local commands must not pay for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stagegate_core.spec import API_GROUP, API_VERSION, KIND, PLURAL

# One slow API call must not hang a command forever; watch/logs loop over short calls instead.
REQUEST_TIMEOUT = 30.0


class ClusterError(Exception):
    """An expected failure talking to the cluster; str() is the one line to show."""


@dataclass
class Cluster:
    """Typed entry points over CustomObjectsApi (TrainingJobs) and CoreV1Api (pods, logs)."""

    namespace: str
    host: str
    custom: Any  # kubernetes.client.CustomObjectsApi
    core: Any  # kubernetes.client.CoreV1Api

    # ---------------------------------------------------------------- TrainingJobs
    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        namespace = manifest.get("metadata", {}).get("namespace") or self.namespace
        name = manifest.get("metadata", {}).get("name", "")
        with self._errors(name, creating=True):
            return dict(
                self.custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, dict(manifest),
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )  # fmt: skip

    def get(self, name: str) -> dict[str, Any]:
        with self._errors(name):
            return dict(
                self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, PLURAL, name,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )  # fmt: skip

    def list_all(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        with self._errors(""):
            if all_namespaces:
                found = self.custom.list_cluster_custom_object(
                    API_GROUP, API_VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
            else:
                found = self.custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, PLURAL,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        return list(found.get("items", []))

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """Merge-patch annotations (None removes one), as `kubectl annotate --overwrite`."""
        body = {"metadata": {"annotations": dict(annotations)}}
        with self._errors(name):
            return dict(
                self.custom.patch_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, PLURAL, name, body,
                    # The client would pick JSON Patch for this dict body; we mean a merge.
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )  # fmt: skip

    # ---------------------------------------------------------------- who am I
    def whoami(self) -> str:
        """The requesting user's name as the API server sees it (SelfSubjectReview, what
        `kubectl auth whoami` asks): the name the approval policy compares with."""
        from kubernetes import client

        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        with self._errors("", kind="selfsubjectreview"):
            answer = client.AuthenticationV1Api(self.core.api_client).create_self_subject_review(
                review, _request_timeout=REQUEST_TIMEOUT
            )
        name = answer.status.user_info.username if answer.status else None
        if not name:
            raise ClusterError(f"the API server at {self.host} did not say who this user is")
        return str(name)

    # ---------------------------------------------------------------- pods and logs
    def pods(self, selector: str) -> list[dict[str, Any]]:
        with self._errors(""):
            found = self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            )
        pods = [self.core.api_client.sanitize_for_serialization(p) for p in found.items]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def log(self, pod: str, tail: int | None = None) -> str:
        with self._errors(pod, kind="pod"):
            # Raw bytes: the client's own decoding of a log can yield the repr of bytes.
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, tail_lines=tail, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        return bytes(response.data or b"").decode(errors="replace")

    def follow_log(self, pod: str, tail: int | None = None) -> Iterator[str]:
        """Yield a running pod's log lines as they come; ends when the container ends."""
        with self._errors(pod, kind="pod"):
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, follow=True, tail_lines=tail, _preload_content=False
            )
        try:
            pending = b""
            for chunk in response.stream(1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        except Exception as exc:  # the stream broke mid-way: report it, not a traceback
            raise ClusterError(f"log stream of pod {pod} broke: {_reason_of(exc)}") from None
        finally:
            response.release_conn()

    # ---------------------------------------------------------------- errors
    def _errors(self, name: str, *, kind: str = "trainingjob", creating: bool = False) -> Any:
        return _translate(self, name, kind, creating)

    def crd_installed(self) -> bool:
        try:
            self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, limit=1,
                _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except Exception:
            return False
        return True


class _translate:
    """Context manager mapping client exceptions to one-line ClusterErrors."""

    def __init__(self, cluster: Cluster, name: str, kind: str, creating: bool) -> None:
        self.cluster, self.name, self.kind, self.creating = cluster, name, kind, creating

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, ClusterError):
            return
        from kubernetes.client.exceptions import ApiException

        where = f"namespace {self.cluster.namespace}"
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            if status == 404 and self.kind == "trainingjob" and not self.cluster.crd_installed():
                raise ClusterError(
                    f"the {KIND} CRD ({PLURAL}.{API_GROUP}/{API_VERSION}) is not installed on "
                    f"{self.cluster.host}; apply crds/trainingjob.yaml or the Helm chart"
                ) from None
            if status == 404 and self.name:
                raise ClusterError(f"{self.kind} {self.name} not found in {where}") from None
            if status == 409 and self.creating:
                raise ClusterError(
                    f"trainingjob {self.name} already exists in {where} "
                    "(choose another --name, or delete it first)"
                ) from None
            if status in (401, 403):
                raise ClusterError(f"not allowed: {_api_message(exc)}") from None
            raise ClusterError(f"the API server answered {status}: {_api_message(exc)}") from None
        if _is_connection_error(exc):
            raise ClusterError(
                f"cannot reach the Kubernetes API at {self.cluster.host}: {_reason_of(exc)}"
            ) from None


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc)


def _is_connection_error(exc: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _reason_of(exc: BaseException) -> str:
    # urllib3 nests the root cause (e.g. "Connection refused") inside MaxRetryError.
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    if ">: " in text:  # "<urllib3.connection.HTTPConnection object at 0x..>: Failed to ..."
        text = text.split(">: ", 1)[1]
    return text


def _default_namespace(config_file: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=config_file)
    except Exception:
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def connect(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Cluster:
    """Load the kubeconfig into a private Configuration (no global client state)."""
    try:
        from kubernetes import client, config
    except ImportError:  # the trainer image: step commands only
        raise ClusterError(
            "the cluster commands need the Kubernetes client: pip install 'stagegate[cli]'"
        ) from None
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    config_file = kubeconfig or None
    if config_file and not os.path.exists(config_file):
        raise ClusterError(f"kubeconfig {config_file} does not exist")
    try:
        config.load_kube_config(
            config_file=config_file,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            # Inside a pod with no kubeconfig: use the service account, as kubectl does.
            config.load_incluster_config(client_configuration=configuration)
            return _cluster(configuration, namespace or _incluster_namespace())
        where = config_file or os.environ.get("KUBECONFIG") or "~/.kube/config"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = " (set --kubeconfig or KUBECONFIG)" if "No configuration" in reason else ""
        raise ClusterError(f"cannot load kubeconfig {where}: {reason}{hint}") from None
    # A CLI should fail fast on an unreachable server instead of retrying for minutes.
    configuration.retries = 1
    return _cluster(configuration, namespace or _default_namespace(config_file, context))


def _incluster_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _cluster(configuration: Any, namespace: str) -> Cluster:
    from kubernetes import client

    api = client.ApiClient(configuration)
    return Cluster(
        namespace=namespace,
        host=str(configuration.host),
        custom=client.CustomObjectsApi(api),
        core=client.CoreV1Api(api),
    )
