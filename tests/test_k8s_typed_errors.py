"""Every API failure becomes a typed KubeError in one place (Kube.calling): `.status` is the HTTP status (None
when nothing answered), `.reason` the Kubernetes Status reason; the one-line messages stay as they were.
Failures are injected with reactors on the fake API server (as in test_k8s_errors.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.ports import allocate_port, release_ports
from k8s_fake import FakeKubeServer, write_kubeconfig

from kubectl_etcdbackup.k8s.api import (
    AlreadyExists,
    ClusterUnreachable,
    Forbidden,
    Kube,
    KubeError,
    NotFound,
    Unauthorized,
    connect,
)

pytestmark = pytest.mark.timeout(60)


def answer(method: str, path_part: str, code: int, reason: str | None, message: str) -> Callable[..., Any]:
    """A reactor answering `method` on paths containing `path_part` with a Status (no reason field if None)."""
    def reactor(m: str, path: str, query: Any, body: bytes) -> tuple[int, dict[str, Any]] | None:
        if m == method and path_part in path:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
                      "message": message}
            return code, status | ({"reason": reason} if reason else {})
        return None
    return reactor


@pytest.fixture
def k(kube: FakeKubeServer, kubeconfig: Path) -> Iterator[Kube]:
    client = connect(str(kubeconfig))
    yield client
    client.close()
    kube.reactors.clear()


def test_401_is_unauthorized(k: Kube, kube: FakeKubeServer) -> None:
    kube.add_reactor(answer("GET", "/cronjobs", 401, "Unauthorized", "Unauthorized"))
    with pytest.raises(Unauthorized) as e:
        k.list_cronjobs("default", "a=b")
    assert (e.value.status, e.value.reason) == (401, "Unauthorized")
    assert str(e.value) == (f"the Kubernetes API at {kube.url} rejected the credentials (401 Unauthorized); "
                            "check your kubeconfig")


def test_403_is_forbidden(k: Kube, kube: FakeKubeServer) -> None:
    kube.add_reactor(answer("POST", "/jobs", 403, "Forbidden", 'jobs.batch is forbidden: User "dev" cannot'))
    with pytest.raises(Forbidden) as e:
        k.create_job("default", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}})
    assert (e.value.status, e.value.reason) == (403, "Forbidden")
    assert str(e.value) == "no RBAC permission to create jobs in namespace default"


def test_403_on_the_exec_websocket_is_forbidden(k: Kube, kube: FakeKubeServer) -> None:
    """Exec failures arrive as websocket handshake errors; they are typed the same way."""
    kube.add_reactor(answer("GET", "/pods/p0/exec", 403, "Forbidden", "pods/exec is forbidden"))
    with pytest.raises(Forbidden) as e:
        k.exec("default", "p0", None, ["true"], timeout=10)
    assert (e.value.status, e.value.reason) == (403, "Forbidden")


def test_404_is_not_found(k: Kube) -> None:
    with pytest.raises(NotFound) as e:
        k.get_cronjob("default", "nope")
    assert (e.value.status, e.value.reason) == (404, "NotFound")
    assert str(e.value) == "cronjobs/nope not found in namespace default"


def test_409_already_exists_by_reason_not_by_message(k: Kube, kube: FakeKubeServer) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "typed-dup"}, "stringData": {"a": "b"}}
    k.create_secret("default", secret)
    with pytest.raises(AlreadyExists) as e:
        k.create_secret("default", secret)
    assert (e.value.status, e.value.reason) == (409, "AlreadyExists")
    # a 409 Conflict whose text happens to say "already exists" is not AlreadyExists
    kube.add_reactor(answer("POST", "/secrets", 409, "Conflict", "the object already exists in a newer version"))
    with pytest.raises(KubeError) as c:
        k.create_secret("default", secret | {"metadata": {"name": "typed-other"}})
    assert type(c.value) is KubeError and (c.value.status, c.value.reason) == (409, "Conflict")
    assert str(c.value) == "cannot create secrets in namespace default: the object already exists in a newer version"


@pytest.mark.parametrize("code,reason,expected", [(422, "Invalid", "Invalid"), (500, None, "InternalError"),
                                                  (429, None, "TooManyRequests"), (418, None, "Unknown")])
def test_other_statuses_keep_code_and_reason(k: Kube, kube: FakeKubeServer, code: int, reason: str | None,
                                             expected: str) -> None:
    kube.add_reactor(answer("GET", "/configmaps/cm", code, reason, "went wrong"))
    with pytest.raises(KubeError) as e:
        k.get_configmap("default", "cm")
    assert (e.value.status, e.value.reason) == (code, expected)
    assert str(e.value) == "cannot get configmaps/cm in namespace default: went wrong"


def test_unreachable_has_no_status(tmp_path: Path) -> None:
    port = allocate_port()  # reserved, nothing listens on it
    try:
        client = connect(str(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")))
        try:
            with pytest.raises(ClusterUnreachable) as e:
                client.list_pods("default", "a=b")
        finally:
            client.close()
    finally:
        release_ports([port])
    assert (e.value.status, e.value.reason) == (None, "Unreachable")
    assert str(e.value) == f"cannot reach the Kubernetes API at http://127.0.0.1:{port}: connection refused"
