"""Kubernetes API access for the plugin: one client from --kubeconfig/--context, small focused calls that take
and return plain dicts, and every API failure mapped to a one-line error (unreachable, 401, 403, 404...)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ..errors import EtcdBackupError

FIELD_MANAGER = "kubectl-etcdbackup"
TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for every ordinary request


class KubeError(EtcdBackupError):
    """The Kubernetes API failed or refused a request."""


class KubeConfigError(KubeError):
    """No usable kubeconfig / context."""


class ClusterUnreachable(KubeError):
    """No API server answered."""


class Forbidden(KubeError):
    """RBAC said no."""


class NotFound(KubeError):
    """The object does not exist."""


class AlreadyExists(KubeError):
    """An object with that name exists already (HTTP 409)."""


class NotInstalled(KubeError):
    """The backup CronJob is not in the namespace."""


class NoEtcdPods(KubeError):
    """No etcd pods match the selector."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def _status_message(e: ApiException) -> str:
    body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else (e.body or "")
    reason = str(e.reason or "")
    if not body and "-+-+-" in reason:  # a websocket handshake error: "status -+-+- headers -+-+- body"
        body = reason.rsplit("-+-+-", 1)[1].strip()
        body = body[2:-1] if body.startswith(("b'", 'b"')) else body
    try:
        return str(json.loads(body).get("message") or e.reason or "")
    except (ValueError, AttributeError):
        return (body.strip().splitlines() or [str(e.reason or "")])[0][:300]


def _unreachable_reason(e: BaseException) -> str:
    text = str(getattr(e, "reason", None) or e)
    for pattern, short in ((r"Connection refused", "connection refused"), (r"timed out", "timed out"),
                           (r"Name or service not known|nodename nor servname|getaddrinfo", "unknown host"),
                           (r"CERTIFICATE_VERIFY_FAILED|SSLError|certificate", "TLS error: " + text[-120:])):
        if re.search(pattern, text, re.I):
            return short
    return text.splitlines()[0][:200] if text else type(e).__name__


class Kube:
    """A connected client. Each method does one API call (or one watch/exec) and returns plain data.

    Requests go through the client's ApiClient (auth, TLS, REST) with plain paths; the typed API classes are
    not used because building them costs over a second of CPU on every command (kubernetes 37's models)."""

    def __init__(self, api: client.ApiClient, context_namespace: str | None = None) -> None:
        self.api = api
        self.context_namespace = context_namespace
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def close(self) -> None:
        self.api.close()

    # ------------------------------------------------------------------------------------ error mapping
    @contextmanager
    def calling(self, verb: str, resource: str, namespace: str | None = None,
                name: str | None = None) -> Iterator[None]:
        """Turn client failures of one call into one-line KubeErrors that say what was attempted."""
        where = f" in namespace {namespace}" if namespace else ""
        what = f"{resource}/{name}" if name else resource
        try:
            yield
        except ApiException as e:
            status = e.status or 0
            if not status and (m := re.search(r"Handshake status (\d+)", str(e.reason))):
                status = int(m.group(1))  # websocket (exec) failures carry the HTTP status in the text
            elif not status:
                raise ClusterUnreachable(f"cannot reach the Kubernetes API at {self.host}: "
                                         f"{_unreachable_reason(e)}") from None
            msg = _status_message(e)
            if status == 401:
                raise KubeError(f"the Kubernetes API at {self.host} rejected the credentials (401 Unauthorized); "
                                "check your kubeconfig") from None
            if status == 403:
                raise Forbidden(f"no RBAC permission to {verb} {resource}{where}") from None
            if status == 404:
                raise NotFound(f"{what} not found{where}") from None
            if status == 409 and "already exists" in msg:
                raise AlreadyExists(f"{what}: {msg}") from None
            raise KubeError(f"cannot {verb} {what}{where}: {msg or status}".splitlines()[0]) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ClusterUnreachable(f"cannot reach the Kubernetes API at {self.host}: "
                                     f"{_unreachable_reason(e)}") from None

    # ------------------------------------------------------------------------------------ transport
    def _send(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None,
              content_type: str | None = None, timeout: tuple[float, float] = TIMEOUT) -> Any:
        """One request; returns the client's RESTResponse, body not read yet; non-2xx raises ApiException."""
        headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
        req = self.api.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                       auth_settings=["BearerToken"])
        resp = self.api.call_api(*req, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=resp.data.decode(errors="replace"), data=None)
        return resp

    def _request(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Any = None,
                 content_type: str | None = None) -> Any:
        """One request; the JSON body of the answer."""
        resp = self._send(method, path, query, body, content_type)
        data = resp.read()
        return json.loads(data) if data else {}

    @staticmethod
    def _ns_path(namespace: str, resource: str, name: str | None = None, group: str = "") -> str:
        base = f"/apis/{group}" if group else "/api/v1"
        return f"{base}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")

    # ------------------------------------------------------------------------------------ reads and writes
    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "cronjobs", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "cronjobs", name, "batch/v1")))

    def list_cronjobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self.calling("list", "cronjobs", namespace):
            return list(self._request("GET", self._ns_path(namespace, "cronjobs", group="batch/v1"),
                                      [("labelSelector", selector)])["items"])

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "jobs", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "jobs", name, "batch/v1")))

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.calling("create", "jobs", namespace):
            return dict(self._request("POST", self._ns_path(namespace, "jobs", group="batch/v1"), body=body,
                                      content_type="application/json"))

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods."""
        with self.calling("delete", "jobs", namespace, name):
            self._request("DELETE", self._ns_path(namespace, "jobs", name, "batch/v1"),
                          [("propagationPolicy", "Background")])

    def wait_job_change(self, namespace: str, name: str, resource_version: str, timeout: int) -> None:
        """Watch Job `name` from `resource_version` until its first change or `timeout` seconds."""
        query = [("watch", "true"), ("fieldSelector", f"metadata.name={name}"),
                 ("resourceVersion", resource_version), ("timeoutSeconds", str(max(1, timeout))),
                 ("allowWatchBookmarks", "false")]
        with self.calling("watch", "jobs", namespace, name):
            resp = self._send("GET", self._ns_path(namespace, "jobs", group="batch/v1"), query,
                              timeout=(TIMEOUT[0], timeout + 10.0))
            try:
                for chunk in resp.response.stream(None):  # chunked: yields as events arrive
                    if b"\n" in chunk:  # one whole event line: something changed
                        return
            finally:
                resp.response.release_conn()

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        with self.calling("list", "pods", namespace):
            return list(self._request("GET", self._ns_path(namespace, "pods"), [("labelSelector", selector)])["items"])

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail_lines: int | None = None) -> str:
        query = ([("container", container)] if container else []) + (
            [("tailLines", str(tail_lines))] if tail_lines is not None else [])
        with self.calling("get", "pods/log", namespace, pod):
            return str(self._send("GET", self._ns_path(namespace, "pods", f"{pod}/log"), query).read()
                       .decode(errors="replace"))

    def follow_log(self, namespace: str, pod: str, container: str | None, read_timeout: float) -> Any:
        """The open, streaming log of a pod (a urllib3 response: `.stream()`, `.shutdown()`, `.release_conn()`)."""
        query = [("follow", "true")] + ([("container", container)] if container else [])
        with self.calling("get", "pods/log", namespace, pod):
            return self._send("GET", self._ns_path(namespace, "pods", f"{pod}/log"), query,
                              timeout=(TIMEOUT[0], read_timeout)).response

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        with self.calling("get", "configmaps", namespace, name):
            return dict(self._request("GET", self._ns_path(namespace, "configmaps", name)))

    def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            with self.calling("get", "secrets", namespace, name):
                self._request("GET", self._ns_path(namespace, "secrets", name))
        except NotFound:
            return False
        return True

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        with self.calling("get", "secrets", namespace, name):
            obj = self._request("GET", self._ns_path(namespace, "secrets", name))
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        with self.calling("create", "secrets", namespace):
            self._request("POST", self._ns_path(namespace, "secrets"), body=body, content_type="application/json")

    # ------------------------------------------------------------------------------------ exec
    def exec(self, namespace: str, pod: str, container: str | None, argv: list[str], timeout: float) -> ExecResult:
        """Run argv (no shell) in a container over the exec websocket; bounded by `timeout` seconds."""
        from kubernetes.stream.ws_client import WSClient, get_websocket_url

        query = [("command", a) for a in argv] + [("stdout", "true"), ("stderr", "true"), ("stdin", "false"),
                                                   ("tty", "false")] + ([("container", container)] if container else [])
        _, url, headers, _, _ = self.api.param_serialize("GET", self._ns_path(namespace, "pods", f"{pod}/exec"),
                                                         query_params=query, header_params={},
                                                         auth_settings=["BearerToken"])
        with self.calling("create", "pods/exec", namespace, pod):
            try:
                ws = WSClient(self.api.configuration, get_websocket_url(url), headers, capture_all=True)
            except ApiException:
                raise
            except Exception as e:  # websocket-client's errors: the handshake status is in the text
                raise ApiException(status=0, reason=str(e)) from None
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                raise KubeError(f"{argv[0]} in pod {namespace}/{pod} did not finish within {timeout:.0f}s")
            out, err = ws.read_stdout(), ws.read_stderr()
            code = ws.returncode
        except KubeError:
            raise
        except Exception as e:  # the stream broke, or ended without an exit status
            raise KubeError(f"exec in pod {namespace}/{pod} failed: {type(e).__name__}: {e}".splitlines()[0]) \
                from None
        finally:
            ws.close()
        return ExecResult(int(code), out or "", err or "")

    # ------------------------------------------------------------------------------------ apply
    def _resource_for(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from the API's discovery document (cached per group/version)."""
        if api_version not in self._resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            with self.calling("discover", api_version):
                doc = self._request("GET", path)
            self._resources[api_version] = {r["kind"]: (r["name"], bool(r.get("namespaced")))
                                            for r in doc.get("resources", []) if "/" not in r["name"]}
        try:
            return self._resources[api_version][kind]
        except KeyError:
            raise KubeError(f"the cluster does not serve {kind} ({api_version})") from None

    def _path(self, obj: dict[str, Any]) -> tuple[str, str, str | None]:
        """(REST path of the object, plural, namespace)."""
        api_version, kind, md = obj["apiVersion"], obj["kind"], obj["metadata"]
        plural, namespaced = self._resource_for(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = md.get("namespace") if namespaced else None
        return (f"{base}/namespaces/{ns}/{plural}/{md['name']}" if ns else f"{base}/{plural}/{md['name']}",
                plural, ns)

    def get_object(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live version of `obj` (same apiVersion/kind/name/namespace), or None."""
        path, plural, ns = self._path(obj)
        try:
            with self.calling("get", plural, ns, obj["metadata"]["name"]):
                return dict(self._request("GET", path))
        except NotFound:
            return None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (fieldManager kubectl-etcdbackup, force): create or update; returns the live object."""
        path, plural, ns = self._path(obj)
        with self.calling("apply", plural, ns, obj["metadata"]["name"]):
            return dict(self._request("PATCH", path, [("fieldManager", FIELD_MANAGER), ("force", "true")], obj,
                                      "application/apply-patch+yaml"))


def connect(kubeconfig: str | None = None, context: str | None = None) -> Kube:
    """A client for the kubeconfig (default: $KUBECONFIG or ~/.kube/config; in a pod: the service account)."""
    cfg = type.__call__(client.Configuration)  # a fresh one, not a copy of the process-wide default
    cfg.retries = 1  # fail fast when nothing listens
    if kubeconfig is None and context is None and _in_cluster_only():
        config.load_incluster_config(client_configuration=cfg)
        return Kube(client.ApiClient(cfg))
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if kubeconfig and not os.path.exists(kubeconfig):
        raise KubeConfigError(f"kubeconfig {kubeconfig} does not exist")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            active = next((c for c in contexts if c["name"] == context), None)
            if active is None:
                names = ", ".join(sorted(c["name"] for c in contexts)) or "none"
                raise KubeConfigError(f"no context {context} in kubeconfig {where} (contexts: {names})")
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                persist_config=False)
    except ConfigException as e:
        text = str(e).strip().strip("'\"").splitlines()[0] if str(e).strip() else repr(e)
        raise KubeConfigError(f"cannot use kubeconfig {where}: {text}") from None
    except OSError as e:
        raise KubeConfigError(f"cannot read kubeconfig {where}: {e.strerror or e}") from None
    return Kube(client.ApiClient(cfg), (active or {}).get("context", {}).get("namespace"))


def _in_cluster_only() -> bool:
    default = os.path.expanduser(config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG") \
        and not os.path.exists(default)
